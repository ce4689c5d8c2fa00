"""MedMNIST-style .npz archives: ``<split>_images`` with ``<split>_labels``, the split kept.

Scanning reads each array's shape and dtype from its ``.npy`` header inside the zip, without
decompressing the data, so a small archive that inflates to gigabytes costs nothing to scan and
is refused by its declared size. Labels are integers; ``-1`` means unknown. A split whose arrays
or labels make no sense is one failure line (``<file>::<key>``) and the other splits are kept.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featx.errors import SourceError
from featx.safeio import open_regular
from featx.sources.base import (DEFAULT_MAX_PIXELS, SPLIT_ALIASES, Failure, Sample, ScanResult,
                                normalize_split, sha256_file)

ZIP_MAGIC = b"PK\x03\x04"
# The most bytes one image array may inflate to: the decoder holds one array in memory at a time.
NPZ_MAX_ARRAY_BYTES = 1 << 30


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` member declares: shape, dtype, and the bytes stored for it in the zip."""

    shape: tuple[int, ...]
    dtype: np.dtype
    stored_bytes: int        # uncompressed size of the member (header included)

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def read_npz_headers(path: str | Path) -> dict[str, NpyHeader]:
    """Each array's header in an npz, by key, read without loading any array.

    Raises SourceError (naming the file) for a file that is not a zip of .npy arrays."""
    path = Path(path)
    out: dict[str, NpyHeader] = {}
    try:
        with open_regular(path, "rb", what="npz", error=SourceError) as fh, zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _fortran, dtype = reader(f)
                out[info.filename[:-4]] = NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), info.file_size)
    except SourceError:
        raise
    except Exception as e:  # BadZipFile, a bad .npy header, ...
        raise SourceError(f"cannot open npz ({type(e).__name__}: {' '.join(str(e).split())})", path) from None
    return out


def _image_problem(key: str, h: NpyHeader) -> str | None:
    if h.dtype.hasobject:
        return f"{key} holds Python objects (dtype object); only numeric arrays are read"
    if h.dtype.kind not in "biuf":
        return f"{key} has dtype {h.dtype}; expected numbers"
    if len(h.shape) not in (3, 4) or (len(h.shape) == 4 and h.shape[-1] not in (1, 3)):
        return f"{key} has shape {h.shape}; expected (N, H, W) or (N, H, W, 1|3)"
    if h.shape[1] < 1 or h.shape[2] < 1:
        return f"{key} holds images of {h.shape[2]}x{h.shape[1]} pixels; each side must be at least 1"
    if h.shape[1] * h.shape[2] > DEFAULT_MAX_PIXELS:
        return f"{key} images are {h.shape[2]}x{h.shape[1]}, above the {DEFAULT_MAX_PIXELS / 1e6:g}-megapixel limit"
    if h.data_bytes > NPZ_MAX_ARRAY_BYTES:
        return (f"{key} declares {h.data_bytes / 1e9:.1f} GB of pixels, above the "
                f"{NPZ_MAX_ARRAY_BYTES / 1e9:.1f} GB limit per array")
    if h.data_bytes > h.stored_bytes:
        return f"{key} declares {h.data_bytes} bytes of pixels but holds {h.stored_bytes} (truncated)"
    return None


def _labels(z, key: str, h: NpyHeader, n: int) -> tuple[list[str | None] | None, str | None]:
    """Label names per image (None = unknown) or the reason the labels cannot be used."""
    shape = h.shape
    if not (shape == (n,) or shape == (n, 1)):
        return None, (f"{key} has shape {shape}, expected ({n},); multi-label npz files are not supported"
                      if len(shape) == 2 and shape[0] == n else f"{key} has shape {shape}, expected ({n},)")
    if h.dtype.kind not in "iuf":
        return None, f"{key} has dtype {h.dtype}; labels must be integers (-1 = unknown)"
    labels = np.asarray(z[key]).reshape(-1)
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return None, (f"{key} has {int(bad.sum())} labels that are not integers (first: row {i}, "
                          f"{labels[i].item()!r}); labels must be integers (-1 = unknown)")
    labels = labels.astype(np.int64)
    if (labels < -1).any():
        i = int(np.flatnonzero(labels < -1)[0])
        return None, f"{key} has negative labels (first: row {i}, {int(labels[i])}); -1 = unknown is the only one allowed"
    return [None if v == -1 else str(int(v)) for v in labels], None


def scan_npz(path: Path, file_hash: str | None = None,
             file_stat: tuple[int, int, int, int] | None = None) -> ScanResult:
    """The samples of an npz archive (``file_hash``: its sha256 when known; ``file_stat``: its
    scan-memo key, recorded on each sample)."""
    path = Path(path)
    headers = read_npz_headers(path)
    image_keys = sorted(k for k in headers if k.endswith("_images"))
    if not image_keys:
        raise SourceError(f"npz has no '<split>_images' arrays (has: {', '.join(sorted(headers)) or 'nothing'})", path)
    order = {"train": 0, "val": 1, "test": 2}
    image_keys.sort(key=lambda k: (order.get(normalize_split(k[:-7]), 9), k))
    result = ScanResult()
    digest = None
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise SourceError(f"cannot open npz ({type(e).__name__}: {e})", path) from None
    with z:
        for key in image_keys:
            prefix = key[: -len("_images")]
            problem = _image_problem(key, headers[key])
            if problem:
                result.failures.append(Failure(f"{path}::{key}", problem))
                continue
            n = headers[key].shape[0]
            labels: list[str | None] = [None] * n
            if f"{prefix}_labels" in headers:
                try:
                    labels, problem = _labels(z, f"{prefix}_labels", headers[f"{prefix}_labels"], n)
                except Exception as e:  # a corrupt member: its CRC or inflate fails
                    problem = f"cannot read {prefix}_labels ({type(e).__name__}: {e})"
                if problem:
                    result.failures.append(Failure(f"{path}::{prefix}_labels", f"{problem}; {key} not used"))
                    continue
            digest = digest or file_hash or sha256_file(path)
            split = normalize_split(prefix) if prefix.lower() in SPLIT_ALIASES else ""
            resolved = str(path.resolve())
            result.samples.extend(Sample(id=f"{digest}#{prefix}/{i}", path=f"{path}::{prefix}/{i}", reader="npz",
                                         file=resolved, index=f"{prefix}/{i}", label=labels[i], split=split,
                                         file_stat=file_stat) for i in range(n))
    return result
