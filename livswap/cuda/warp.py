"""Crop an aligned face out of a frame and paste a swapped one back, with PyTorch's
``affine_grid``/``grid_sample`` so it runs where the frame already is (GPU or CPU).

Conventions match ``cv2.warpAffine``: pixel centres at integer coordinates, bilinear sampling,
zeros outside the frame when cropping, replicated crop edges when pasting (the alpha decides
what shows), so the GPU path reproduces the CPU paste-back of :class:`livswap.compose.FacePatch`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

__all__ = ["crop_face", "paste_face"]

Affine = npt.NDArray[np.float64]  # (2, 3) pixel -> pixel


def _to_normalized(width: int, height: int) -> npt.NDArray[np.float64]:
    """Pixel coordinates (centres at integers) -> grid_sample's [-1, 1] (align_corners=False)."""
    return np.array(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0, 0, 1]]
    )


def _square(m: Affine) -> npt.NDArray[np.float64]:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _theta(m: npt.NDArray[np.float64], like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(m[:2].astype(np.float32))[None].to(like.device)


def crop_face(frame: torch.Tensor, to_crop: Affine, size: int) -> torch.Tensor:
    """``frame`` (3, H, W) float -> the (1, 3, size, size) crop that ``to_crop`` maps onto."""
    _, height, width = frame.shape
    # For each crop pixel: crop normalised -> crop pixel -> frame pixel -> frame normalised.
    from_crop = np.linalg.inv(_square(to_crop))
    theta = _to_normalized(width, height) @ from_crop @ np.linalg.inv(_to_normalized(size, size))
    grid = F.affine_grid(_theta(theta, frame).to(frame.dtype), [1, 3, size, size], False)
    return F.grid_sample(frame[None], grid, "bilinear", "zeros", align_corners=False)


def paste_face(
    out: torch.Tensor,
    face: torch.Tensor,
    alpha: torch.Tensor,
    to_crop: Affine,
    strength: float = 1.0,
) -> None:
    """Blend ``face`` (1, 3, S, S) into ``out`` (3, H, W) float, in place, where ``alpha``
    (S, S) in 0..1 says, scaled by ``strength``. Only the face's bounding box is resampled."""
    _, height, width = out.shape
    size = face.shape[-1]
    to_frame = np.linalg.inv(_square(to_crop))
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]]) @ to_frame.T
    x0, y0 = np.maximum(np.floor(corners[:, :2].min(axis=0)).astype(int), 0)
    x1, y1 = np.ceil(corners[:, :2].max(axis=0)).astype(int)
    x1, y1 = min(int(x1), width), min(int(y1), height)
    if x1 <= x0 or y1 <= y0 or strength <= 0:
        return
    roi_w, roi_h = x1 - x0, y1 - y0
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0, 0, 1]])
    # For each box pixel: box normalised -> box pixel -> frame pixel -> crop pixel -> normalised.
    theta = (
        _to_normalized(size, size)
        @ _square(to_crop)
        @ shift
        @ np.linalg.inv(_to_normalized(roi_w, roi_h))
    )
    grid = F.affine_grid(_theta(theta, out).to(out.dtype), [1, 1, roi_h, roi_w], False)
    rgb = F.grid_sample(face.to(out.dtype), grid, "bilinear", "border", align_corners=False)[0]
    weight = F.grid_sample(
        alpha.to(out.dtype)[None, None], grid, "bilinear", "zeros", align_corners=False
    )[0]
    if strength < 1.0:
        weight = weight * strength
    region = out[:, y0:y1, x0:x1]
    region.copy_(torch.lerp(region, rgb, weight))
