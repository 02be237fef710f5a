"""The GPU frame path's warp and paste (plain PyTorch) against OpenCV's CPU paste-back, run on
the CPU here and on CUDA where there is one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from livswap.compose import FacePatch, feather
from livswap.cuda import DeviceFramePath, FaceJob, crop_face, describe_gpus
from livswap.engine.simswap import align_224
from livswap.track import detect_faces

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def invert(crop: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """A stand-in generator whose output is easy to predict: the photographic negative."""
    return 1.0 - crop


def face_job(image: np.ndarray, device: torch.device) -> FaceJob:
    m = align_224(detect_faces(image)[0].keypoints)
    box = np.zeros((224, 224), np.uint8)
    cv2.ellipse(box, (112, 120), (80, 100), 0, 0, 360, (255,), -1)
    return FaceJob(m, feather(box, 8.0), torch.zeros(1, 512, device=device))


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
def test_device_path_pastes_like_the_cpu_compositor(hopper_image: np.ndarray, device: str) -> None:
    job = face_job(hopper_image, torch.device(device))
    # CPU reference: OpenCV crop, the same generator, FacePatch paste-back.
    crop = cv2.warpAffine(hopper_image, job.to_crop, (224, 224), flags=cv2.INTER_LINEAR)
    swapped = np.asarray(255 - crop, np.uint8)
    expected = hopper_image.copy()
    to_frame = np.asarray(cv2.invertAffineTransform(job.to_crop), np.float64)
    FacePatch(0, swapped, job.alpha, to_frame).paste(expected)

    path = DeviceFramePath(invert, 224, torch.device(device))
    got, timings = path.submit(hopper_image, [job]).result()
    assert got.shape == hopper_image.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.mean() < 0.3 and np.percentile(diff, 99.9) <= 3, (diff.mean(), diff.max())
    changed = np.abs(got.astype(int) - hopper_image.astype(int)).max(axis=2) > 40
    assert 0.03 < changed.mean() < 0.5  # the face, and only around it, was replaced
    assert timings["swap"] > 0
    if device == "cuda":
        assert {"upload", "swap", "download"} <= set(timings)


@pytest.mark.parametrize("device", DEVICES)
def test_two_frames_in_flight_each_get_their_own_result(
    hopper_image: np.ndarray, astronaut_image: np.ndarray, device: str
) -> None:
    path = DeviceFramePath(invert, 224, torch.device(device))
    first = path.submit(hopper_image, [face_job(hopper_image, torch.device(device))])
    second = path.submit(astronaut_image, [face_job(astronaut_image, torch.device(device))])
    image_b, _ = second.result()
    image_a, _ = first.result()  # collected late: its buffers were not reused meanwhile
    assert image_a.shape == hopper_image.shape and image_b.shape == astronaut_image.shape
    assert np.abs(image_a.astype(int) - hopper_image).mean() > 1
    assert np.abs(image_b.astype(int) - astronaut_image).mean() > 1
    # Without faces the frame comes back untouched.
    same, _ = path.submit(hopper_image, []).result()
    assert np.array_equal(same, hopper_image)


def test_gpu_report_agrees_with_torch() -> None:
    gpus = describe_gpus()
    assert (len(gpus) > 0) == torch.cuda.is_available()
    for gpu in gpus:
        assert gpu.memory_gib > 0 and gpu.name in gpu.describe()


def test_engine_device_compositor_feeds_compose(hopper_image: np.ndarray) -> None:
    """A GPU engine's pasted frame goes through compose untouched but for the label, and faces
    fade in over the configured frames."""
    from livswap.compose import Compositor
    from livswap.config import load_config
    from livswap.cuda import DeviceCompositor
    from livswap.frame import Frame
    from livswap.label import DisclosureLabel

    cfg = load_config()
    job = face_job(hopper_image, torch.device("cpu"))
    device = DeviceCompositor(DeviceFramePath(invert, 224, torch.device("cpu")), fade_frames=4)
    compositor = Compositor(cfg.compose, label=DisclosureLabel())
    changes = []
    for seq in range(5):
        frame = Frame(image=hopper_image, seq=seq, captured_ns=0, pts=0.0)
        device.swap(frame, [(7, job.to_crop, job.alpha)], job.latent)
        assert frame.composited is not None and "device_swap" in frame.timings_ms
        pasted = frame.composited.copy()
        compositor.compose(frame)
        assert frame.output is frame.composited
        labelled = np.abs(frame.output.astype(int) - pasted).max(axis=2) > 0
        assert 0 < labelled.mean() < 0.1  # only the label was added
        changes.append(np.abs(pasted.astype(int) - hopper_image).mean())
    assert changes[0] < changes[1] < changes[2] < changes[3] == changes[4]  # fading in


def test_mask_smoother_follows_a_jump_gradually_per_track() -> None:
    from livswap.compose import MaskSmoother

    smoother = MaskSmoother(0.6)
    zeros, ones = np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)
    assert smoother.smooth({1: zeros})[1].max() == 0
    step = smoother.smooth({1: ones, 2: ones})
    assert np.allclose(step[1], 0.4) and np.allclose(step[2], 1.0)  # a new track starts sharp
    assert np.allclose(smoother.smooth({1: ones})[1], 0.64)
    assert np.allclose(smoother.smooth({2: zeros})[2], 0.0)  # track 2 was forgotten meanwhile
