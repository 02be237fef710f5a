from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.media import astronaut, grace_hopper, moving_frames, write_video


@pytest.fixture(scope="session")
def astronaut_image() -> np.ndarray:
    return astronaut()


@pytest.fixture(scope="session")
def hopper_image() -> np.ndarray:
    return grace_hopper()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def astronaut_jpg(media_dir: Path, astronaut_image: np.ndarray) -> Path:
    path = media_dir / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut_image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def hopper_jpg(media_dir: Path, hopper_image: np.ndarray) -> Path:
    path = media_dir / "hopper.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(hopper_image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="session")
def hopper_clip(media_dir: Path, hopper_image: np.ndarray) -> Path:
    """2 s of Grace Hopper moving, 320x240 at 30 fps, with an AAC tone."""
    return write_video(media_dir / "hopper_clip.mp4", moving_frames(hopper_image, 60, (320, 240)))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with SimSwap-224 and its ArcFace imported, random weights in the official
    formats; one per test module (some modules import more into it, or damage its cache)."""
    from livswap.models import ModelStore
    from tests.checkpoints import write_release_arcface, write_simswap_224

    tmp = tmp_path_factory.mktemp("weights")
    store = ModelStore(tmp / "models")
    store.import_file("simswap-224", write_simswap_224(tmp / "latest_net_G.pth"))
    store.import_file("arcface-simswap", write_release_arcface(tmp / "arcface_checkpoint.tar"))
    return store.folder
