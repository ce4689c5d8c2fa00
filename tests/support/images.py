"""Small generated image files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    """Save ``arr`` as a PNG at ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode=mode) if mode else Image.fromarray(arr)).save(path)
    return path


def random_gray(rng: np.random.Generator, shape=(24, 24)) -> np.ndarray:
    return (rng.random(shape) * 255).astype(np.uint8)


def make_class_folders(root: Path, classes=("benign", "malignant"), per_class: int = 6, seed: int = 0) -> Path:
    """A class-per-folder tree of small random RGB PNGs of varying height (``<class>/<class>_<i>.png``)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        for i in range(per_class):
            write_png(root / c / f"{c}_{i}.png", (rng.random((40 + i, 48, 3)) * 255).astype(np.uint8))
    return root
