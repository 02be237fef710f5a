"""The swap worker: one process that owns the engines and runs every stream's pipeline, fed
through shared-memory frame rings (:mod:`livswap.worker.ring`). :mod:`livswap.worker.child` is
the process, :mod:`livswap.worker.client` the handle the server (or a benchmark) holds, and
:mod:`livswap.worker.messages` what they say to each other."""

from livswap.worker.client import RemoteStream, SwapWorker, WorkerUnavailable

__all__ = ["RemoteStream", "SwapWorker", "WorkerUnavailable"]
