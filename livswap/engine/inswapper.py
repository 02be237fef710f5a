"""The ``inswapper-128`` engine: InsightFace's inswapper_128 through ONNX Runtime, with the
w600k_r50 ArcFace for the source identity, on the user's own model files.

Alignment and the latent follow InsightFace's own inference (arcface template, ``n @ emap``);
the generator is batched across streams and compose pastes the faces back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from livswap.compose import feather
from livswap.config import Config
from livswap.engine.backends import build_runner, onnx_runner, resolve_spec
from livswap.engine.identity import EmbeddingCache
from livswap.engine.models.inswapper import emap_tensor, load_inswapper_onnx
from livswap.engine.neural import NeuralEngine
from livswap.engine.onnx import ort_session
from livswap.engine.simswap import _similarity
from livswap.errors import ModelError
from livswap.frame import Image
from livswap.models import ModelStore, model_dir
from livswap.models.download import sha256_of
from livswap.models.safety import check_onnx

__all__ = ["InswapperEngine", "arcface_transform"]

# InsightFace's arcface_dst (112 px): left eye, right eye, nose, left and right mouth corner.
ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    np.float64,
)
SWAP_SIZE = 128


def arcface_transform(keypoints: npt.NDArray[np.float32], size: int) -> npt.NDArray[np.float64]:
    """2x3 frame -> crop transform (``norm_crop2``): 112 uses the template, 128 shifts x by +8."""
    template = ARCFACE_112 * (size / 112 if size % 112 == 0 else size / 128)
    if size % 128 == 0:
        template = template + np.array([8.0 * size / 128, 0.0])
    return _similarity(keypoints.astype(np.float64), template)


def _emap(path: Path) -> npt.NDArray[np.float32]:
    """The projection matrix (not a network input): by its name where the graph has it, else
    the last unused 512x512 initializer (:func:`emap_tensor`)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    names = {i.name for i in model.graph.input}
    if not {"target", "source"} <= names:
        raise ModelError(
            f"model inswapper-128: inputs are {sorted(names)}, expected 'target' and 'source'"
        )
    tensor = emap_tensor(model)
    if tensor is None:
        raise ModelError(
            "model inswapper-128: no initializer named 'buff2fs' and no unused 512x512 one: no emap"
        )
    emap: npt.NDArray[np.float32] = numpy_helper.to_array(tensor).astype(np.float32)
    return emap


class InswapperEngine(NeuralEngine):
    """inswapper_128 on the user's files. ``[engine] backend`` "auto" runs the ONNX file itself
    through ONNX Runtime; "eager", "compile" and "tensorrt" run the same network rebuilt in
    PyTorch from the file's weights (the compiled GPU path)."""

    name = "inswapper-128"
    crop = SWAP_SIZE

    def __init__(self, cfg: Config) -> None:
        store = ModelStore(model_dir(cfg.models.dir))
        swapper_path = store.require("inswapper-128")
        encoder_path = store.require("w600k-r50")
        # The same gate as at import: a file replaced in the model folder since is checked too.
        check_onnx(swapper_path, "model inswapper-128", ("target", "source"))
        check_onnx(encoder_path, "model w600k-r50")
        self.spec = resolve_spec(cfg.engine, default_backend="onnxruntime")
        self.device = self.spec.device
        cache = store.folder / "cache"
        if self.spec.backend == "onnxruntime":
            self.emap = _emap(swapper_path)
            self.generator = onnx_runner(swapper_path, self.spec, SWAP_SIZE, 512)
        else:
            network, self.emap = load_inswapper_onnx(swapper_path)
            self.generator = build_runner(
                network,
                self.spec,
                crop=SWAP_SIZE,
                cache_dir=cache,
                cache_key=f"inswapper-128-{sha256_of(swapper_path)[:16]}",
            )
        self.encoder = ort_session(encoder_path, self.device, "model w600k-r50")
        self.encoder_input = self.encoder.inputs()[0].name
        self.encoder.expect_output(
            {self.encoder_input: np.zeros((1, 3, 112, 112), np.float32)}, (1, 512)
        )
        self.embeddings = EmbeddingCache(
            store.folder / "cache", "w600k-" + sha256_of(encoder_path)[:16], self._encode
        )
        # InsightFace's paste-back mask in crop space (the crop eroded by a tenth, blurred): the
        # same for every face, so built once.
        box = np.zeros((SWAP_SIZE, SWAP_SIZE), np.uint8)
        inset = SWAP_SIZE // 10
        box[inset:-inset, inset:-inset] = 255
        self.box_alpha = feather(box, SWAP_SIZE / 20).astype(np.float32)
        self._start(cfg)

    def _encode(self, image: Image, keypoints: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        crop = cv2.warpAffine(image, arcface_transform(keypoints, 112), (112, 112))
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        outputs = self.encoder.run({self.encoder_input: blob})
        embedding: npt.NDArray[np.float32] = np.asarray(outputs[0][0], np.float32)
        return embedding

    def latent(self, embedding: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """InsightFace's latent: the normalised embedding through ``emap``, normalised again."""
        latent: npt.NDArray[np.float32] = embedding[None] @ self.emap
        return latent / max(float(np.linalg.norm(latent)), 1e-12)

    def placement(self, face: Any) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        return arcface_transform(face.keypoints, SWAP_SIZE), self.box_alpha
