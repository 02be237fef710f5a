"""Compose: paste the swapped faces back into the frame, fade faces in and out, and add the
disclosure label. Also the mask and colour helpers every engine's faces are built with.

Every engine describes a face the same way (:class:`livswap.frame.SwappedFace`: a face-aligned
crop, a soft alpha in crop space and the frame -> crop transform), so paste-back, fading and
smoothing exist once, for the CPU (OpenCV) and the device (:mod:`livswap.cuda`) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.config import ComposeConfig
from livswap.frame import Frame, Image, SwappedFace
from livswap.label import DisclosureLabel
from livswap.track.hands import occluder_mask

if TYPE_CHECKING:
    from livswap.cuda.frame_path import DeviceFramePath

__all__ = [
    "Compositor",
    "HandsInFront",
    "MaskSmoother",
    "fade_curve",
    "feather",
    "masked_lowpass",
    "paste_on_cpu",
]

# OpenCV returns loosely typed arrays; intermediates here are float32 or uint8 by construction.
FloatArray = npt.NDArray[Any]


def feather(mask: FloatArray | npt.NDArray[Any], radius: float) -> FloatArray:
    """Soften a mask's edge over about ``radius`` pixels; uint8 masks are 0..255, floats 0..1."""
    m = mask.astype(np.float32) * np.float32(1 / 255) if mask.dtype == np.uint8 else mask
    if radius < 0.5:
        return m
    k = int(radius * 2) | 1
    return cv2.GaussianBlur(m, (k, k), radius / 2)


def masked_lowpass(
    image: FloatArray, mask: FloatArray, sigma: float, downscale: int = 4
) -> FloatArray:
    """Gaussian low-pass of ``image`` using only pixels where ``mask`` > 0 (normalised blur).

    Values are extrapolated smoothly into masked-out areas, so nothing from outside the mask
    (hair, background) bleeds in. Computed at 1/``downscale`` resolution for speed.
    """
    h, w = mask.shape
    sw, sh = max(1, w // downscale), max(1, h // downscale)
    small_mask = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA)
    small_img = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    channels = 1 if small_img.ndim == 2 else small_img.shape[2]
    weighted = cv2.multiply(small_img, cv2.merge([small_mask] * channels))
    s = max(sigma / downscale, 0.5)
    k = int(s * 6) | 1
    num = cv2.GaussianBlur(weighted, (k, k), s)
    den = np.maximum(cv2.GaussianBlur(small_mask, (k, k), s), np.float32(1e-4))
    low = cv2.divide(num, cv2.merge([den] * channels))
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)


def paste_on_cpu(out: Image, face: SwappedFace, strength: float) -> None:
    """Blend ``face`` into ``out`` in place with OpenCV, scaled by ``strength`` (0..1)."""
    if strength <= 0:
        return
    image = _crop_image(face.resolve())
    h, w = out.shape[:2]
    s = image.shape[0]
    alpha_8 = cv2.convertScaleAbs(face.alpha, alpha=255.0)
    # Only the part of the square that changes anything is pasted: the face's alpha, and where
    # the frame's own pixels are moved (the square is several faces wide, the face in its middle).
    rect = _touched(alpha_8, face.displacement, s)
    if rect is None:
        return
    left, top, right, bottom = rect
    to_frame = cv2.invertAffineTransform(face.to_crop).astype(np.float64)
    corners = (
        np.array([[left, top, 1], [right, top, 1], [left, bottom, 1], [right, bottom, 1]], float)
        @ to_frame.T
    )
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    m = to_frame.copy()
    m[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    # One warp of colour and alpha together (8-bit alpha is plenty for a soft edge) costs
    # about half of two separate warps. Outside the square alpha is 0, so the zero border
    # never shows. OpenCV does the channel shuffles: numpy's strided copies cost more.
    rgba = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    cv2.mixChannels([alpha_8], [rgba], [0, 3])
    warped = cv2.warpAffine(
        rgba, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    alpha = np.multiply(
        cv2.extractChannel(warped, 3), np.float32(strength / 255.0), dtype=np.float32
    )
    if face.displacement is None:
        behind = out[y0:y1, x0:x1]
    else:
        behind = _displaced(out, face.displacement, s, m, (x0, y0), size, strength)
    out[y0:y1, x0:x1] = cv2.blendLinear(
        cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB), behind, alpha, 1.0 - alpha
    )


def _touched(
    alpha_8: npt.NDArray[np.uint8], displacement: FloatArray | None, size: int
) -> tuple[float, float, float, float] | None:
    """The crop-space rectangle (left, top, right, bottom) a paste changes, with a pixel's
    margin for bilinear sampling; None when it changes nothing."""
    rects = []
    x, y, w, h = cv2.boundingRect(alpha_8)
    if w and h:
        rects.append((x - 1.0, y - 1.0, x + w + 1.0, y + h + 1.0))
    if displacement is not None:
        # Both channels side by side as one image: any pixel moved by 0.005 px or more.
        r = displacement.shape[0]
        moved = cv2.convertScaleAbs(displacement.reshape(r, 2 * r), alpha=100.0)
        x, y, w, h = cv2.boundingRect(moved)
        if w and h:
            k = size / r  # crop pixels per displacement pixel
            # Bilinear sampling carries a displacement pixel's value a whole pixel further.
            rects.append((x // 2 * k - k, y * k - k, ((x + w + 1) // 2 + 1) * k, (y + h + 1) * k))
    if not rects:
        return None
    left, top, right, bottom = zip(*rects, strict=True)
    return min(left), min(top), max(right), max(bottom)


def _displaced(
    out: Image,
    displacement: FloatArray,
    crop_size: int,
    crop_to_region: npt.NDArray[np.float64],
    origin: tuple[int, int],
    size: tuple[int, int],
    strength: float,
) -> Image:
    """The region of ``out`` at ``origin`` (``size``: width, height), each pixel taken from its
    own position plus the face's ``displacement`` (scaled by ``strength``): the frame's own
    pixels where a reshaped face shows them, resampled once, straight from the frame."""
    # The displacement is smooth: it is drawn into the region at half the region's resolution
    # and enlarged (drawn at full resolution it cost more than the rest of the paste).
    k = crop_size / displacement.shape[0]
    to_crop = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5], [0, 0, 1]])
    to_half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])  # region pixel p: 2q + 0.5
    to_region = np.vstack([crop_to_region, (0, 0, 1)])
    w, h = size
    half = ((w + 1) // 2, (h + 1) // 2)
    shift_half = cv2.warpAffine(
        displacement,
        (to_half @ to_region @ to_crop)[:2],
        half,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    shift = cv2.resize(shift_half, (2 * half[0], 2 * half[1]))[:h, :w]
    x0, y0 = origin
    xs = np.arange(x0, x0 + w, dtype=np.float32)
    ys = np.arange(y0, y0 + h, dtype=np.float32)
    map_x = shift[..., 0] * np.float32(strength) + xs[None, :]
    map_y = shift[..., 1] * np.float32(strength) + ys[:, None]
    return np.asarray(
        cv2.remap(out, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    )


def _crop_image(crop: Any) -> Image:
    """A swapped crop as (S, S, 3) uint8 RGB, whichever form the engine gave (a generator's
    (3, S, S) float tensor in 0..1 is converted here)."""
    if isinstance(crop, np.ndarray):
        return crop
    import torch

    assert isinstance(crop, torch.Tensor), type(crop)
    pixels = (crop.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(1, 2, 0).cpu().numpy())


def fade_curve(level: float) -> float:
    """The strength at fade ``level`` (0..1), the same going in and out, CPU and device:
    smoothstep, so there is no visible kink at either end."""
    return level * level * (3 - 2 * level)


@dataclass
class _Fade:
    level: float
    last: SwappedFace
    seen: bool = True


@dataclass
class Compositor:
    """One stream's compose stage: writes ``frame.output``, the captured image with the
    swapped faces pasted in and the label on top.

    Faces that appear fade in and faces that disappear fade out over ``cfg.fade_frames``
    frames (the last swapped face is held while it fades), so nothing pops. A face already there
    in the stream's first frame is swapped in full from it: there is nothing to pop from, and a
    fade-in showed the unswapped face at the start of every video file. The paste runs on
    the CPU with OpenCV, or on the engine's device (``device_path``): same fades either way.
    """

    cfg: ComposeConfig
    label: DisclosureLabel | None
    fade: bool = True
    device_path: DeviceFramePath | None = None
    _fades: dict[int, _Fade] = field(default_factory=dict, init=False, repr=False)
    _first_frame: bool = field(default=True, init=False, repr=False)
    _hands: HandsInFront = field(default_factory=lambda: HandsInFront(), init=False, repr=False)

    def compose(self, frame: Frame) -> None:
        faces = self._faded(self._hands.apply(frame.swaps, frame.hands))
        if self.device_path is not None and faces:
            output, timings = self.device_path.paste(frame.image, frame.device_image, faces)
            for name, ms in timings.items():
                frame.timings_ms[f"device_{name}"] = ms
        else:
            output = frame.image.copy()  # the captured image may be shared (stills repeat)
            for face in faces:
                paste_on_cpu(output, face, face.strength)
        frame.device_image = None  # the device copy is not needed past compose
        if self.label is not None:
            self.label.draw(output)
        frame.output = output

    def _faded(self, swaps: list[SwappedFace]) -> list[SwappedFace]:
        """This frame's faces and the ones still fading out, each at its faded strength."""
        step = 1.0 / self.cfg.fade_frames if self.fade and self.cfg.fade_frames > 0 else 1.0
        for state in self._fades.values():
            state.seen = False
        shown: list[SwappedFace] = []
        for face in swaps:
            state = self._fades.get(face.track_id)
            if state is None:
                start = 1.0 if self._first_frame else 0.0
                state = self._fades[face.track_id] = _Fade(level=start, last=face)
            state.level = min(1.0, state.level + step)
            state.last, state.seen = face, True
            shown.append(replace(face, strength=face.strength * fade_curve(state.level)))
        for track_id, state in list(self._fades.items()):
            if not state.seen:
                state.level -= step
                if state.level <= 0:
                    del self._fades[track_id]
                else:
                    last = state.last
                    shown.append(replace(last, strength=last.strength * fade_curve(state.level)))
        self._first_frame = False
        return shown

    def recover(self, frame: Frame, exc: BaseException) -> None:
        """Compose failed: show the unswapped frame, still labelled."""
        frame.swaps = []
        frame.device_image = None
        self._fades.clear()
        self._first_frame = False
        output = frame.image.copy()
        if self.label is not None:
            self.label.draw(output)
        frame.output = output


@dataclass
class HandsInFront:
    """One stream's hands kept in front of its swapped faces, for every engine.

    Each hand's silhouette is drawn straight into each face's crop space and taken out of the
    face's alpha. Per track, a hand covers at once (no lag behind a fast hand) and uncovers over
    a few frames (``release`` per frame), so a detection that drops a frame does not flash the
    swap over the hand.
    """

    release: float = 0.5
    _last: dict[int, FloatArray] = field(default_factory=dict, init=False, repr=False)

    def apply(self, swaps: list[SwappedFace], hands: list[Any]) -> list[SwappedFace]:
        if not hands and not self._last:
            return swaps
        kept: dict[int, FloatArray] = {}
        out = []
        for face in swaps:
            size = face.size
            mask = occluder_mask(hands, (size, size), face.to_crop)
            last = self._last.get(face.track_id)
            if last is not None and last.shape == (size, size):
                held = last * np.float32(self.release)
                mask = held if mask is None else np.maximum(mask, held)
            if mask is None or float(mask.max()) < 0.02:
                out.append(face)
                continue
            kept[face.track_id] = mask
            uncovered = (1.0 - mask).astype(np.float32)
            out.append(
                replace(
                    face,
                    alpha=face.alpha * uncovered,
                    displacement=_held_in_place(face.displacement, uncovered),
                )
            )
        self._last = kept
        return out


@dataclass
class MaskSmoother:
    """Temporal smoothing of per-face masks in aligned (crop) space, where the face holds still
    while the head moves: an exponential average per track, so a mask's edge does not flicker
    with small landmark noise. ``strength`` is ``[compose] temporal_smoothing``."""

    strength: float
    _last: dict[int, FloatArray] = field(default_factory=dict, init=False, repr=False)

    def smooth(self, masks: dict[int, FloatArray]) -> dict[int, FloatArray]:
        """This frame's mask per track id -> the smoothed ones; unseen tracks are forgotten."""
        out = {}
        for track_id, mask in masks.items():
            last = self._last.get(track_id)
            if last is not None and last.shape == mask.shape and self.strength > 0:
                mask = cv2.addWeighted(last, self.strength, mask, 1.0 - self.strength, 0.0)
            out[track_id] = mask
        self._last = out
        return out


def _held_in_place(displacement: FloatArray | None, uncovered: FloatArray) -> FloatArray | None:
    """``displacement`` where ``uncovered`` (crop-sized, 0 under a hand): a hand shows where it
    is, not where the face's reshaping moved what is behind it."""
    if displacement is None:
        return None
    r = displacement.shape[0]
    if uncovered.shape[0] != r:
        uncovered = cv2.resize(uncovered, (r, r), interpolation=cv2.INTER_AREA)
    return np.asarray(displacement * uncovered[..., None], np.float32)
