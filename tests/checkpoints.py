"""Weight files in the exact official formats, generated with a fixed seed (random weights)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

from livswap.engine.models.arcface import ArcFace, IRBlock, SEBlock
from livswap.engine.models.simswap import SimSwapGenerator


def write_simswap_224(path: Path, seed: int = 0) -> Path:
    """Like ``latest_net_G.pth``: torch.save of the generator's state dict."""
    torch.manual_seed(seed)
    torch.save(SimSwapGenerator("224").state_dict(), path)
    return path


def write_release_arcface(path: Path, seed: int = 0) -> Path:
    """Like ``arcface_checkpoint.tar``: torch.save of the whole module, whose classes pickle as
    ``models.arcface_models.{ResNet, IRBlock, SEBlock}``."""
    torch.manual_seed(seed)
    model = ArcFace()
    fake = types.ModuleType("models.arcface_models")
    saved = {name: sys.modules.get(name) for name in ("models", "models.arcface_models")}
    sys.modules["models"] = types.ModuleType("models")
    sys.modules["models.arcface_models"] = fake
    classes: dict[type, type] = {}
    for cls, name in ((ArcFace, "ResNet"), (IRBlock, "IRBlock"), (SEBlock, "SEBlock")):
        release_cls = type(name, (cls,), {"__module__": "models.arcface_models"})
        setattr(fake, name, release_cls)
        classes[cls] = release_cls
    try:
        for sub in model.modules():
            if type(sub) in classes:
                sub.__class__ = classes[type(sub)]
        torch.save(model, path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path
