"""The whole per-frame swap on the device: upload once, crop, run the generator, mask, paste
back, download once.

On CUDA the frame's upload (pinned host memory, non-blocking) runs on a copy stream and the
rest on a compute stream that waits for it with an event, so the next frame's upload overlaps
this frame's generator; each phase is timed with CUDA events read only when the frame is
collected (no synchronize per stage). :meth:`DeviceFramePath.submit` returns at once on CUDA;
:meth:`PendingFrame.result` waits. Two host buffers alternate, so a caller can keep one frame in
flight while submitting the next. On the CPU the same code runs synchronously.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from livswap.cuda.warp import crop_face, paste_face
from livswap.frame import Frame

__all__ = ["DeviceCompositor", "DeviceFramePath", "FaceJob", "PendingFrame"]

Generator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class FaceJob:
    """One face to swap: where its crop is, the paste-back alpha in crop space, the identity."""

    to_crop: npt.NDArray[np.float64]  # (2, 3) frame pixel -> crop pixel
    alpha: npt.NDArray[np.float32]  # (S, S) in 0..1
    latent: torch.Tensor  # (1, L) on the path's device
    strength: float = 1.0


@dataclass
class _Slot:
    """Pinned host buffers for one frame in flight, and the event that frees them."""

    host_in: torch.Tensor
    host_out: torch.Tensor
    done: torch.cuda.Event | None = None


@dataclass
class PendingFrame:
    """A submitted frame; :meth:`result` returns the pasted image and per-phase milliseconds."""

    _slot: _Slot
    _events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)
    _cpu_ms: dict[str, float] = field(default_factory=dict)

    def result(self) -> tuple[npt.NDArray[np.uint8], dict[str, float]]:
        if self._slot.done is not None:
            self._slot.done.synchronize()
        timings = dict(self._cpu_ms)
        for name, start, end in self._events:
            timings[name] = timings.get(name, 0.0) + start.elapsed_time(end)
        image: npt.NDArray[np.uint8] = self._slot.host_out.numpy().copy()
        return image, timings


class DeviceFramePath:
    """Swaps every face of a frame on ``device`` with ``generator`` (a GeneratorRunner or any
    ``(crop in [0,1], latent) -> crop in [0,1]`` callable) at crop size ``crop``."""

    def __init__(self, generator: Generator, crop: int, device: torch.device) -> None:
        self.generator = generator
        self.crop = crop
        self.device = device
        self.cuda = device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(device) if self.cuda else None  # type: ignore[no-untyped-call]
        self._compute_stream = torch.cuda.Stream(device) if self.cuda else None  # type: ignore[no-untyped-call]
        self._slots: list[_Slot] = []
        self._next = 0

    def _slot(self, shape: tuple[int, ...]) -> _Slot:
        if not self._slots or tuple(self._slots[0].host_in.shape) != shape:
            pin = self.cuda
            self._slots = [
                _Slot(
                    torch.empty(shape, dtype=torch.uint8, pin_memory=pin),
                    torch.empty(shape, dtype=torch.uint8, pin_memory=pin),
                )
                for _ in range(2)
            ]
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.done is not None:
            slot.done.synchronize()  # its previous frame must be collected before reuse
        return slot

    def submit(self, image: npt.NDArray[np.uint8], faces: Sequence[FaceJob]) -> PendingFrame:
        slot = self._slot(image.shape)
        slot.host_in.numpy()[...] = image
        if not self.cuda:
            return self._run_cpu(slot, faces)
        assert self._copy_stream is not None and self._compute_stream is not None
        pending = PendingFrame(slot)

        def event() -> torch.cuda.Event:
            return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

        up_start, up_end = event(), event()
        with torch.cuda.stream(self._copy_stream):
            up_start.record()
            frame_u8 = slot.host_in.to(self.device, non_blocking=True)
            alphas = [
                torch.from_numpy(job.alpha).pin_memory().to(self.device, non_blocking=True)
                for job in faces
            ]
            up_end.record()
        pending._events.append(("upload", up_start, up_end))
        self._compute_stream.wait_event(up_end)
        with torch.cuda.stream(self._compute_stream):
            # Allocated on the copy stream, used here: tell the caching allocator.
            frame_u8.record_stream(self._compute_stream)
            for alpha in alphas:
                alpha.record_stream(self._compute_stream)
            start, swapped = event(), event()
            start.record()
            out = self._swap(frame_u8, faces, alphas)
            swapped.record()
            slot.host_out.copy_(out, non_blocking=True)
            done = event()
            done.record()
        pending._events += [("swap", start, swapped), ("download", swapped, done)]
        slot.done = done
        return pending

    def _run_cpu(self, slot: _Slot, faces: Sequence[FaceJob]) -> PendingFrame:
        started = time.perf_counter()
        out = self._swap(slot.host_in, faces, [torch.from_numpy(job.alpha) for job in faces])
        slot.host_out.copy_(out)
        return PendingFrame(slot, _cpu_ms={"swap": (time.perf_counter() - started) * 1e3})

    def _swap(
        self, frame_u8: torch.Tensor, faces: Sequence[FaceJob], alphas: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """(H, W, 3) uint8 on the device -> the same with every face swapped and pasted."""
        with torch.inference_mode():
            # Planar and contiguous: grid_sample on the HWC view's strides is ~8x slower.
            planes = frame_u8.permute(2, 0, 1).contiguous().float()
            out = planes.clone()
            for job, alpha in zip(faces, alphas, strict=True):
                crop = crop_face(planes, job.to_crop, self.crop) / 255.0
                swapped = self.generator(crop, job.latent).clamp(0, 1) * 255.0
                paste_face(out, swapped, alpha, job.to_crop, job.strength)
            return out.round_().to(torch.uint8).permute(1, 2, 0).contiguous()


class DeviceCompositor:
    """A neural engine's GPU paste-back: runs :class:`DeviceFramePath` for a pipeline frame and
    stores the result in ``frame.composited`` (compose then only labels it). Faces fade in over
    ``fade_frames`` like the CPU compositor's; a face that disappears is dropped at once, since
    its last swapped crop is not kept on the device."""

    def __init__(self, path: DeviceFramePath, fade_frames: int) -> None:
        self.path = path
        self.step = 1.0 / fade_frames if fade_frames > 0 else 1.0
        self._levels: dict[int, float] = {}

    def swap(
        self,
        frame: Frame,
        placements: Sequence[tuple[int, npt.NDArray[np.float64], npt.NDArray[np.float32]]],
        latent: torch.Tensor,
    ) -> None:
        """``placements``: (track id, frame->crop transform, crop-space alpha) per face."""
        levels = {tid: min(1.0, self._levels.get(tid, 0.0) + self.step) for tid, _, _ in placements}
        self._levels = levels
        jobs = [
            FaceJob(m, alpha, latent, 0.5 - 0.5 * float(np.cos(np.pi * levels[tid])))
            for tid, m, alpha in placements
        ]
        image, timings = self.path.submit(frame.image, jobs).result()
        frame.composited = image
        for name, ms in timings.items():
            frame.timings_ms[f"device_{name}"] = ms
