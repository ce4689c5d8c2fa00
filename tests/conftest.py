"""Shared fixtures: where the real data lives, small generated inputs, and one real-weights cache."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATX_SHARED_DATA", ROOT.parent / "shared" / "data"))
BREAST_NPZ = ROOT / "featx" / "data" / "breastmnist.npz"   # the embedded copy of shared/data/breastmnist
CHEST = SHARED / "chest-xray-pneumonia-224"
CT_DICOM = SHARED / "ct-contrast-dicom" / "dicom_dir"

# A tiny random-init network for mechanics tests (fast on 2 cores); real weights are tested separately.
TINY = "timm/test_efficientnet"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (set FEATX_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def chest_dir() -> Path:
    return need(CHEST)


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    return need(CT_DICOM)


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A class-per-folder tree of 12 small generated images (2 classes)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in ("benign", "malignant"):
        for i in range(6):
            arr = (rng.random((40 + i, 48, 3)) * 255).astype(np.uint8)
            write_png(root / c / f"{c}_{i}.png", arr)
    return root


@pytest.fixture(scope="session")
def breast_cache(tmp_path_factory) -> Path:
    """The embedded BreastMNIST through real EfficientNet-Lite0 weights (default settings), once per session."""
    from featx.extraction import extract
    cache = tmp_path_factory.mktemp("breast") / "breast.h5"
    extract([str(BREAST_NPZ)], cache, progress=False)
    return cache
