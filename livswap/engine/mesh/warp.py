"""Piecewise-affine mesh warping in one pass.

Triangles are rasterised once per frame into a triangle-id map (far ones first, so nearer
triangles win where a turned head folds the mesh over itself); every pixel then gets its source
coordinate from its triangle's affine map, and one ``cv2.remap`` per source image resamples the
whole face. Neighbouring triangles share edges exactly, so there are no seams between them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["MeshRaster", "rasterize"]

# OpenCV returns loosely typed arrays; intermediates here are float32 or uint8 by construction.
FloatArray = npt.NDArray[Any]
IntArray = npt.NDArray[np.int32]


@dataclass(frozen=True)
class MeshRaster:
    """Which triangle covers each pixel of a ``size`` x ``size`` canvas (-1: none)."""

    size: int
    triangles: IntArray  # (T, 3) vertex indices
    tri_id: IntArray  # (size, size) int32
    inverse: npt.NDArray[np.float64]  # (T, 3, 3): canvas (x, y, 1) -> barycentric weights

    @property
    def covered(self) -> npt.NDArray[np.bool_]:
        return self.tri_id >= 0

    def maps(self, source_points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``cv2.remap`` maps that pull each covered pixel from ``source_points``' triangles.

        Uncovered pixels get -1 (outside any image: remap's border value).
        """
        return self.maps_for(source_points)[0]

    def maps_for(self, *source_points: FloatArray) -> list[tuple[FloatArray, FloatArray]]:
        """:meth:`maps` for several images' points at once (one gather over the pixels)."""
        # Per triangle: source coordinates = S (2x3 vertex coords) @ barycentric(3x3 inverse).
        blocks = []
        for points in source_points:
            verts = points[self.triangles].astype(np.float64)  # (T, 3, 2)
            affine = np.matmul(verts.transpose(0, 2, 1), self.inverse)  # (T, 2, 3)
            # One extra "triangle" for uncovered pixels maps everything to (-1, -1).
            blocks.append(np.concatenate([affine.reshape(-1, 6), [[0, 0, -1, 0, 0, -1]]]))
        # Gathered once as a (6 per image, pixels) block: separate gathers cost twice as much.
        coeffs = np.ascontiguousarray(np.concatenate(blocks, axis=1).T, np.float32)
        ids = self.tri_id.ravel()
        ids = np.where(ids >= 0, ids, len(self.triangles))
        xs, ys = self._grid()
        c = np.take(coeffs, ids, axis=1)
        shape = self.tri_id.shape
        return [
            (
                (c[k] * xs + c[k + 1] * ys + c[k + 2]).reshape(shape),
                (c[k + 3] * xs + c[k + 4] * ys + c[k + 5]).reshape(shape),
            )
            for k in range(0, 6 * len(source_points), 6)
        ]

    def _grid(self) -> tuple[FloatArray, FloatArray]:
        return _pixel_grid(self.tri_id.shape[0], self.tri_id.shape[1])


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> tuple[FloatArray, FloatArray]:
    """Flattened x and y of every pixel (read-only; one per canvas size, built once)."""
    ys, xs = np.indices((height, width), dtype=np.float32)
    xs, ys = xs.ravel(), ys.ravel()
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def rasterize(
    dst_points: FloatArray, triangles: IntArray, size: int, tri_depth: FloatArray | None = None
) -> MeshRaster:
    """Rasterise ``triangles`` of ``dst_points`` (N, 2 canvas pixels) on a size x size canvas.

    ``tri_depth`` (T,) orders triangles: larger = farther, drawn first, overdrawn by nearer ones.
    """
    tri_pts = dst_points[triangles]  # (T, 3, 2)
    order = np.arange(len(triangles))
    if tri_depth is not None:
        order = np.argsort(-tri_depth, kind="stable")
    tri_id = np.full((size, size), -1, np.int32)
    # Sub-pixel precision (shift=4) keeps shared edges exact between neighbours.
    fixed = np.round(tri_pts * 16).astype(np.int32)
    # Iterating over the reordered block (not indexing it per triangle) halves the loop's cost.
    for t, polygon in zip(order.tolist(), fixed[order], strict=True):
        cv2.fillConvexPoly(tri_id, polygon, t, cv2.LINE_8, 4)
    # Barycentric inverse per triangle, [x y 1]^T = V w  ->  w = V^-1 [x y 1]^T, in closed form
    # (the adjugate of V over its determinant; far cheaper than a batched LAPACK inverse).
    p = tri_pts.astype(np.float64)
    x0, y0, x1, y1, x2, y2 = p[:, 0, 0], p[:, 0, 1], p[:, 1, 0], p[:, 1, 1], p[:, 2, 0], p[:, 2, 1]
    det: npt.NDArray[np.float64] = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    degenerate = np.abs(det) < 1e-9
    inv_det = 1.0 / np.where(degenerate, 1.0, det)
    inverse = np.empty((len(triangles), 3, 3), np.float64)
    inverse[:, 0] = np.stack([y1 - y2, x2 - x1, x1 * y2 - x2 * y1], axis=1)
    inverse[:, 1] = np.stack([y2 - y0, x0 - x2, x2 * y0 - x0 * y2], axis=1)
    inverse[:, 2] = np.stack([y0 - y1, x1 - x0, x0 * y1 - x1 * y0], axis=1)
    inverse *= inv_det[:, None, None]
    if degenerate.any():
        tri_id[np.isin(tri_id, np.nonzero(degenerate)[0])] = -1
    return MeshRaster(size=size, triangles=triangles, tri_id=tri_id, inverse=inverse)
