"""inswapper_128 rebuilt in PyTorch: its weights load from an ONNX file with the release's
structure, and the rebuilt module reproduces ONNX Runtime's output on that file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from livswap.engine.models.inswapper import (
    AdaptiveInstanceNorm,
    InswapperGenerator,
    load_inswapper_onnx,
)
from livswap.errors import ModelError
from tests.checkpoints import (
    build_small_inswapper,
    inswapper_test_emap,
    write_inswapper_torch_onnx,
)

ort = pytest.importorskip("onnxruntime")

PUBLISHED_PARAMETERS = 138.3e6


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inswapper") / "inswapper_128.onnx"
    return write_inswapper_torch_onnx(path, seed=3, eps=1e-6)


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(1, 3, 128, 128, generator=generator)
    latent = torch.nn.functional.normalize(torch.randn(1, 512, generator=generator))
    return target, latent


def _run_ort(path: Path, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [
        np.asarray(session.run(None, {"target": t.numpy(), "source": z.numpy()})[0])
        for t, z in inputs
    ]


@pytest.mark.parametrize(
    ("widths", "blocks", "eps", "encoder_padding", "decoder_padding"),
    [
        ((8, 16, 16, 32), 2, 1e-6, "zeros", "zeros"),  # the small_file fixture
        ((4, 8, 16, 8), 1, 1e-8, "reflect", "reflect"),
    ],
)
def test_rebuilt_module_matches_onnx_runtime_on_the_file(
    small_file: Path,
    tmp_path: Path,
    widths: tuple[int, int, int, int],
    blocks: int,
    eps: float,
    encoder_padding: str,
    decoder_padding: str,
) -> None:
    seed = 3
    path = small_file
    if encoder_padding != "zeros":
        path = write_inswapper_torch_onnx(
            tmp_path / "inswapper_128.onnx",
            seed,
            widths,
            blocks,
            eps,
            encoder_padding,
            decoder_padding,
        )
    model, _ = load_inswapper_onnx(path)
    assert model.widths == widths and len(model.blocks) == blocks
    assert (model.encoder_padding, model.decoder_padding) == (encoder_padding, decoder_padding)
    assert model.eps == pytest.approx(eps, rel=1e-6)  # stored as float32 in the graph
    original = build_small_inswapper(seed, widths, blocks, eps, encoder_padding, decoder_padding)
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name

    inputs = [_inputs(0), _inputs(1)]
    for (target, latent), expected in zip(inputs, _run_ort(path, inputs), strict=True):
        with torch.no_grad():
            rebuilt = model(target, latent).numpy()
        assert rebuilt.shape == expected.shape == (1, 3, 128, 128)
        assert float(np.abs(rebuilt - expected).max()) < 1e-4
        assert float(rebuilt.min()) >= 0.0 and float(rebuilt.max()) <= 1.0


def test_loader_reads_eps_and_returns_emap(small_file: Path) -> None:
    model, emap = load_inswapper_onnx(small_file)
    assert model.eps == float(np.float32(1e-6))
    norms = [m for m in model.modules() if isinstance(m, AdaptiveInstanceNorm)]
    assert len(norms) == 4 and all(norm.eps == model.eps for norm in norms)
    assert emap.dtype == np.float32 and emap.shape == (512, 512)
    np.testing.assert_array_equal(emap, inswapper_test_emap(3).numpy())
    assert not model.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_full_size_matches_the_published_parameter_count() -> None:
    with torch.device("meta"):
        model = InswapperGenerator()
    count = sum(p.numel() for p in model.parameters())
    assert count == 138_292_739  # the spec's count for this reconstruction
    assert abs(count - PUBLISHED_PARAMETERS) / PUBLISHED_PARAMETERS < 0.005
    assert len(model.conv_layers()) == 20 and len(model.style_layers()) == 12
    assert model.style_layers()[0].weight.shape == (2048, 512)
    # Spatial sizes do not depend on the widths: a width-1 copy checks 128 -> 32x32 -> 128.
    tiny = InswapperGenerator(widths=(1, 1, 1, 1), blocks=1)
    with torch.no_grad():
        features = tiny.encoder(torch.zeros(1, 3, 128, 128))
        out = tiny(torch.zeros(1, 3, 128, 128), torch.zeros(1, 512))
    assert tuple(features.shape[2:]) == (32, 32)
    assert tuple(out.shape) == (1, 3, 128, 128)


def _rewrite(source: Path, target: Path, change: Callable[[onnx.ModelProto], None]) -> Path:
    proto = onnx.load(str(source))
    change(proto)
    onnx.save(proto, str(target))
    return target


def _drop_initializer(name: str) -> Callable[[onnx.ModelProto], None]:
    def change(proto: onnx.ModelProto) -> None:
        kept = [t for t in proto.graph.initializer if t.name != name]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(kept)

    return change


def _replace_initializer(name: str, value: np.ndarray) -> Callable[[onnx.ModelProto], None]:
    def change(proto: onnx.ModelProto) -> None:
        index = next(i for i, t in enumerate(proto.graph.initializer) if t.name == name)
        proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, name))

    return change


def _drop_last_conv(proto: onnx.ModelProto) -> None:
    last = max(i for i, n in enumerate(proto.graph.node) if n.op_type == "Conv")
    del proto.graph.node[last]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_drop_initializer("blocks.1.conv2.weight"), "'blocks.1.conv2.weight' is not an init"),
        (_drop_initializer("emap"), "no unused 512x512 one: no emap"),
        (
            _replace_initializer("emap", np.zeros((512, 256), np.float32)),
            "no unused 512x512 one: no emap",
        ),
        (
            _replace_initializer("blocks.0.conv1.weight", np.zeros((32, 32, 1, 1), np.float32)),
            "blocks.0.conv1) has weight/bias shapes",
        ),
        (
            _replace_initializer("blocks.1.norm2.style.weight", np.zeros((64, 256), np.float32)),
            "style layer #3",
        ),
        (_drop_last_conv, "found 11 Conv and 4 Gemm/MatMul layers"),
    ],
    ids=["missing-weight", "no-emap", "emap-shape", "conv-shape", "style-shape", "conv-count"],
)
def test_malformed_files_raise_model_error_naming_the_file(
    small_file: Path, tmp_path: Path, change: Callable[[onnx.ModelProto], None], message: str
) -> None:
    broken = _rewrite(small_file, tmp_path / "broken_inswapper.onnx", change)
    with pytest.raises(ModelError) as caught:
        load_inswapper_onnx(broken)
    assert str(broken) in str(caught.value)
    assert message in str(caught.value)


def test_missing_and_garbage_files_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such inswapper model file"):
        load_inswapper_onnx(tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff not a protobuf \xff" * 50)
    with pytest.raises(ModelError, match=r"garbage\.onnx"):
        load_inswapper_onnx(garbage)


def test_matmul_add_and_untransposed_gemm_forms_load_the_same(
    small_file: Path, tmp_path: Path
) -> None:
    """Other exporters write Linear as Gemm(transB=0) or as MatMul + Add; both must load."""

    def gemm_to_matmul_add(proto: onnx.ModelProto) -> None:
        nodes = list(proto.graph.node)
        gemms = [n for n in nodes if n.op_type == "Gemm"]
        weights = {t.name: t for t in proto.graph.initializer}
        for number, gemm in enumerate(gemms):
            weight = weights[gemm.input[1]]
            weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).T, weight.name))
            if number % 2:  # half as transB=0 Gemm, half as MatMul + Add
                for attr in gemm.attribute:
                    if attr.name == "transB":
                        attr.i = 0
                continue
            product = gemm.output[0] + "_product"
            matmul = onnx.helper.make_node("MatMul", list(gemm.input[:2]), [product])
            add = onnx.helper.make_node("Add", [product, gemm.input[2]], list(gemm.output))
            index = nodes.index(gemm)
            nodes[index : index + 1] = [matmul, add]
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)

    rewritten = _rewrite(small_file, tmp_path / "matmul_inswapper.onnx", gemm_to_matmul_add)
    reference, _ = load_inswapper_onnx(small_file)
    model, _ = load_inswapper_onnx(rewritten)
    target, latent = _inputs(2)
    with torch.no_grad():
        rebuilt = model(target, latent).numpy()
        np.testing.assert_allclose(rebuilt, reference(target, latent).numpy(), atol=1e-6)
    assert float(np.abs(rebuilt - _run_ort(rewritten, [(target, latent)])[0]).max()) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_module_stays_close_and_finite(small_file: Path, dtype: torch.dtype) -> None:
    model, _ = load_inswapper_onnx(small_file)
    target, latent = _inputs(4)
    target = target[:, :, :48, :48]  # fully convolutional; CPU half convs are slow at 128
    flat = target.clone()
    flat[:, 1] = 0.5  # a constant channel
    uniform = torch.full_like(target, 0.25)  # every conv output constant: zero variance
    with torch.no_grad():
        references = [model(t, latent) for t in (target, flat, uniform)]
        half = model.to(dtype)
        try:
            outputs = [half(t.to(dtype), latent).float() for t in (target, flat, uniform)]
        except RuntimeError as exc:  # pragma: no cover - depends on the CPU kernels built in
            pytest.skip(f"{dtype} convolution is not available on this CPU build: {exc}")
    for reference, output in zip(references, outputs, strict=True):
        assert output.dtype == torch.float32 and bool(torch.isfinite(output).all())
        assert float((output - reference).abs().max()) < 0.05


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_norm_statistics_stay_fp32_so_a_constant_channel_is_not_nan(dtype: torch.dtype) -> None:
    norm = AdaptiveInstanceNorm(channels=4, latent_size=8, eps=1e-8).to(dtype)
    constant = torch.full((1, 4, 8, 8), 3.0, dtype=dtype)
    with torch.no_grad():
        out = norm(constant, torch.randn(1, 8))
    assert out.dtype == dtype and bool(torch.isfinite(out).all())


def test_constructor_rejects_bad_settings_quoting_them() -> None:
    with pytest.raises(ValueError, match=r"got \(8, 16\)"):
        InswapperGenerator(widths=(8, 16))
    with pytest.raises(ValueError, match="got 0"):
        InswapperGenerator(widths=(4, 4, 4, 4), blocks=0)
    with pytest.raises(ValueError, match="got 'circular'"):
        InswapperGenerator(widths=(4, 4, 4, 4), encoder_padding="circular")  # type: ignore[arg-type]


def test_emap_is_found_by_name_though_another_square_matrix_follows_it(
    small_file: Path, tmp_path: Path
) -> None:
    """Re-saved and batched variants of the release carry one more 512x512 tensor after the
    emap: the emap is then taken by its name (``buff2fs``), by the ONNX Runtime path and the
    PyTorch rebuild alike."""
    from livswap.engine.inswapper import _emap

    model = onnx.load(str(small_file))
    emap = next(t for t in model.graph.initializer if t.name == "emap")
    emap.name = "buff2fs"
    decoy = numpy_helper.from_array(np.eye(512, dtype=np.float32), "after_the_emap")
    model.graph.initializer.append(decoy)
    variant = tmp_path / "inswapper_128.onnx"
    onnx.save(model, str(variant))
    expected = inswapper_test_emap(3).numpy()
    np.testing.assert_array_equal(_emap(variant), expected)
    np.testing.assert_array_equal(load_inswapper_onnx(variant)[1], expected)
