"""A stream's per-frame work on the device: upload once, crop the faces, paste the swapped crops
back, download once. Plain PyTorch, so the same code runs on CUDA and, in the tests, on the CPU.

One :class:`DeviceFramePath` belongs to one stream (a camera, a browser peer). On CUDA it has a
CUDA stream of its own: while the batched generator runs one batch, other streams' uploads,
crops and paste-backs proceed on theirs. Frames of one stream are processed one at a time (the
pipeline hands a stream's frames over one by one), so one pinned buffer each way is enough.
Phases are timed with CUDA events, read once the frame is downloaded (no sync per phase).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from livswap.cuda.warp import crop_face, paste_face
from livswap.frame import SwappedFace

__all__ = ["DeviceFramePath", "DeviceImage"]


@dataclass
class DeviceImage:
    """A frame on the device: (3, H, W) float planes in 0..255, and what its upload cost."""

    planes: torch.Tensor
    timings_ms: dict[str, float] = field(default_factory=dict)
    _events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)


class DeviceFramePath:
    """Upload, crop and paste-back for one stream on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None  # type: ignore[no-untyped-call]
        self._host_in: torch.Tensor | None = None
        self._host_out: torch.Tensor | None = None

    def _buffers(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._host_in is None or self._host_out is None or self._host_in.shape != shape:
            self._host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
            self._host_out = torch.empty(shape, dtype=torch.uint8, pin_memory=self.cuda)
        return self._host_in, self._host_out

    def _event(self) -> torch.cuda.Event:
        return torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def upload(self, image: npt.NDArray[np.uint8]) -> DeviceImage:
        """The frame's pixels on the device, planar (grid_sample on an HWC view is ~8x slower)."""
        started = time.perf_counter()
        host_in, _ = self._buffers(image.shape)
        host_in.numpy()[...] = image
        if self.stream is None:
            planes = host_in.permute(2, 0, 1).float()
            return DeviceImage(planes, {"upload": (time.perf_counter() - started) * 1e3})
        start, end = self._event(), self._event()
        with torch.cuda.stream(self.stream):
            start.record()
            planes = host_in.to(self.device, non_blocking=True).permute(2, 0, 1).float()
            end.record()
        return DeviceImage(planes, _events=[("upload", start, end)])

    def crops(
        self, frame: DeviceImage, transforms: Sequence[npt.NDArray[np.float64]], size: int
    ) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """(N, 3, size, size) crops in 0..1, and on CUDA the event after which they are ready
        (the generator runs on another CUDA stream and waits for it)."""
        with torch.inference_mode(), self._on_stream():
            crops = torch.cat([crop_face(frame.planes, m, size) for m in transforms]) / 255.0
            ready = None
            if self.stream is not None:
                ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
                ready.record(self.stream)
        return crops, ready

    def paste(
        self, image: npt.NDArray[np.uint8], frame: DeviceImage | None, faces: Sequence[SwappedFace]
    ) -> tuple[npt.NDArray[np.uint8], dict[str, float]]:
        """``image`` with every face pasted at its strength (fade included); one download.

        ``frame`` is the upload the engine already made of ``image``, or None (a frame where
        only fading-out faces are left is uploaded here)."""
        started = time.perf_counter()
        if frame is None:
            frame = self.upload(image)
        _, host_out = self._buffers(image.shape)
        timings = dict(frame.timings_ms)
        events = list(frame._events)
        with torch.inference_mode(), self._on_stream():
            paste_start = self._event() if self.stream is not None else None
            if paste_start is not None:
                paste_start.record()
            out = frame.planes.clone()
            for face in faces:
                crop = face.resolve()
                if self.stream is not None and isinstance(crop, torch.Tensor) and crop.is_cuda:
                    # Made on the generator's CUDA stream, read on this one: tell the allocator.
                    crop.record_stream(self.stream)
                swapped = _crop_tensor(crop, self.device) * 255.0
                alpha = torch.from_numpy(face.alpha).to(self.device, non_blocking=True)
                paste_face(out, swapped[None], alpha, face.to_crop, face.strength)
            pasted = self._event() if self.stream is not None else None
            if pasted is not None:
                pasted.record()
            host_out.copy_(out.round_().to(torch.uint8).permute(1, 2, 0), non_blocking=True)
            if self.stream is not None and paste_start is not None and pasted is not None:
                done = self._event()
                done.record()
                done.synchronize()
                events += [("paste", paste_start, pasted), ("download", pasted, done)]
        for name, start, end in events:
            timings[name] = timings.get(name, 0.0) + start.elapsed_time(end)
        if self.stream is None:
            timings["paste"] = (time.perf_counter() - started) * 1e3
        result: npt.NDArray[np.uint8] = host_out.numpy().copy()
        return result, timings

    def _on_stream(self) -> torch.cuda.StreamContext | _NoStream:
        return torch.cuda.stream(self.stream) if self.stream is not None else _NoStream()


class _NoStream:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _crop_tensor(crop: torch.Tensor | npt.NDArray[np.uint8], device: torch.device) -> torch.Tensor:
    """A swapped crop as (3, S, S) float in 0..1 on ``device``, whichever form the engine gave."""
    if isinstance(crop, torch.Tensor):
        return crop.to(device).float().clamp(0, 1)
    return torch.from_numpy(np.ascontiguousarray(crop)).to(device).permute(2, 0, 1).float() / 255.0
