"""The device frame path (plain PyTorch) against OpenCV's CPU paste-back, and the per-stream
logic around it: fades in and out, interleaved streams, several faces per frame. Runs on the CPU
here exactly as on CUDA (same code, ``device="cpu"``), and on CUDA too where there is one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from livswap.compose import Compositor, feather, paste_on_cpu
from livswap.config import Config, load_config
from livswap.cuda import DeviceFramePath, crop_face, describe_gpus
from livswap.engine.base import Identity
from livswap.engine.neural import Latent, NeuralEngine
from livswap.engine.simswap import align_224
from livswap.frame import Frame, SwappedFace
from livswap.track import Face, detect_faces

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def invert(crop: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """A generator whose output is easy to predict: the photographic negative of each crop."""
    return 1.0 - crop


def oval_alpha() -> np.ndarray:
    box = np.zeros((224, 224), np.uint8)
    cv2.ellipse(box, (112, 120), (80, 100), 0, 0, 360, (255,), -1)
    return feather(box, 8.0)


class InvertingEngine(NeuralEngine):
    """The neural engines' shared machinery (streams, batching, device path, fades) around the
    predictable generator above, so what each stream pastes can be checked exactly."""

    name = "simswap-224"
    crop = 224

    def __init__(self, cfg: Config, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.generator = invert  # type: ignore[assignment]
        self.alpha = oval_alpha()
        self._start(cfg)

    def placement(self, face: Face) -> tuple[np.ndarray, np.ndarray]:
        return align_224(face.keypoints), self.alpha


def identity(device: str = "cpu") -> Identity:
    return Identity("simswap-224", "test", Latent(torch.zeros(1, 512, device=device)))


@pytest.mark.parametrize("device", DEVICES)
def test_crop_matches_opencv(astronaut_image: np.ndarray, device: str) -> None:
    m = np.asarray(cv2.getRotationMatrix2D((260, 200), 17.0, 1.7), np.float64)
    m[:, 2] -= (150, 90)
    expected = cv2.warpAffine(astronaut_image, m, (224, 224), flags=cv2.INTER_LINEAR)
    frame = torch.from_numpy(astronaut_image).permute(2, 0, 1).float().to(device)
    got = crop_face(frame, m, 224)[0].permute(1, 2, 0).round().cpu().numpy()
    diff = np.abs(got - expected.astype(np.float32))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 2, (diff.mean(), diff.max())


@pytest.mark.parametrize("device", DEVICES)
def test_device_paste_matches_the_cpu_paste(hopper_image: np.ndarray, device: str) -> None:
    m = align_224(detect_faces(hopper_image)[0].keypoints)
    crop = cv2.warpAffine(hopper_image, m, (224, 224), flags=cv2.INTER_LINEAR)
    face = SwappedFace(0, m, oval_alpha(), crop=np.asarray(255 - crop, np.uint8), strength=0.8)
    expected = hopper_image.copy()
    paste_on_cpu(expected, face, face.strength)
    got, timings = DeviceFramePath(torch.device(device)).paste(hopper_image, None, [face])
    assert got.shape == hopper_image.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.mean() < 0.3 and np.percentile(diff, 99.9) <= 3, (diff.mean(), diff.max())
    changed = np.abs(got.astype(int) - hopper_image.astype(int)).max(axis=2) > 40
    assert 0.03 < changed.mean() < 0.5  # the face, and only around it, was replaced
    assert timings["paste"] > 0 and "upload" in timings
    if device == "cuda":
        assert "download" in timings


def run_frame(stream: object, compositor: Compositor, image: np.ndarray, faces: list) -> Frame:
    frame = Frame(image=image, seq=0, captured_ns=0, pts=0.0)
    frame.faces = list(faces)
    stream.swap(frame)  # type: ignore[attr-defined]
    compositor.compose(frame)
    return frame


@pytest.mark.parametrize("device", DEVICES)
def test_interleaved_streams_fade_in_and_out_on_their_own(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, device: str
) -> None:
    """Two streams on one engine, frames alternating, the same track id in both: each fades in
    over fade_frames from its own first face, and one fading out leaves the other alone. (Each
    stream's first frame has no face: a face there from the first frame is not faded in.)"""
    cfg = load_config(None, {"compose.fade_frames": 4, "compose.paste": "device"})
    engine = InvertingEngine(cfg, device)
    streams = [engine.open_stream(identity(device)) for _ in range(2)]
    assert all(s.device_path is not None for s in streams)
    compositors = [Compositor(cfg.compose, None, device_path=s.device_path) for s in streams]
    images = [hopper_image, astronaut_image]
    faces = [detect_faces(image) for image in images]
    assert faces[0][0].track_id == faces[1][0].track_id  # they would collide in shared state
    change: list[list[float]] = [[], []]
    for step in range(11):
        for i in (0, 1):
            start = 2 * i  # stream 1 starts two frames later
            if step < start:
                continue
            # No face in a stream's first frame; stream 1's face leaves after 4 frames.
            present = step > start and not (i == 1 and step >= 7)
            frame = run_frame(streams[i], compositors[i], images[i], faces[i] if present else [])
            change[i].append(float(np.abs(frame.result.astype(int) - images[i]).mean()))
    first, second = change
    assert first[0] == second[0] == 0
    assert first[1] < first[2] < first[3] < first[4]  # fading in over 4 frames
    assert first[4] == pytest.approx(first[10], abs=0.01)  # then full strength, undisturbed
    assert second[1] < second[2] < second[3] < second[4]
    assert second[4] > second[5] > second[6] > second[7] >= second[8] == 0  # fades out, gone
    for stream in streams:
        stream.close()


@pytest.mark.parametrize("device", DEVICES)
def test_several_faces_in_one_frame_go_through_one_generator_call(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, device: str
) -> None:
    canvas = np.full((512, 1024, 3), 128, np.uint8)
    canvas[:, :512] = astronaut_image
    canvas[:, 512:] = hopper_image[44:556]
    faces = detect_faces(canvas)
    assert len(faces) == 2
    cfg = load_config(None, {"compose.paste": "device"})
    engine = InvertingEngine(cfg, device)
    stream = engine.open_stream(identity(device))
    compositor = Compositor(cfg.compose, None, fade=False, device_path=stream.device_path)
    frame = run_frame(stream, compositor, canvas, faces)
    assert dict(engine.batcher.stats.calls) == {2: 1} and engine.batcher.stats.faces == 2
    changed = np.abs(frame.result.astype(int) - canvas).max(axis=2) > 40
    assert changed[:, :512].mean() > 0.03 and changed[:, 512:].mean() > 0.03  # both faces
    # The same frame pasted on the CPU (OpenCV) agrees with the device paste.
    cpu_cfg = load_config(None, {"compose.paste": "cpu"})
    cpu_engine = InvertingEngine(cpu_cfg, device)
    cpu_stream = cpu_engine.open_stream(identity(device))
    assert cpu_stream.device_path is None
    on_cpu = run_frame(cpu_stream, Compositor(cpu_cfg.compose, None, fade=False), canvas, faces)
    diff = np.abs(on_cpu.result.astype(int) - frame.result.astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 4, (diff.mean(), diff.max())


def test_gpu_report_agrees_with_torch() -> None:
    gpus = describe_gpus()
    assert (len(gpus) > 0) == torch.cuda.is_available()
    for gpu in gpus:
        assert gpu.memory_gib > 0 and gpu.name in gpu.describe()


def test_mask_smoother_follows_a_jump_gradually_per_track() -> None:
    from livswap.compose import MaskSmoother

    smoother = MaskSmoother(0.6)
    zeros, ones = np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)
    assert smoother.smooth({1: zeros})[1].max() == 0
    step = smoother.smooth({1: ones, 2: ones})
    assert np.allclose(step[1], 0.4) and np.allclose(step[2], 1.0)  # a new track starts sharp
    assert np.allclose(smoother.smooth({1: ones})[1], 0.64)
    assert np.allclose(smoother.smooth({2: zeros})[2], 0.0)  # track 2 was forgotten meanwhile
