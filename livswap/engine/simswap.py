"""The ``simswap-224`` engine: SimSwap's generator with its ArcFace identity, on the user's own
imported weight files. Alignment, identity and paste-back follow the official inference; the
paste-back goes through the same :class:`FacePatch` / compose path as the built-in engine.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import torch

from livswap.compose import FacePatch, feather
from livswap.config import Config
from livswap.engine.base import Identity
from livswap.engine.identity import EmbeddingCache, blend
from livswap.engine.models.arcface import ArcFace, convert_pickled_arcface
from livswap.engine.models.simswap import SimSwapGenerator, load_simswap
from livswap.errors import EngineError, ModelError
from livswap.frame import Frame, Image
from livswap.models import ModelStore, model_dir
from livswap.models.download import sha256_of
from livswap.models.safety import load_state_dict
from livswap.track.landmarks import face_index

__all__ = ["SimSwapEngine", "align_224"]

log = logging.getLogger(__name__)

CROP = 224
# SimSwap's five pose templates for the 224 "None" crop, in 112-pixel space (left eye, right eye,
# nose, left and right mouth corner); the best-fitting one is used for each face.
_TEMPLATES_112 = np.array(
    [
        [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]],
        [[45.031, 50.118], [65.568, 50.872], [39.677, 68.111], [45.177, 86.190], [64.246, 86.758]],
        [[51.642, 50.115], [57.617, 49.990], [35.740, 69.007], [51.157, 89.050], [57.025, 89.702]],
        [[46.845, 50.872], [67.382, 50.118], [72.737, 68.111], [48.167, 86.758], [67.236, 86.190]],
        [[54.796, 49.990], [60.771, 50.115], [76.673, 69.007], [55.388, 89.702], [61.257, 89.050]],
    ],
    np.float64,
)
_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _similarity(
    src: npt.NDArray[np.float64], dst: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Least-squares similarity (Umeyama) mapping src points onto dst, as a 2x3 matrix."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(xd.T @ xs / len(src))
    d = np.diag([1.0, float(np.sign(np.linalg.det(u @ vt)) or 1.0)])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d) / max((xs**2).sum() / len(src), 1e-12))
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_224(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The 2x3 transform from frame to a 224 crop, fitted to the best of the five templates."""
    pts = keypoints.astype(np.float64)
    best, best_err = None, np.inf
    for template in _TEMPLATES_112 * (CROP / 112):
        m = _similarity(pts, template)
        err = float(np.linalg.norm(pts @ m[:, :2].T + m[:, 2] - template, axis=1).sum())
        if err < best_err:
            best, best_err = m, err
    assert best is not None
    return best


@dataclass(frozen=True)
class _Latent:
    vector: torch.Tensor  # (1, 512), L2-normalised


class SimSwapEngine:
    """SimSwap 224 on imported weights (``livswap models import simswap-224 ...`` and
    ``arcface-simswap``). Runs on CUDA when present (fp16 with fp32 norm statistics), else CPU."""

    needs_faces = True

    def __init__(self, cfg: Config, *, name: str = "simswap-224") -> None:
        self.name = name
        self.cfg = cfg
        store = ModelStore(model_dir(cfg.models.dir))
        generator_path = store.require("simswap-224")
        arcface_path = store.require("arcface-simswap")
        want_cuda = cfg.engine.device in ("auto", "cuda") and torch.cuda.is_available()
        if cfg.engine.device == "cuda" and not want_cuda:
            raise EngineError("engine.device is 'cuda' but no CUDA device is available")
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.dtype = torch.float16 if want_cuda else torch.float32
        label = f"model {name}"
        generator: SimSwapGenerator = load_simswap(
            load_state_dict(generator_path, label), label, expect="224"
        )
        self.generator = generator.to(self.device, self.dtype).eval()
        self.arcface = self._load_arcface(store, arcface_path).to(self.device).eval()
        self.embeddings = EmbeddingCache(
            store.folder / "cache", "arcface-" + sha256_of(arcface_path)[:16], self._encode
        )
        # The crop-edge feather is the same for every face: built once.
        box = np.zeros((CROP, CROP), np.uint8)
        box[8:-8, 8:-8] = 255
        self.box_alpha = feather(box, 6.0)

    @staticmethod
    def _load_arcface(store: ModelStore, path: Path) -> ArcFace:
        """The encoder, converted once from the pickled release to a plain state dict."""
        converted = store.folder / "cache" / f"arcface-simswap-{sha256_of(path)[:16]}.pt"
        model = ArcFace()
        if converted.exists():
            model.load_state_dict(load_state_dict(converted, "model arcface-simswap"))
        else:
            state = convert_pickled_arcface(path)
            converted.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, converted)
            model.load_state_dict(state)
        return model

    # -- identity ----------------------------------------------------------------------------
    def _encode(self, image: Image, keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        crop = cv2.warpAffine(image, align_224(keypoints), (CROP, CROP), flags=cv2.INTER_LINEAR)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
        x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
        x = torch.nn.functional.interpolate(x, size=(112, 112))  # nearest, as the official code
        with torch.inference_mode():
            latent: npt.NDArray[np.float32] = (
                self.arcface(x.to(self.device)).float().cpu()[0].numpy()
            )
        return latent

    def _identity(self, vector: npt.NDArray[np.float32]) -> Identity:
        key = hashlib.sha256(vector.tobytes()).hexdigest()[:16]
        tensor = torch.from_numpy(vector)[None].to(self.device, self.dtype)
        return Identity(engine=self.name, key=key, data=_Latent(tensor))

    def prepare(self, sources: Sequence[Image], names: Sequence[str] | None = None) -> Identity:
        return self._identity(self.embeddings.identity_vector(sources, names, self.name))

    def prepare_mix(
        self,
        sources: Sequence[Image],
        mix: Image,
        weight: float,
        names: Sequence[str] | None = None,
    ) -> Identity:
        """Blend a second identity in (MFIM's identity mixing, at the embedding level)."""
        base = self.embeddings.identity_vector(sources, names, self.name)
        other = self.embeddings.identity_vector([mix], ["mix photo"], self.name)
        return self._identity(blend(base, other, weight))

    # -- per frame ---------------------------------------------------------------------------
    def swap(self, frame: Frame, identity: Identity) -> None:
        latent: _Latent = identity.data
        idx = face_index()
        for face in frame.faces:
            m = align_224(face.keypoints)
            crop = cv2.warpAffine(frame.image, m, (CROP, CROP), flags=cv2.INTER_LINEAR)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device, self.dtype) / 255.0
            with torch.inference_mode():
                y = self.generator(x, latent.vector)
            out = (y[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(
                np.uint8
            )
            # Soft mask: the face outline in crop space, pulled in and feathered, inside a box
            # feather (the official paste-back's box blur, scaled to the crop).
            oval = face.landmarks[idx.face_oval, :2].astype(np.float64) @ m[:, :2].T + m[:, 2]
            canvas = np.zeros((CROP, CROP), np.uint8)
            cv2.fillPoly(canvas, [np.round(oval).astype(np.int32)], (255,))
            mask = cv2.erode(canvas, np.ones((7, 7), np.uint8))
            alpha = feather(mask, 6.0) * self.box_alpha
            frame.patches.append(
                FacePatch(
                    track_id=face.track_id,
                    image=np.ascontiguousarray(out),
                    alpha=alpha.astype(np.float32),
                    to_frame=cv2.invertAffineTransform(m).astype(np.float64),
                )
            )

    @staticmethod
    def missing_models_hint(cfg: Config) -> str | None:
        store = ModelStore(model_dir(cfg.models.dir))
        for name in ("simswap-224", "arcface-simswap"):
            try:
                store.require(name)
            except ModelError as exc:
                return str(exc)
        return None
