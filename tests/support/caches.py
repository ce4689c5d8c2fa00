"""Caches written through featx's own journal + commit (for tests of what reads them).

Caches written with bare h5py in the CONTRACTS.md layout are in tests/fit_helpers.py (write_cache)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def journal_cache(path: Path, X: np.ndarray, labels=None, *, set_name: str = "deep", config: dict | None = None,
                  ids=None, paths=None, groups=None, rows_per_record: int | None = None) -> Path:
    """One feature set ``set_name`` of rows ``X`` committed to ``path``. ``labels`` are class names
    (strings; "" for none); ids default to ``s000``..., paths to ``/data/img000.png``..."""
    from featx import cache as C
    n = len(X)
    ids = list(ids) if ids is not None else [f"s{i:03d}" for i in range(n)]
    paths = list(paths) if paths is not None else [f"/data/img{i:03d}.png" for i in range(n)]
    labels = list(labels) if labels is not None else [""] * n
    groups = list(groups) if groups is not None else [""] * n
    config = config if config is not None else {"kind": "test"}
    journal = C.Journal(path)
    step = rows_per_record or max(n, 1)
    for a in range(0, n, step):
        b = min(n, a + step)
        journal.append(C.BatchRecord(ids=ids[a:b], paths=paths[a:b], labels=labels[a:b], groups=groups[a:b],
                                     splits=[""] * (b - a), duplicate_of=[""] * (b - a),
                                     sets=[C.SetRows(set_name, config, "deep", ids[a:b],
                                                     np.asarray(X[a:b], np.float32))]))
    C.commit(path)
    return path
