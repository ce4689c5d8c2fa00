"""Sources: turn folders, CSV manifests, npz archives, DICOM and image files into Sample records.

The reader is chosen by the file's content (its signature bytes), not by its extension alone, in
the manner of MONAI's readers: a PNG named ``.jpg`` is still read as PNG, a DICOM without a
``.dcm`` extension is still DICOM, and a text file in an image folder is reported, not decoded.
"""
from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Iterable

from featx.errors import DecodeError, SourceError
from featx.safeio import file_type_name, not_regular_reason
from featx.sources import dicom
from featx.sources.base import (Failure, ReadOptions, Sample, ScanMemo, ScanResult, content_id, file_samples,
                               memo_samples, path_problem, sha256_file, stat_key)  # noqa: F401  (featx.sources.sha256_file stays)
from featx.sources.folder import plan_folder
from featx.sources.images import looks_like_image
from featx.sources.manifest import scan_manifest
from featx.sources.npz import ZIP_MAGIC, scan_npz

__all__ = ["Sample", "ReadOptions", "Failure", "ScanResult", "scan_sources", "scan_file"]

_MANIFEST_SUFFIXES = {".csv", ".tsv"}


def _head(path: Path, n: int = 132) -> bytes:
    from featx.safeio import open_regular
    with open_regular(path, "rb", error=DecodeError) as f:
        return f.read(n)


def scan_file(path: Path, label: str | None = None, group: str = "", split: str = "",
              memo: ScanMemo | None = None) -> ScanResult:
    """Sample records for one file, its kind found from its content; its content id is taken from
    ``memo`` when the file's size, mtime, ctime and inode are those remembered (see content_id);
    then an image or DICOM file is not opened at all (its kind and header facts are in the memo)."""
    path = Path(path)
    if memo:
        hit = _memo_hit(path, memo, label, group, split)
        if hit is not None:
            return ScanResult(samples=hit)
    res = ScanResult()
    problem = path_problem(path) or not_regular_reason(path)
    if problem:
        res.failures.append(Failure(str(path), problem))
        return res
    try:
        if path.stat().st_size == 0:
            res.failures.append(Failure(str(path), "empty file (0 bytes)"))
            return res
        head = _head(path)
    except OSError as e:
        res.failures.append(Failure(str(path), f"cannot read ({e.strerror or e})"))
        return res
    try:
        if dicom.is_dicom(head):
            ds = dicom.read_header(str(path))
            resolved = str(path.resolve())
            digest, key = content_id(path, memo, resolved)
            res.samples.extend(file_samples(str(path), resolved, key, digest, "dicom", label, group, split,
                                            frames=dicom.n_frames(ds),
                                            header_group=str(getattr(ds, "PatientID", "") or "")))
        elif looks_like_image(head):
            resolved = str(path.resolve())
            digest, key = content_id(path, memo, resolved)
            res.samples.extend(file_samples(str(path), resolved, key, digest, "image", label, group, split))
        elif head.startswith(ZIP_MAGIC) and path.suffix.lower() == ".npz":
            sub = scan_npz_memo(path, memo)
            res.samples.extend(sub.samples)
            res.failures.extend(sub.failures)
        else:
            res.failures.append(Failure(str(path), "not an image, DICOM or npz file (unrecognised content)"))
    except (SourceError, DecodeError) as e:
        res.failures.append(Failure(str(path), e.reason))
    return res


def _memo_hit(path: Path, memo: ScanMemo, label, group: str, split: str) -> list[Sample] | None:
    """The samples of ``path`` from ``memo`` if it is a regular file the memo knows unchanged, else None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return memo_samples(str(path), os.path.realpath(path), stat_key(st), memo, label, group, split)


def _scan_folder(src: Path, threads: int, memo: ScanMemo | None) -> ScanResult:
    """Every file below ``src``: a file the memo knows unchanged costs the walk's stat and a dict
    lookup; the others are read (and hashed) on ``threads`` threads."""
    plan, failures = plan_folder(src)
    res = ScanResult(failures=failures)
    found: list[list[Sample] | None] = [None] * len(plan)
    if memo:
        for k, p in enumerate(plan):
            if p.key is not None:
                found[k] = memo_samples(p.path, p.resolved, p.key, memo, p.label, "", p.split)
    todo = [k for k, got in enumerate(found) if got is None]
    with ThreadPoolExecutor(threads) as pool:  # hashing releases the GIL
        for k, sub in zip(todo, pool.map(lambda k: scan_file(Path(plan[k].path), label=plan[k].label,
                                                             split=plan[k].split, memo=memo), todo)):
            found[k] = sub.samples
            res.failures.extend(sub.failures)
    for got in found:
        res.samples.extend(got)
    return res


def scan_npz_memo(path: Path, memo: ScanMemo | None) -> ScanResult:
    """scan_npz with the archive's content id taken from ``memo`` when it is unchanged."""
    resolved = str(Path(path).resolve())
    digest, key = content_id(path, memo, resolved)
    return scan_npz(path, file_hash=digest, file_stat=key)


def _scan_one_source(src: Path, allow_outside: bool, threads: int, memo: ScanMemo | None = None) -> ScanResult:
    problem = path_problem(src)
    if problem:
        return ScanResult(failures=[Failure(str(src), problem)])
    try:
        mode = os.stat(src).st_mode
    except OSError:
        return ScanResult(failures=[Failure(str(src), "does not exist")])
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        # a named input that is a FIFO or a device is refused before anything opens it
        raise SourceError(f"input is a {file_type_name(mode)}, not a regular file or folder", src)
    if stat.S_ISDIR(mode):
        return _scan_folder(src, threads, memo)
    if src.suffix.lower() in _MANIFEST_SUFFIXES:
        return scan_manifest(src, allow_outside=allow_outside, sniff=partial(scan_file, memo=memo))
    if src.suffix.lower() == ".npz":
        return scan_npz_memo(src, memo)
    return scan_file(src, memo=memo)


def scan_sources(sources: Iterable[str | Path], allow_outside: bool = False, threads: int = 4,
                 memo: ScanMemo | None = None) -> ScanResult:
    """All samples of all sources, in a stable order; files with the same bytes are flagged.

    ``memo`` (``featx.cache.read_memo(cache)``) lets unchanged files keep their content id
    without being read again; None hashes every file (``--rehash``).

    Raises SourceError only for a source that cannot be used at all (an unreadable manifest or
    npz); anything per-file becomes a Failure and the scan goes on.
    """
    total = ScanResult()
    seen: dict[str, Sample] = {}
    copies: dict[str, int] = {}
    for src in sources:
        src = Path(src)
        res = _scan_one_source(src, allow_outside, threads, memo)
        total.failures.extend(res.failures)
        for s in res.samples:
            first = seen.get(s.id)
            if first is None:
                seen[s.id] = s
                total.samples.append(s)
                continue
            if first.path == s.path:  # the same file named twice
                continue
            copies[s.id] = k = copies.get(s.id, 0) + 1
            total.samples.append(replace(s, id=f"{s.id}~{k}", duplicate_of=s.id))
            total.warnings.append(f"{s.path}: same bytes as {first.path}"
                                  + (f" (splits {first.split} and {s.split})" if first.split != s.split else ""))
    return total
