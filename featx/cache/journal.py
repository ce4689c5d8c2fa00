"""The journal: each batch's results appended beside the cache as one atomically renamed file.

Extraction appends a ``BatchRecord`` per batch to ``CACHE.h5.journal/`` (written to a temporary
name, fsynced, renamed), so a kill -9 loses at most the batch in flight; ``featx.cache.commit``
folds the records into the cache and only then removes them.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from featx.cache.base import config_json, journal_dir, log
from featx.errors import CacheError
from featx.safeio import not_regular_reason

NO_STAT = (-1, -1, -1, -1)


@dataclass
class SetRows:
    name: str
    config: dict
    kind: str
    ids: list[str]
    X: np.ndarray | tuple   # rows, or (journal file, key) when read back lazily
    request: str = ""   # key of the user-level options that produced this set (see featx.extraction)


@dataclass
class BatchRecord:
    """One batch of results: new samples' metadata, feature rows per set, failures.

    ``files`` and ``file_stats`` are the source file of each sample and its (size, mtime_ns,
    ctime_ns, inode) when its content id was computed: the cache keeps them as the scan memo."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)     # label names, "" = unknown
    groups: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    duplicate_of: list[str] = field(default_factory=list)
    sets: list[SetRows] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    file_stats: list[tuple[int, int, int, int]] = field(default_factory=list)

    def add_sample(self, s) -> None:
        """Record a featx.sources.Sample's metadata."""
        self.ids.append(s.id)
        self.paths.append(s.path)
        self.labels.append(s.label or "")
        self.groups.append(s.group)
        self.splits.append(s.split)
        self.duplicate_of.append(s.duplicate_of)
        self.files.append(getattr(s, "file", "") or "")
        self.file_stats.append(tuple(getattr(s, "file_stat", None) or NO_STAT))

    def sample_files(self) -> tuple[list[str], np.ndarray]:
        """(source file, [size, mtime_ns, ctime_ns, inode]) per sample; unknown ones are "" and -1."""
        n = len(self.ids)
        files = list(self.files) if len(self.files) == n else [""] * n
        stats = np.array(self.file_stats, dtype=np.int64).reshape(-1, 4) if len(self.file_stats) == n \
            else np.full((n, 4), -1, np.int64)
        return files, stats


def _u(values: Iterable[str]) -> np.ndarray:
    arr = np.array([str(v) for v in values], dtype=np.str_)
    return arr if arr.size else np.zeros(0, dtype="<U1")


class Journal:
    """Append-only batch records beside the cache, each written atomically."""

    def __init__(self, cache: str | Path):
        self.dir = journal_dir(cache)
        self._run = uuid.uuid4().hex[:8]
        self._seq = 0

    def append(self, rec: BatchRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        files, stats = rec.sample_files()
        arrays = {"ids": _u(rec.ids), "paths": _u(rec.paths), "labels": _u(rec.labels),
                  "groups": _u(rec.groups), "splits": _u(rec.splits), "dups": _u(rec.duplicate_of),
                  "files": _u(files), "file_stats": stats,
                  "fail_path": _u(p for p, _, _ in rec.failures), "fail_reason": _u(r for _, r, _ in rec.failures),
                  "fail_stage": _u(s for _, _, s in rec.failures), "n_sets": np.array(len(rec.sets))}
        for k, s in enumerate(rec.sets):
            arrays[f"set{k}_name"] = np.array(s.name)
            arrays[f"set{k}_config"] = np.array(config_json(s.config))
            arrays[f"set{k}_kind"] = np.array(s.kind)
            arrays[f"set{k}_ids"] = _u(s.ids)
            arrays[f"set{k}_X"] = np.asarray(s.X, dtype=np.float32)
            arrays[f"set{k}_request"] = np.array(s.request)
        self._seq += 1
        final = self.dir / f"{os.getpid():08d}-{self._run}-{self._seq:09d}.npz"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"cannot write the journal ({e.strerror or e}); rows computed so far "
                             "are kept and the cache is unchanged", self.dir) from None


def read_record(path: Path) -> BatchRecord | None:
    """A journal record with its feature rows left on disk, or None if it cannot be read."""
    if not_regular_reason(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            rec = BatchRecord(ids=list(z["ids"]), paths=list(z["paths"]), labels=list(z["labels"]),
                              groups=list(z["groups"]), splits=list(z["splits"]), duplicate_of=list(z["dups"]),
                              failures=list(zip(z["fail_path"], z["fail_reason"], z["fail_stage"])))
            if "files" in z.files:  # records written before the scan memo have none
                rec.files = list(z["files"])
                rec.file_stats = [tuple(r) for r in z["file_stats"].reshape(-1, 4).tolist()]
            for k in range(int(z["n_sets"])):
                # X stays on disk: commit reads it set by set, so memory does not grow with the run
                rec.sets.append(SetRows(str(z[f"set{k}_name"]), json.loads(str(z[f"set{k}_config"])),
                                        str(z[f"set{k}_kind"]), list(z[f"set{k}_ids"]), (path, f"set{k}_X"),
                                        str(z[f"set{k}_request"]) if f"set{k}_request" in z.files else ""))
            return rec
    except Exception:
        return None  # a torn file can only come from outside featx (we rename complete files)


def load_rows(where) -> np.ndarray:
    """A SetRows.X: the array itself, or read from its (journal file, key)."""
    if not isinstance(where, tuple):
        return np.asarray(where, dtype=np.float32)
    path, key = where
    with np.load(path, allow_pickle=False) as z:
        return np.asarray(z[key], dtype=np.float32)


def pending_records(cache: str | Path) -> list[Path]:
    d = journal_dir(cache)
    return sorted(d.glob("*.npz")) if d.is_dir() else []


def quarantine_dir(cache: str | Path) -> Path:
    return journal_dir(cache) / "quarantine"


def quarantine(cache: Path, record: Path) -> None:
    """Move an unreadable journal record aside (never delete what may be someone's rows) and say so."""
    dest = quarantine_dir(cache)
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(record, dest / record.name)
    log.warning("%s: unreadable journal record moved to %s (its rows, if any, are recomputed by the next run)",
                record, dest)


def read_pending(cache: Path) -> tuple[list[Path], list[BatchRecord]]:
    """Every readable journal record (unreadable ones are quarantined), oldest first."""
    paths, records = [], []
    for p in pending_records(cache):
        rec = read_record(p)
        if rec is None:
            quarantine(cache, p)
        else:
            paths.append(p)
            records.append(rec)
    return paths, records
