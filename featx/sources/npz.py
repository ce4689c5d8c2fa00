"""MedMNIST-style .npz archives: ``<split>_images`` with ``<split>_labels``, the split kept."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from featx.errors import SourceError
from featx.sources.base import SPLIT_ALIASES, Sample, ScanResult, normalize_split, sha256_file

ZIP_MAGIC = b"PK\x03\x04"


def scan_npz(path: Path, file_hash: str | None = None) -> ScanResult:
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise SourceError(f"cannot open npz ({type(e).__name__}: {e})", path) from None
    with z:
        keys = set(z.files)
        image_keys = sorted(k for k in keys if k.endswith("_images"))
        if not image_keys:
            raise SourceError(f"npz has no '<split>_images' arrays (has: {', '.join(sorted(keys))})", path)
        digest = file_hash or sha256_file(path)
        result = ScanResult()
        order = {"train": 0, "val": 1, "test": 2}
        image_keys.sort(key=lambda k: (order.get(normalize_split(k[:-7]), 9), k))
        for key in image_keys:
            prefix = key[: -len("_images")]
            n = z[key].shape[0]
            labels = z[f"{prefix}_labels"] if f"{prefix}_labels" in keys else None
            if labels is not None:
                labels = np.asarray(labels)
                if labels.ndim == 2 and labels.shape[1] == 1:
                    labels = labels[:, 0]
                if labels.ndim != 1 or len(labels) != n:
                    raise SourceError(f"{prefix}_labels has shape {labels.shape}, expected ({n},); "
                                      "multi-label npz files are not supported", path)
            split = normalize_split(prefix) if prefix.lower() in SPLIT_ALIASES else ""
            for i in range(n):
                result.samples.append(Sample(
                    id=f"{digest}#{prefix}/{i}", path=f"{path}::{prefix}/{i}", reader="npz",
                    file=str(path.resolve()), index=f"{prefix}/{i}",
                    label=None if labels is None else str(int(labels[i])), split=split))
        return result
