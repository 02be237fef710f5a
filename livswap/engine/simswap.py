"""The ``simswap-224`` and ``simswap-512`` engines: SimSwap's generators with its ArcFace identity,
on the user's own imported weight files. Alignment, identity and paste-back follow the official
inference; the generator runs through any backend of :mod:`livswap.engine.backends`, batched
across streams, and compose pastes the faces back as it does the built-in engine's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from livswap.compose import feather
from livswap.config import Config
from livswap.engine.backends import build_runner, resolve_spec
from livswap.engine.identity import EmbeddingCache
from livswap.engine.models.arcface import ArcFace, convert_pickled_arcface, identity_of_crops
from livswap.engine.models.simswap import SimSwapGenerator, load_simswap
from livswap.engine.neural import NeuralEngine
from livswap.errors import EngineError, ModelError, first_line
from livswap.frame import Image
from livswap.models import ModelStore, model_dir
from livswap.models.download import sha256_of
from livswap.models.safety import load_safetensors, load_state_dict
from livswap.track.landmarks import face_index

__all__ = [
    "SimSwapEngine",
    "align_224",
    "align_224_at",
    "align_ffhq_512",
    "arcface_embedding",
    "crop_box_alpha",
    "outline_alpha",
]

log = logging.getLogger(__name__)

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


# SimSwap 512's single FFHQ template, in 512-pixel space (the "ffhq" alignment mode).
_FFHQ_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    np.float64,
)


def align_224(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The 2x3 transform from frame to a 224 crop, fitted to the best of the five templates."""
    pts = keypoints.astype(np.float64)
    best, best_err = None, np.inf
    for template in _TEMPLATES_112 * (224 / 112):
        m = _similarity(pts, template)
        err = float(np.linalg.norm(pts @ m[:, :2].T + m[:, 2] - template, axis=1).sum())
        if err < best_err:
            best, best_err = m, err
    assert best is not None
    return best


def align_ffhq_512(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The 2x3 transform from frame to SimSwap 512's FFHQ-aligned 512 crop."""
    return _similarity(keypoints.astype(np.float64), _FFHQ_512)


@dataclass(frozen=True)
class _Variant:
    model: str  # registry name of the generator
    crop: int
    align: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]


_VARIANTS = {
    "simswap-224": _Variant("simswap-224", 224, align_224),
    "simswap-512": _Variant("simswap-512", 512, align_ffhq_512),
}


class SimSwapEngine(NeuralEngine):
    """SimSwap 224 or 512 on imported weights (``livswap models import simswap-224 ...`` and
    ``arcface-simswap``). Runs on CUDA when present (fp16 with fp32 norm statistics by default),
    else on the CPU, through the backend ``[engine] backend`` names."""

    def __init__(self, cfg: Config, *, name: str = "simswap-224") -> None:
        if name not in _VARIANTS:
            raise EngineError(f"unknown SimSwap engine {name!r}; known: {', '.join(_VARIANTS)}")
        self.name = name
        self.variant = _VARIANTS[name]
        store = ModelStore(model_dir(cfg.models.dir))
        self.spec = resolve_spec(cfg.engine)
        self.device = self.spec.device
        if cfg.engine.model and name == "simswap-224":
            # A generator trained with `livswap train --arch simswap`: its own width and size,
            # SimSwap's 224 templates scaled to it.
            generator, weights_key, size = _trained_simswap(store, cfg.engine.model)
            self.variant = _Variant(f"trained/{cfg.engine.model}", size, align_224_at(size))
        else:
            if cfg.engine.model:
                raise EngineError(
                    f"engine {name!r} runs its imported weights; --model is for models trained "
                    "with `livswap train` (--engine styleswap, or simswap-224)"
                )
            generator_path = store.require(self.variant.model)
            label = f"model {self.variant.model}"
            generator = load_simswap(
                load_state_dict(generator_path, label), label, expect=name.removeprefix("simswap-")
            )
            weights_key = f"{self.variant.model}-{sha256_of(generator_path)[:16]}"
        self.crop = self.variant.crop
        arcface_path = store.require("arcface-simswap")
        cache = store.folder / "cache"
        self.generator = build_runner(
            generator,
            self.spec,
            crop=self.variant.crop,
            cache_dir=cache,
            cache_key=weights_key.replace("/", "-"),
        )
        self.arcface = load_arcface(cache, arcface_path).to(self.device).eval()
        # The identity depends on the alignment (224 templates or FFHQ 512), so it is part of
        # the embedding cache key.
        self.embeddings = EmbeddingCache(
            cache,
            f"arcface-{sha256_of(arcface_path)[:16]}-{self.variant.crop}",
            self._encode,
        )
        self.box_alpha = crop_box_alpha(self.crop)  # the same for every face: built once
        self._start(cfg)

    # -- identity ----------------------------------------------------------------------------
    def _encode(self, image: Image, keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return arcface_embedding(self.arcface, image, self.variant.align(keypoints), self.crop)

    def latent(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """SimSwap feeds the (averaged, L2-normalised) ArcFace embedding itself."""
        return embedding[None]

    # -- per frame ---------------------------------------------------------------------------
    def placement(self, face: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """Where a face's crop is (frame -> crop transform) and its paste-back alpha: the face
        outline in crop space, pulled in and feathered, inside a box feather (the official
        paste-back's box blur, scaled to the crop)."""
        m = self.variant.align(face.keypoints)
        return m, outline_alpha(face, m, self.crop, self.box_alpha)


def align_224_at(size: int) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]:
    """SimSwap's 224 alignment scaled to a ``size`` crop (models trained at other sizes)."""

    def align(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return align_224(keypoints) * (size / 224.0)

    return align


def _trained_simswap(store: ModelStore, name: str) -> tuple[SimSwapGenerator, str, int]:
    """A SimSwap-style generator trained with livswap: (generator, cache key, crop size)."""
    from livswap.models.trained import find_trained, load_trained

    model = find_trained(store, "simswap", name)
    label = f"trained model {name!r}"
    settings = dict(model.network)
    settings.pop("variant", None)
    try:
        generator = SimSwapGenerator("224", **settings)
        state, digest = load_trained(store, model)
        generator.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{label}: its weights do not fit its network: {first_line(exc)}"
        ) from None
    return generator.eval(), f"trained-simswap-{name}-{digest[:16]}", model.resolution


def crop_box_alpha(crop: int) -> npt.NDArray[np.float32]:
    """The crop-edge feather of the official paste-back (a box blur), scaled to the crop."""
    margin = max(crop // 28, 2)
    box = np.zeros((crop, crop), np.uint8)
    box[margin:-margin, margin:-margin] = 255
    alpha: npt.NDArray[np.float32] = feather(box, 6.0 * crop / 224)
    return alpha


def outline_alpha(
    face: Any, m: npt.NDArray[np.float64], size: int, box_alpha: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """A face's paste-back alpha in crop space: its outline (through ``m``), pulled in and
    feathered, inside the box feather."""
    oval = face.landmarks[face_index().face_oval, :2].astype(np.float64) @ m[:, :2].T + m[:, 2]
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(oval).astype(np.int32)], (255,))
    grow = max(3, size // 32)
    mask = cv2.erode(canvas, np.ones((grow, grow), np.uint8))
    alpha: npt.NDArray[np.float32] = (feather(mask, 6.0 * size / 224) * box_alpha).astype(
        np.float32
    )
    return alpha


def arcface_embedding(
    arcface: ArcFace, image: Image, m: npt.NDArray[np.float64], size: int
) -> npt.NDArray[np.float32]:
    """SimSwap's identity of the face that ``m`` maps to a ``size`` crop."""
    device = next(arcface.parameters()).device
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR)
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        latent: npt.NDArray[np.float32] = (
            identity_of_crops(arcface, x.to(device)).float().cpu()[0].numpy()
        )
    return latent


def load_arcface(cache: Path, path: Path) -> ArcFace:
    """SimSwap's encoder. The release is a whole pickled module: it is converted once, without
    running its code, to a safetensors file that later runs load directly."""
    from safetensors.torch import save_file

    converted = cache / f"arcface-simswap-{sha256_of(path)[:16]}.safetensors"
    model = ArcFace()
    if converted.exists():
        try:
            state = load_safetensors(converted, "model arcface-simswap: converted copy")
        except ModelError as exc:
            raise ModelError(
                f"{exc}; delete it ({converted}) and it is rebuilt from the release"
            ) from None
    else:
        state = dict(convert_pickled_arcface(path))
        converted.parent.mkdir(parents=True, exist_ok=True)
        partial = converted.with_name(converted.name + ".partial")
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
        os.replace(partial, converted)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # a converted copy replaced by something else
        raise ModelError(
            f"model arcface-simswap: converted copy {converted} does not fit ArcFace "
            f"({first_line(exc)}); delete it and it is rebuilt from the release"
        ) from None
    return model
