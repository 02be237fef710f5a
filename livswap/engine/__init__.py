"""Swap engines, chosen by name (``--engine``, ``[engine] name``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from livswap.config import Config
from livswap.engine.base import Engine, EngineStream, Identity, MixingEngine
from livswap.engine.passthrough import PassthroughEngine
from livswap.errors import EngineError

__all__ = [
    "ENGINES",
    "Engine",
    "EngineSpec",
    "EngineStream",
    "Identity",
    "MixingEngine",
    "create_engine",
    "engine_names",
    "missing_for",
]


@dataclass(frozen=True)
class EngineSpec:
    """An engine's name, what it is, how it is built and what it can do: the one place the
    pipeline, the CLI and the server look up an engine's capabilities."""

    name: str
    summary: str
    factory: Callable[[Config], Engine]
    needs_source: bool  # a source photo is required (--source)
    needs_faces: bool = True  # frames are tracked before the swap
    can_mix: bool = False  # a second identity can be blended in (--source-mix)
    models: tuple[str, ...] = ()  # model files it loads (registry names)
    packages: tuple[tuple[str, str], ...] = ()  # (module, how to install it) it imports
    trained: str = ""  # the architecture of the `livswap train` model it runs ("" = none)


def missing_for(spec: EngineSpec, cfg: Config) -> list[str]:
    """What engine ``spec`` lacks on this machine, each with the command that brings it;
    empty when it is ready to run."""
    import importlib.util

    from livswap.models import ModelStore, model_dir

    missing = []
    if spec.models:
        store = ModelStore(model_dir(cfg.models.dir))
        for model in spec.models:
            status = store.status(model)
            if not status.present:
                missing.append(f"model {model} (livswap models fetch {model})")
            elif status.problem:
                missing.append(f"model {model}: {status.problem} (livswap models fetch {model})")
    if spec.trained:
        from livswap.models.trained import trained_models

        if not trained_models(ModelStore(model_dir(cfg.models.dir)), spec.trained):
            missing.append(
                f"a trained {spec.trained} model (livswap train --arch {spec.trained} "
                "--data DIR --name NAME)"
            )
    for module, install in spec.packages:
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} ({install})")
    return missing


_ONNX = ("onnxruntime", "pip install 'livswap[onnx]'")


def _passthrough(cfg: Config) -> Engine:
    return PassthroughEngine()


def _simswap_224(cfg: Config) -> Engine:
    from livswap.engine.simswap import SimSwapEngine

    return SimSwapEngine(cfg)


def _simswap_512(cfg: Config) -> Engine:
    from livswap.engine.simswap import SimSwapEngine

    return SimSwapEngine(cfg, name="simswap-512")


def _inswapper_128(cfg: Config) -> Engine:
    from livswap.engine.inswapper import InswapperEngine

    return InswapperEngine(cfg)


def _styleswap(cfg: Config) -> Engine:
    from livswap.engine.styleswap import StyleSwapEngine

    return StyleSwapEngine(cfg)


def _mesh(cfg: Config) -> Engine:
    from livswap.engine.mesh.engine import MeshEngine

    return MeshEngine(cfg.engine, cfg.compose)


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec(
            "passthrough",
            "no swap (measures the pipeline; a safe fallback)",
            _passthrough,
            needs_source=False,
            needs_faces=False,
        ),
        EngineSpec(
            "mesh",
            "built-in landmark-driven swap; CPU, no download",
            _mesh,
            needs_source=True,
        ),
        EngineSpec(
            "simswap-224",
            "SimSwap 224 on your imported weights (non-commercial licence)",
            _simswap_224,
            needs_source=True,
            can_mix=True,
            models=("simswap-224", "arcface-simswap"),
        ),
        EngineSpec(
            "simswap-512",
            "SimSwap 512 (beta) on your imported weights (non-commercial licence)",
            _simswap_512,
            needs_source=True,
            can_mix=True,
            models=("simswap-512", "arcface-simswap"),
        ),
        EngineSpec(
            "inswapper-128",
            "InsightFace inswapper_128 via ONNX Runtime on your files (non-commercial licence)",
            _inswapper_128,
            needs_source=True,
            can_mix=True,
            models=("inswapper-128", "w600k-r50"),
            packages=(
                ("onnxruntime", "pip install 'livswap[onnx]'"),
                ("onnx", "pip install 'livswap[onnx]'"),
            ),
        ),
        EngineSpec(
            "styleswap",
            "StyleSwap generator you trained with `livswap train` (your data, your licence)",
            _styleswap,
            needs_source=True,
            can_mix=True,
            models=("arcface-simswap",),
            trained="styleswap",
        ),
    )
}


def engine_names() -> list[str]:
    return list(ENGINES)


def create_engine(cfg: Config) -> Engine:
    """Build the engine ``cfg.engine.name`` names; :class:`EngineError` lists the known ones."""
    spec = ENGINES.get(cfg.engine.name)
    if spec is None:
        raise EngineError(
            f"unknown engine {cfg.engine.name!r}; available: {', '.join(engine_names())}"
        )
    return spec.factory(cfg)
