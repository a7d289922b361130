"""Shared fixtures: the bundled real photos, generated images, and a built index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def desktop_trash(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's own desktop trash (``$XDG_DATA_HOME/Trash``, outside its tmp_path): deletes never reach the
    trash of the user who runs the tests."""
    data = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    return data / "Trash"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    """The distinct real photos of sample_data/photos."""
    return sorted((SAMPLE / "photos").glob("*.jpg"))


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """sample_data copied to a temporary folder and indexed with the defaults: (image folder, index folder)."""
    from hashdup import pipeline

    base = tmp_path_factory.mktemp("built")
    images = base / "images"
    shutil.copytree(SAMPLE, images)
    index_dir = base / "index"
    pipeline.build_index([images], index_dir)
    return images, index_dir


def rgb_noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8), so that JPEG and resizing behave as on photos."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float64)
    yy = np.linspace(0, small.shape[0] - 1, h)
    xx = np.linspace(0, small.shape[1] - 1, w)
    y0, x0 = np.floor(yy).astype(int), np.floor(xx).astype(int)
    y1, x1 = np.minimum(y0 + 1, small.shape[0] - 1), np.minimum(x0 + 1, small.shape[1] - 1)
    fy, fx = (yy - y0)[:, None, None], (xx - x0)[None, :, None]
    img = (small[y0][:, x0] * (1 - fy) * (1 - fx) + small[y1][:, x0] * fy * (1 - fx)
           + small[y0][:, x1] * (1 - fy) * fx + small[y1][:, x1] * fy * fx)
    return img.astype(np.uint8)
