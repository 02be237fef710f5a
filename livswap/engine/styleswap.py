"""The ``styleswap`` engine: a StyleSwap generator trained with ``livswap train``, run through
the same backends, batching, masks and paste-back as the other neural engines.

Faces are FFHQ-aligned at the model's resolution (SimSwap 512's template, scaled); the identity
is SimSwap's ArcFace embedding of the source's crop aligned the same way, as in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from livswap.config import Config
from livswap.engine.backends import build_runner, resolve_spec
from livswap.engine.identity import EmbeddingCache
from livswap.engine.models.styleswap import StyleSwapConfig, StyleSwapGenerator
from livswap.engine.neural import NeuralEngine
from livswap.engine.simswap import (
    align_ffhq_512,
    arcface_embedding,
    crop_box_alpha,
    load_arcface,
    outline_alpha,
)
from livswap.errors import ModelError, first_line
from livswap.frame import Image
from livswap.models import ModelStore, model_dir
from livswap.models.download import sha256_of
from livswap.models.trained import TrainedModel, find_trained, load_trained

__all__ = ["StyleSwapEngine", "StyleSwapRunner", "build_styleswap"]


class StyleSwapRunner(nn.Module):
    """The generator in the runners' convention: crops and output in [0, 1]; the latent is two
    identities side by side (B, 1024), the second mixed into the levels ``mix_weights`` names
    (the same one twice when nothing is mixed, so that every stream's latent has one width and
    batches across streams)."""

    def __init__(self, generator: StyleSwapGenerator, mix_weights: tuple[float, ...]) -> None:
        super().__init__()
        self.generator = generator
        self.mix_weights = mix_weights
        self.identity_dim = generator.config.identity_dim

    def forward(self, target: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        identity, mix = latent[:, : self.identity_dim], latent[:, self.identity_dim :]
        out = self.generator.swap(
            target * 2.0 - 1.0, identity, mix=mix, mix_weights=self.mix_weights
        ).image
        return ((out + 1.0) * 0.5).clamp(0.0, 1.0)


def build_styleswap(model: TrainedModel, state: dict[str, Any]) -> StyleSwapGenerator:
    """The generator a trained model's metadata describes, with its weights (strict)."""
    label = f"trained model {model.name!r}"
    try:
        config = StyleSwapConfig(**model.network)
        generator = StyleSwapGenerator(config)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"{label}: its network settings do not describe StyleSwap: {exc}"
        ) from None
    if config.size != model.resolution:
        raise ModelError(
            f"{label}: metadata says {model.resolution} px but the network is {config.size}"
        )
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(
            f"{label}: its weights do not fit its network: {first_line(exc)}"
        ) from None
    return generator.eval()


def align_ffhq(size: int) -> Any:
    """SimSwap 512's FFHQ template scaled to ``size``."""

    def align(keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        m = align_ffhq_512(keypoints)
        return m * (size / 512.0)

    return align


class StyleSwapEngine(NeuralEngine):
    name = "styleswap"

    def __init__(self, cfg: Config) -> None:
        store = ModelStore(model_dir(cfg.models.dir))
        self.model = find_trained(store, "styleswap", cfg.engine.model)
        state, digest = load_trained(store, self.model)
        generator = build_styleswap(self.model, state)
        arcface_path = store.require(self.model.identity_encoder)
        self.crop = self.model.resolution
        self.align = align_ffhq(self.crop)
        self.spec = resolve_spec(cfg.engine)
        self.device = self.spec.device
        cache = store.folder / "cache"
        self.mix_weights = tuple(cfg.engine.style_mix)
        mixing = "-".join(f"{w:g}" for w in self.mix_weights) or "none"
        self.generator = build_runner(
            StyleSwapRunner(generator, self.mix_weights),
            self.spec,
            crop=self.crop,
            cache_dir=cache,
            cache_key=f"styleswap-{self.model.name}-{digest[:16]}-mix{mixing}",
            latent_size=2 * generator.config.identity_dim,
        )
        self.arcface = load_arcface(cache, arcface_path).to(self.device).eval()
        self.embeddings = EmbeddingCache(
            cache, f"arcface-{sha256_of(arcface_path)[:16]}-ffhq{self.crop}", self._encode
        )
        self.box_alpha = crop_box_alpha(self.crop)
        self._start(cfg)

    def _encode(self, image: Image, keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # The identity as livswap train computes it: the model's own FFHQ crop, then ArcFace.
        return arcface_embedding(self.arcface, image, self.align(keypoints), self.crop)

    def latent(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.concatenate([embedding, embedding])[None]

    def mixed_latent(
        self, base: npt.NDArray[np.float32], other: npt.NDArray[np.float32], weight: float
    ) -> npt.NDArray[np.float32]:
        """With ``[engine] style_mix`` set, both identities side by side: the generator puts
        the mix into the levels it names (per-layer mixing in style space). Otherwise the
        embeddings are blended, as the other neural engines do."""
        if not any(self.mix_weights):
            return super().mixed_latent(base, other, weight)
        return np.concatenate([base, other])[None].astype(np.float32)

    def placement(self, face: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        m = self.align(face.keypoints)
        return m, outline_alpha(face, m, self.crop, self.box_alpha)
