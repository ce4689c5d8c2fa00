"""Sample records and read options shared by every source reader."""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLIT_NAMES = ("train", "val", "test")

# The most pixels one decoded image (one frame) may have: 64 megapixels. A float32 RGB copy of
# such an image is 768 MB, so with the decode buffers a worker stays under about 2 GB.
DEFAULT_MAX_PIXELS = 64_000_000
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class ReadOptions:
    """Everything about decoding that changes the pixels handed to feature extractors.

    window: DICOM window, a preset name (see ``featx.sources.dicom.WINDOW_PRESETS``), a
        ``(center, width)`` pair, or None to use the file's own WindowCenter/WindowWidth.
    intensity: how integer data deeper than 8 bits becomes [0, 1]: ``"auto"`` (per-image min-max
        for >8-bit data, the way a viewer's auto-window does, so 12-bit data in 16-bit containers
        is not left nearly black), ``"dtype"`` (divide by the dtype's maximum) or ``"minmax"``
        (per-image min-max for every image).
    draft_size: when set, JPEGs much larger than this (in pixels, shorter side) are decoded at a
        reduced scale (libjpeg DCT scaling) to no less than this size; None decodes in full.
    max_pixels: the most pixels (width x height) an image or frame may decode to. A larger JPEG
        is decoded at 1/2, 1/4 or 1/8 scale to fit; any other larger image is refused (a failure
        line), so memory per worker has a ceiling. Only a non-default value appears in
        ``config()``: caches made before this option existed keep their set configs.
    """

    window: str | tuple[float, float] | None = None
    intensity: str = "auto"
    draft_size: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def config(self) -> dict:
        out = {"window": list(self.window) if isinstance(self.window, tuple) else self.window,
               "intensity": self.intensity, "draft_size": self.draft_size}
        if self.max_pixels != DEFAULT_MAX_PIXELS:
            out["max_pixels"] = int(self.max_pixels)
        return out


@dataclass(frozen=True)
class Sample:
    """One image to extract: a stable id, where it comes from, and its labels.

    ``id`` is the sha256 of the file's bytes, with ``#<index>`` appended for images inside
    multi-image files (npz arrays, multi-frame DICOM), so it never changes for the same bytes.
    A second file with the same bytes in one scan is kept as its own sample (a folder of 100
    files is 100 samples) with ``~<k>`` appended and ``duplicate_of`` naming the first one's id:
    evaluation can then keep copies on one side of a split.
    """

    id: str
    path: str
    reader: str
    file: str
    index: str | None = None
    label: str | None = None
    group: str = ""
    split: str = ""
    duplicate_of: str = ""
    file_stat: tuple[int, int, int, int] | None = None   # (size, mtime_ns, ctime_ns, inode) when id was computed
    file_frames: int = 1         # images its file holds (a multi-frame DICOM's frames), for the scan memo
    header_group: str = ""       # the group its file's header names (a DICOM's PatientID), for the scan memo

    def load(self, options: ReadOptions = ReadOptions()) -> np.ndarray:
        from featx.sources import readers
        return readers.load(self, options)


@dataclass
class Failure:
    path: str
    reason: str
    stage: str = "source"


@dataclass
class ScanResult:
    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What the scan memo compares: (size, mtime_ns, ctime_ns, inode)."""
    return (int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino))


ScanMemo = dict
"""The scan memo (featx.cache.read_memo): resolved file path -> MemoEntry."""

# A memo entry: (size, mtime_ns, ctime_ns, inode, sha256, reader, frames, header_group). ``reader``
# is the kind the file's signature gave ("image", "dicom", "npz"; "" when the cache predates it).
MemoEntry = tuple
MEMO_READERS = ("image", "dicom")   # kinds whose samples a memo hit rebuilds without opening the file


def file_samples(path: str, resolved: str, key: tuple[int, int, int, int] | None, digest: str, reader: str,
                 label: str | None, group: str, split: str, frames: int = 1, header_group: str = "") -> list[Sample]:
    """The samples of one image or DICOM file with content id ``digest``: one, or one per frame of
    a multi-frame DICOM (``<digest>#<k>``, ``<path>::<k>``); a DICOM's ``header_group`` (its
    PatientID) is the group unless ``group`` is given. The scan (featx.sources.scan_file) and a
    memo hit (memo_samples) both build them here, so a memo hit equals a fresh scan."""
    if reader == "image":
        return [Sample(id=digest, path=path, reader="image", file=resolved, label=label, group=group, split=split,
                       file_stat=key)]
    group = group or header_group
    if frames == 1:
        return [Sample(id=digest, path=path, reader="dicom", file=resolved, label=label, group=group, split=split,
                       file_stat=key, header_group=header_group)]
    return [Sample(id=f"{digest}#{k}", path=f"{path}::{k}", reader="dicom", file=resolved, index=str(k), label=label,
                   group=group, split=split, file_stat=key, file_frames=frames, header_group=header_group)
            for k in range(frames)]


def memo_samples(path: str, resolved: str, key: tuple[int, int, int, int], memo: ScanMemo, label: str | None,
                 group: str, split: str) -> list[Sample] | None:
    """The samples of an unchanged file rebuilt from its memo entry (no read, no hash), or None
    when the memo does not know the file at this (size, mtime_ns, ctime_ns, inode) or its kind."""
    hit = memo.get(resolved)
    if hit is None or len(hit) < 8 or hit[5] not in MEMO_READERS or tuple(hit[:4]) != key:
        return None
    return file_samples(path, resolved, key, str(hit[4]), hit[5], label, group, split, frames=int(hit[6]),
                        header_group=hit[7])


def content_id(path: str | Path, memo: ScanMemo | None = None, key: str | None = None
               ) -> tuple[str, tuple[int, int, int, int] | None]:
    """(sha256 of the file's bytes, its stat key) -- the digest taken from ``memo`` without reading
    the file when the memo holds ``key`` (the resolved path) with the same size, mtime_ns,
    ctime_ns and inode. Any difference re-hashes. A file changing while it is hashed gets no stat
    key (so the cache does not remember it). Limit: a rewrite that keeps size, mtime and inode and
    whose ctime is unchanged too (a clock set back, a file system without ctime) is not seen;
    ``rehash`` (no memo) hashes every file."""
    before = stat_key(os.stat(path))
    if memo:
        hit = memo.get(key if key is not None else str(Path(path).resolve()))
        if hit is not None and tuple(hit[:4]) == before:
            return str(hit[4]), before
    digest = sha256_file(path)
    after = stat_key(os.stat(path))
    return digest, (before if after == before else None)


def normalize_split(name: str | None) -> str:
    if name is None:
        return ""
    return SPLIT_ALIASES.get(str(name).strip().lower(), "")


def path_problem(path: Path) -> str | None:
    """Why a path cannot even be looked at (too long, a NUL byte), or None."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return f"path is too long ({len(str(path))} characters; {e.strerror})"
    except ValueError as e:
        return f"not a usable path ({e})"
    return None


def short(path: object, limit: int = 200) -> str:
    """A path for a message: long ones keep their start and end."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text)} characters)"
