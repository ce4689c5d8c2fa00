"""Small HDF5 caches in the CONTRACTS.md layout (v1), written with bare h5py, for the fit/predict/compare tests."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np


def write_cache(path: Path, sets: dict[str, np.ndarray], y, *, splits=None, groups=None, class_names=None,
                configs: dict[str, dict] | None = None, ok: dict[str, np.ndarray] | None = None,
                paths=None) -> Path:
    n = len(y)
    st = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["featx_layout_version"] = 1
        f.attrs["featx_version"] = "test"
        g = f.create_group("samples")
        g.create_dataset("id", data=np.array([f"{i:064x}" for i in range(n)], dtype=object), dtype=st)
        g.create_dataset("path", data=np.array(paths or [f"img/{i}.png" for i in range(n)], dtype=object), dtype=st)
        lab = g.create_dataset("label", data=np.asarray(y, np.int64))
        k = int(np.max(y)) + 1
        lab.attrs["class_names"] = json.dumps(class_names or [f"c{i}" for i in range(k)])
        g.create_dataset("group", data=np.array(groups if groups is not None else [""] * n, dtype=object), dtype=st)
        g.create_dataset("split", data=np.array(splits if splits is not None else [""] * n, dtype=object), dtype=st)
        fg = f.create_group("features")
        for name, X in sets.items():
            ds = fg.create_dataset(name, data=np.asarray(X, np.float32), chunks=True, compression="gzip")
            ds.attrs["config"] = json.dumps((configs or {}).get(name, {"kind": "deep", "backbone": name, "pooling": "avg"}))
            ds.attrs["kind"] = "deep"
            fg.create_dataset(name + "_ok", data=(ok or {}).get(name, np.ones(n, bool)))
        for key in ("path", "reason", "stage"):
            f.create_dataset(f"failures/{key}", data=np.array([], dtype=object), dtype=st)
    return path


def toy_data(n=240, n_classes=2, seed=0, d_a=20, d_b=6, signal=1.5):
    """Two feature sets; 'a' carries the class signal, 'b' is weaker."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    A = rng.normal(size=(n, d_a))
    for c in range(n_classes):
        A[y == c, c] += signal
    B = rng.normal(size=(n, d_b)) * 50 + 100  # another scale: per-set scaling matters
    B[:, 0] += 25 * (y == 1)
    return {"a": A, "b": B}, y


def split_labels(n, seed=0, val=0.15, test=0.25):
    rng = np.random.default_rng(seed)
    r = rng.random(n)
    return np.where(r < test, "test", np.where(r < test + val, "val", "train")).astype(object)
