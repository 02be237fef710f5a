"""Named groups of MediaPipe FaceMesh landmark indices (478 points with irises).

Loops are derived once from MediaPipe's own connection sets, so they stay correct if a
future model renumbers nothing but reorders edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

__all__ = ["NUM_LANDMARKS", "FaceIndex", "face_index", "mirror_map"]

NUM_LANDMARKS = 478
LEFT_IRIS_CENTER = 468  # the subject's right eye appears on the image's left
RIGHT_IRIS_CENTER = 473
NOSE_TIP = 1
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
CHIN = 152
FOREHEAD = 10

IntArray = npt.NDArray[np.intp]


def _loop(edges: frozenset[tuple[int, int]]) -> list[int]:
    """Order a closed polyline's edges into a vertex loop."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, prev, cur = [start], -1, start
    while True:
        nxt = next((n for n in neighbours[cur] if n != prev), None)
        if nxt is None or nxt == start:
            break
        loop.append(nxt)
        prev, cur = cur, nxt
        if len(loop) > len(neighbours):
            break
    return loop


def _points(edges: frozenset[tuple[int, int]]) -> list[int]:
    return sorted({i for e in edges for i in e})


@dataclass(frozen=True)
class FaceIndex:
    """Index arrays into the 478 landmarks."""

    face_oval: IntArray  # ordered loop around the face
    left_eye: IntArray  # ordered eyelid loop of the eye on the image's left
    right_eye: IntArray
    left_brow: IntArray
    right_brow: IntArray
    lips_outer: IntArray  # ordered loop
    lips_inner: IntArray  # ordered loop
    lips: IntArray  # every point of the lips: both loops and the points between them
    nose: IntArray
    left_iris: IntArray
    right_iris: IntArray
    triangles: npt.NDArray[np.int32]  # (T, 3) FaceMesh's own triangulation of the 468 points

    @property
    def inner_features(self) -> IntArray:
        """Every point of the eyes, brows, nose and lips (what "face proportions" move)."""
        parts = (
            self.left_eye,
            self.right_eye,
            self.left_brow,
            self.right_brow,
            self.lips_outer,
            self.lips_inner,
            self.nose,
            self.left_iris,
            self.right_iris,
        )
        unique: IntArray = np.unique(np.concatenate(parts))
        return unique


def _split_lips(edges: frozenset[tuple[int, int]]) -> tuple[list[int], list[int]]:
    # FACEMESH_LIPS holds two loops; the one through the mouth corner 61 is the outer one.
    remaining = set(edges)
    loops = []
    while remaining:
        component = {remaining.pop()}
        grown = True
        while grown:
            verts = {i for e in component for i in e}
            more = {e for e in remaining if e[0] in verts or e[1] in verts}
            grown = bool(more)
            component |= more
            remaining -= more
        loops.append(_loop(frozenset(component)))
    outer = next(loop for loop in loops if MOUTH_LEFT in loop)
    inner = next(loop for loop in loops if MOUTH_LEFT not in loop)
    return outer, inner


def _adjacency(edges: frozenset[tuple[int, int]]) -> dict[int, set[int]]:
    """Each mesh point's neighbours along ``edges``."""
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    return neighbours


def _between(neighbours: dict[int, set[int]], inner: list[int], outer: list[int]) -> list[int]:
    """The mesh points from the ``inner`` loop out to the ``outer`` one, both included: those
    reached from ``inner`` over the mesh's edges without crossing ``outer``."""
    stop = set(outer)
    found = set(inner)
    todo = list(found)
    while todo:
        for n in neighbours.get(todo.pop(), ()):
            if n not in found:
                found.add(n)
                if n not in stop:
                    todo.append(n)
    return sorted(found)


def _triangles(neighbours: dict[int, set[int]]) -> npt.NDArray[np.int32]:
    tris = set()
    for a, nbrs in neighbours.items():
        for b in nbrs:
            if b <= a:
                continue
            for c in nbrs & neighbours[b]:
                if c > b:
                    tris.add((a, b, c))
    return np.array(sorted(tris), dtype=np.int32)


@cache
def face_index() -> FaceIndex:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    outer, inner = _split_lips(fmc.FACEMESH_LIPS)
    mesh = _adjacency(fmc.FACEMESH_TESSELATION)

    def arr(xs: list[int]) -> IntArray:
        return np.asarray(xs, dtype=np.intp)

    # MediaPipe's LEFT_* is the subject's left, which is the image's right.
    return FaceIndex(
        face_oval=arr(_loop(fmc.FACEMESH_FACE_OVAL)),
        left_eye=arr(_loop(fmc.FACEMESH_RIGHT_EYE)),
        right_eye=arr(_loop(fmc.FACEMESH_LEFT_EYE)),
        left_brow=arr(_points(fmc.FACEMESH_RIGHT_EYEBROW)),
        right_brow=arr(_points(fmc.FACEMESH_LEFT_EYEBROW)),
        lips_outer=arr(outer),
        lips_inner=arr(inner),
        lips=arr(_between(mesh, inner, outer)),
        nose=arr(_points(fmc.FACEMESH_NOSE)),
        left_iris=arr([LEFT_IRIS_CENTER, *_points(fmc.FACEMESH_RIGHT_IRIS)]),
        right_iris=arr([RIGHT_IRIS_CENTER, *_points(fmc.FACEMESH_LEFT_IRIS)]),
        triangles=_triangles(mesh),
    )


# Points on the face's mid-line (nose, lips, chin, forehead), for a first symmetry plane.
_MIDLINE = (1, 2, 4, 5, 6, 8, 9, 10, 151, 152, 168, 175, 199, 200, 0, 11, 12, 13, 14, 15, 16, 17)


def mirror_map(landmarks: npt.NDArray[np.float32]) -> IntArray:
    """For each of the 468 mesh points, its counterpart on the other side of the face (mid-line
    points map to themselves).

    The face's 3D landmarks are reflected across its plane of symmetry and matched one-to-one
    to the nearest points (an assignment, refitted once with the plane the pairs give). The
    map is a property of FaceMesh's topology: every face gives the same one.
    """
    from scipy.optimize import linear_sum_assignment

    points = landmarks[:468].astype(np.float64)
    normal = points[263] - points[33]  # across the eyes
    normal /= max(float(np.linalg.norm(normal)), 1e-9)
    center = points[list(_MIDLINE)].mean(axis=0)
    pairs = np.arange(len(points))
    for _ in range(2):
        reflected = points - 2.0 * ((points - center) @ normal)[:, None] * normal
        cost = ((points[:, None, :] - reflected[None, :, :]) ** 2).sum(axis=-1)
        _rows, pairs = linear_sum_assignment(cost)
        across = points - points[pairs]
        across *= np.sign(across @ normal)[:, None]
        normal = across.sum(axis=0)
        normal /= max(float(np.linalg.norm(normal)), 1e-9)
        center = ((points + points[pairs]) / 2).mean(axis=0)
    return np.asarray(pairs, np.intp)
