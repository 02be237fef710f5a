"""Model files: the registry, safe downloads and the local model folder."""

from livswap.models.registry import REGISTRY, ModelSpec, get_spec, model_dir
from livswap.models.store import ModelStatus, ModelStore

__all__ = ["REGISTRY", "ModelSpec", "ModelStatus", "ModelStore", "get_spec", "model_dir"]
