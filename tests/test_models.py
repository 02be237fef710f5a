"""Model files: generators in the official formats, safe loading, and resumable downloads
against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import pickle
import subprocess
import sys
import threading
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from livswap.engine.models.simswap import SimSwapGenerator, load_simswap
from livswap.errors import ModelError
from livswap.models import ModelStore, get_spec
from livswap.models.download import download, sha256_of
from livswap.models.safety import check_pickled_module
from tests.hostile import (
    MEMO_SYSTEM_PICKLE,
    PREFIXED_MODULE_PICKLE,
    write_lying_archive,
    write_pickle_bomb,
    write_pickle_zip,
)


@pytest.fixture(scope="module")
def simswap_224_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 224 generator saved exactly as the release is: torch.save(state_dict)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "latest_net_G.pth"
    torch.save(SimSwapGenerator("224").state_dict(), path)
    return path


def test_generators_match_the_official_key_sets_and_sizes() -> None:
    expected = {"224": (123, 55_051_779), "512": (137, 55_079_427), "deep": (137, None)}
    for variant, (keys, params) in expected.items():
        model = SimSwapGenerator(variant)  # type: ignore[arg-type]
        state = model.state_dict()
        assert len(state) == keys, variant
        if params is not None:
            assert sum(p.numel() for p in model.parameters()) == params
    state = SimSwapGenerator("224").state_dict()
    assert list(state)[:2] == ["first_layer.1.weight", "first_layer.1.bias"]
    assert state["BottleNeck.8.style2.linear.weight"].shape == (1024, 512)
    assert state["last_layer.1.weight"].shape == (3, 64, 7, 7)


def test_generator_runs_and_keeps_norm_statistics_in_fp32() -> None:
    torch.manual_seed(1)
    model = SimSwapGenerator("224").eval()
    target = torch.rand(1, 3, 64, 64)  # fully convolutional: a small crop tests the same maths
    latent = nn.functional.normalize(torch.randn(1, 512))
    with torch.no_grad():
        ref = model(target, latent)
        half = model.to(torch.bfloat16)(target.bfloat16(), latent.bfloat16()).float()
    assert ref.shape == (1, 3, 64, 64) and float(ref.min()) >= 0 and float(ref.max()) <= 1
    rel = float((half - ref).norm() / ref.norm())
    assert rel < 0.05, rel


def test_import_verify_and_tampering(simswap_224_file: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    dest = store.import_file("simswap-224", simswap_224_file)
    model = load_simswap(torch.load(dest, weights_only=True), "t")
    assert model.variant == "224"
    assert [s.problem for s in store.verify(["simswap-224"])] == [None]
    assert store.require("simswap-224") == dest
    data = bytearray(dest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    dest.write_bytes(bytes(data))
    problem = store.verify(["simswap-224"])[0].problem
    assert problem is not None and "modified" in problem
    dest.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    problem = store.status("simswap-224").problem
    assert problem is not None and "truncated" in problem
    with pytest.raises(ModelError, match=r"simswap-224 at .*truncated"):
        store.require("simswap-224")


def test_missing_model_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"livswap models fetch inswapper-128.*import inswapper-128"
    ):
        ModelStore(tmp_path).require("inswapper-128")


def test_strict_loading_rejects_wrong_files(simswap_224_file: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m")
    state = torch.load(simswap_224_file, weights_only=True)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("up1.")}, partial)
    with pytest.raises(ModelError, match="missing 6 SimSwap 224 tensors"):
        store.import_file("simswap-224", partial)
    wrong = tmp_path / "512.pth"
    torch.save(SimSwapGenerator("512").state_dict(), wrong)
    with pytest.raises(ModelError, match="SimSwap 512 generator, expected 224"):
        store.import_file("simswap-224", wrong)
    whole = tmp_path / "module.pth"
    torch.save(SimSwapGenerator("224"), whole)  # a pickled module, not a state dict
    with pytest.raises(ModelError, match="not a loadable PyTorch state dict"):
        store.import_file("simswap-224", whole)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(simswap_224_file.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="not a loadable PyTorch state dict"):
        store.import_file("simswap-224", truncated)
    assert not (tmp_path / "m" / "simswap_224_latest_net_G.pth").exists()


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch EVIL_RAN",))


def _torch_zip(path: Path, payload: object) -> Path:
    """A file laid out like torch.save's archive, holding ``payload`` as its data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("archive/version", "3\n")
    return path


def test_pickles_that_would_run_code_are_refused_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    evil = _torch_zip(tmp_path / "arcface_checkpoint.tar", _Evil())
    with pytest.raises(ModelError, match=r"refers to '(posix|os)\.system'"):
        check_pickled_module(evil, "model arcface-simswap")
    with pytest.raises(ModelError, match="could run code"):
        ModelStore(tmp_path / "m").import_file("arcface-simswap", evil)
    with pytest.raises(ModelError, match="not a loadable"):
        ModelStore(tmp_path / "m").import_file("simswap-224", evil)
    assert not (tmp_path / "EVIL_RAN").exists()


def test_whole_module_arcface_checkpoint_is_accepted(tmp_path: Path) -> None:
    """Built like the release: torch.save of a module with classes in models.arcface_models."""
    mod = types.ModuleType("models.arcface_models")
    sys.modules.setdefault("models", types.ModuleType("models"))
    sys.modules["models.arcface_models"] = mod

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.bn1 = nn.BatchNorm2d(8)

    ResNet.__module__ = "models.arcface_models"
    ResNet.__qualname__ = "ResNet"
    mod.ResNet = ResNet  # type: ignore[attr-defined]
    try:
        path = tmp_path / "arcface_checkpoint.tar"
        torch.save(ResNet(), path)
    finally:
        del sys.modules["models.arcface_models"]
    classes = check_pickled_module(path, "model arcface-simswap")
    assert "models.arcface_models.ResNet" in classes
    dest = ModelStore(tmp_path / "m").import_file("arcface-simswap", path)
    assert dest.name == get_spec("arcface-simswap").filename


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves ``payloads`` with Range support; ``cut_once`` drops the connection mid-way once."""

    payloads: ClassVar[dict[str, bytes]] = {}
    cut_once: ClassVar[set[str]] = set()
    ranges: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        data = self.payloads.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header:
            self.ranges.append(header)
            start = int(header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.path in self.cut_once:
            self.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture()
def http_files() -> Iterator[tuple[str, type[_Files]]]:
    _Files.payloads, _Files.cut_once, _Files.ranges = {}, set(), []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files
    server.shutdown()


def test_download_resumes_after_an_interruption(
    http_files: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    url, files = http_files
    data = bytes(range(256)) * 8000
    files.payloads["/w.bin"] = data
    files.cut_once.add("/w.bin")
    dest = tmp_path / "w.bin"
    with pytest.raises(ModelError, match="run the same command again to resume"):
        download([url + "/w.bin"], dest, label="w")
    assert not dest.exists() and (tmp_path / "w.bin.part").exists()
    digest = download([url + "/w.bin"], dest, label="w")
    assert dest.read_bytes() == data and digest == sha256_of(dest)
    assert files.ranges and files.ranges[-1].startswith("bytes=") and files.ranges[-1] != "bytes=0-"
    assert not (tmp_path / "w.bin.part").exists()


def test_download_hash_mismatch_leaves_nothing(
    http_files: tuple[str, type[_Files]], tmp_path: Path
) -> None:
    url, files = http_files
    files.payloads["/w.bin"] = b"x" * 5000
    with pytest.raises(ModelError, match="sha256 mismatch"):
        download([url + "/w.bin"], tmp_path / "w.bin", sha256="0" * 64, label="w")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="HTTP 404"):
        download([url + "/missing"], tmp_path / "x.bin", label="x")


def test_fetch_extracts_the_generator_from_a_release_zip(
    http_files: tuple[str, type[_Files]], simswap_224_file: Path, tmp_path: Path
) -> None:
    url, files = http_files
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(simswap_224_file, "checkpoints/people/latest_net_G.pth")
    files.payloads["/checkpoints.zip"] = buffer.getvalue()
    store = ModelStore(tmp_path / "models")
    path = store.fetch(
        "simswap-224", urls=("http://127.0.0.1:9/unreachable", url + "/checkpoints.zip")
    )
    assert sha256_of(path) == sha256_of(simswap_224_file)
    assert store.verify(["simswap-224"])[0].problem is None


def test_models_cli(simswap_224_file: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ndir = "{tmp_path / "models"}"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "livswap", "models", "--config", str(cfg), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert "not installed" in run("list").stdout
    result = run("import", "simswap-224", str(simswap_224_file))
    assert result.returncode == 0, result.stderr
    assert "installed" in run("list").stdout
    assert run("verify").returncode == 0
    bad = run("import", "simswap-512", str(simswap_224_file))
    assert bad.returncode == 2 and "expected 512" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "secret.bin"])
def test_onnx_files_with_external_tensors_are_refused(location: str, tmp_path: Path) -> None:
    """Before: imported as valid, and at load livswap's own reader opened secret.bin from the
    current folder. Now refused at import, naming the tensor and where it points."""
    import onnx
    from onnx.external_data_helper import set_external_data

    from tests.checkpoints import write_inswapper_onnx

    path = write_inswapper_onnx(tmp_path / "inswapper_128.onnx")
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    set_external_data(tensor, location=location)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    onnx.save(model, str(path))
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="another file") as caught:
        store.import_file("inswapper-128", path)
    assert location in str(caught.value) and "\n" not in str(caught.value)
    assert not (store.folder / "inswapper_128.onnx").exists()


@pytest.mark.parametrize(
    "payload",
    [MEMO_SYSTEM_PICKLE, PREFIXED_MODULE_PICKLE],
    ids=["memo-global", "torch-prefixed-module"],
)
def test_pickles_that_fooled_the_opcode_scan_are_refused_unrun(
    payload: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: passed the scan at `livswap models import arcface-simswap` and was recorded as
    installed. Now the one restricted unpickler (import and conversion alike) refuses it."""
    monkeypatch.chdir(tmp_path)
    evil = write_pickle_zip(tmp_path / "arcface_checkpoint.tar", payload)
    store = ModelStore(tmp_path / "m")
    with pytest.raises(ModelError, match="could run code"):
        store.import_file("arcface-simswap", evil)
    assert not (tmp_path / "EVIL_RAN").exists()
    assert not store.status("arcface-simswap").present


def test_a_pickle_that_inflates_to_gigabytes_is_refused_early(tmp_path: Path) -> None:
    """Before: a 3.1 MB .pth whose data.pkl inflates to 3 GiB took 6.4 GB before it was
    refused. Now the pickle is read in chunks under a 64 MiB cap."""
    import psutil

    bomb = write_pickle_bomb(tmp_path / "latest_net_G.pth", 300)  # a few hundred KB on disk
    assert bomb.stat().st_size < 2 * 2**20
    before = psutil.Process().memory_info().rss
    for name in ("simswap-224", "arcface-simswap"):
        with pytest.raises(ModelError, match=r"inflates past 64 MiB|declares 300 MiB"):
            ModelStore(tmp_path / "m").import_file(name, bomb)
    assert psutil.Process().memory_info().rss - before < 200 * 2**20


@pytest.mark.parametrize("declared", ["smaller", "larger"])
def test_a_member_that_lies_about_its_size_is_refused(declared: str, tmp_path: Path) -> None:
    """Before: an ArcFace checkpoint whose weight member's recorded size was false was imported
    for arcface-simswap. Now every member is inflated and counted against its record."""
    from tests.checkpoints import write_release_arcface

    honest = write_release_arcface(tmp_path / "honest.tar")
    liar = write_lying_archive(honest, tmp_path / "arcface_checkpoint.tar", declared)  # type: ignore[arg-type]
    store = ModelStore(tmp_path / "m")
    with pytest.raises(ModelError, match=r"damaged archive|declares .* but holds"):
        store.import_file("arcface-simswap", liar)
    assert not store.status("arcface-simswap").present
