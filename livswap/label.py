"""The visible "AI-altered" disclosure label drawn on every output frame by default."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from livswap.frame import Image

__all__ = ["DisclosureLabel", "label_box"]


def label_box(width: int, height: int, text: str = "AI-altered") -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) rectangle the label occupies on a ``width`` x ``height`` frame."""
    scale, thickness, pad = _metrics(height)
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(4, height // 60)
    x0, y1 = margin, height - margin
    x1 = min(width, x0 + tw + 2 * pad)
    y0 = max(0, y1 - th - baseline - 2 * pad)
    return x0, y0, x1, y1


def _metrics(height: int) -> tuple[float, int, int]:
    scale = max(0.45, height / 1400)  # ~13 px text at 480p: readable after video compression
    thickness = max(1, round(scale * 2))
    pad = max(3, round(8 * scale))
    return scale, thickness, pad


@dataclass
class DisclosureLabel:
    """White text on a dark translucent box, bottom-left; the text mask is cached per size."""

    text: str = "AI-altered"
    _cache: dict[tuple[int, int], tuple[tuple[int, int, int, int], npt.NDArray[np.float32]]] = (
        field(default_factory=dict, repr=False)
    )

    def _render(
        self, width: int, height: int
    ) -> tuple[tuple[int, int, int, int], npt.NDArray[np.float32]]:
        key = (width, height)
        if key not in self._cache:
            box = label_box(width, height, self.text)
            x0, y0, x1, y1 = box
            scale, thickness, pad = _metrics(height)
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            (_, th), _ = cv2.getTextSize(self.text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            cv2.putText(
                mask,
                self.text,
                (pad, pad + th),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255,),
                thickness,
                cv2.LINE_AA,
            )
            self._cache.clear()  # one size at a time in practice; never grows
            self._cache[key] = (box, (mask.astype(np.float32) / 255.0)[..., None])
        return self._cache[key]

    def draw(self, image: Image) -> None:
        """Draw the label onto ``image`` in place."""
        h, w = image.shape[:2]
        (x0, y0, x1, y1), alpha = self._render(w, h)
        region = image[y0:y1, x0:x1].astype(np.float32)
        region *= 0.35  # darken the box so the text reads on any background
        region += alpha * (255.0 - region)
        image[y0:y1, x0:x1] = region.astype(np.uint8)
