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
class FileFacts:
    """Per sample, what the scan memo keeps of its source file: the resolved path, its (size,
    mtime_ns, ctime_ns, inode) when its content id was computed (-1 = unknown), the reader its
    signature chose ("image", "dicom", "npz"; "" = unknown), the frames it holds and the group its
    header names (a DICOM's PatientID). With these a re-scan rebuilds an unchanged file's samples
    without opening it (featx.sources.base.memo_samples)."""

    files: list[str]
    stats: np.ndarray          # int64 [n, 4]
    readers: list[str]
    frames: np.ndarray         # int64 [n]
    groups: list[str]

    @classmethod
    def unknown(cls, n: int) -> "FileFacts":
        return cls([""] * n, np.full((n, 4), -1, np.int64), [""] * n, np.ones(n, np.int64), [""] * n)

    @classmethod
    def read(cls, f) -> "FileFacts":
        """The facts a samples shard (or journal record) ``f`` holds; columns it predates are unknown."""
        def strs(key, n):
            if key not in f:
                return [""] * n
            return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(f[key][()])]
        stats = np.asarray(f[_KEYS["stats"]][()], np.int64).reshape(-1, 4)
        n = len(stats)
        frames = np.asarray(f[_KEYS["frames"]][()], np.int64) if _KEYS["frames"] in f else np.ones(n, np.int64)
        return cls(strs(_KEYS["files"], n), stats, strs(_KEYS["readers"], n), frames, strs(_KEYS["groups"], n))

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns by their stored names (samples shard and journal record alike)."""
        return {_KEYS["files"]: _u(self.files), _KEYS["stats"]: np.asarray(self.stats, np.int64).reshape(-1, 4),
                _KEYS["readers"]: _u(self.readers), _KEYS["frames"]: np.asarray(self.frames, np.int64),
                _KEYS["groups"]: _u(self.groups)}

    @classmethod
    def concat(cls, parts: list["FileFacts"]) -> "FileFacts":
        if not parts:
            return cls.unknown(0)
        return cls([v for p in parts for v in p.files], np.concatenate([p.stats for p in parts]),
                   [v for p in parts for v in p.readers], np.concatenate([p.frames for p in parts]),
                   [v for p in parts for v in p.groups])

    def take(self, rows) -> "FileFacts":
        rows = np.asarray(rows, np.int64)
        return FileFacts([self.files[r] for r in rows], self.stats[rows], [self.readers[r] for r in rows],
                         self.frames[rows], [self.groups[r] for r in rows])


_KEYS = {"files": "file", "stats": "file_stat", "readers": "file_reader", "frames": "file_frames",
         "groups": "file_group"}


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
    file_readers: list[str] = field(default_factory=list)
    file_frames: list[int] = field(default_factory=list)
    file_groups: list[str] = field(default_factory=list)

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
        self.file_readers.append(getattr(s, "reader", "") or "")
        self.file_frames.append(int(getattr(s, "file_frames", 1)))
        self.file_groups.append(getattr(s, "header_group", "") or "")

    def sample_files(self) -> FileFacts:
        """The FileFacts of the record's samples (unknown where it has none: "" and -1)."""
        n = len(self.ids)
        if len(self.files) != n or len(self.file_stats) != n:
            return FileFacts.unknown(n)
        facts = FileFacts(list(self.files), np.array(self.file_stats, dtype=np.int64).reshape(-1, 4), [""] * n,
                          np.ones(n, np.int64), [""] * n)
        if len(self.file_readers) == len(self.file_frames) == len(self.file_groups) == n:
            facts.readers, facts.groups = list(self.file_readers), list(self.file_groups)
            facts.frames = np.array(self.file_frames, np.int64)
        return facts


def _u(values: Iterable[str]) -> np.ndarray:
    arr = np.array([str(v) for v in values], dtype=np.str_)
    return arr if arr.size else np.zeros(0, dtype="<U1")


class Journal:
    """Append-only batch records beside the cache, each written atomically.

    Records are named ``<owner pid>-<run>-<seq>.npz`` and committed in name order. A Ray worker
    writes its batches' records itself with the driver's ``token`` (owner pid, run) and the batch's
    first item as ``order`` (``<owner>-<run>-<order>-<writer pid>.npz``): the cache gets the rows in
    the driver's order, and a batch computed twice (a retried batch) is two records of the same
    rows, which the commit applies once."""

    def __init__(self, cache: str | Path, token: tuple[int, str] | None = None):
        self.dir = journal_dir(cache)
        self.token = token or (os.getpid(), uuid.uuid4().hex[:8])
        self._seq = 0

    def append(self, rec: BatchRecord, order: int | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {"ids": _u(rec.ids), "paths": _u(rec.paths), "labels": _u(rec.labels),
                  "groups": _u(rec.groups), "splits": _u(rec.splits), "dups": _u(rec.duplicate_of),
                  **{"memo_" + k: v for k, v in rec.sample_files().arrays().items()},
                  "fail_path": _u(p for p, _, _ in rec.failures), "fail_reason": _u(r for _, r, _ in rec.failures),
                  "fail_stage": _u(s for _, _, s in rec.failures), "n_sets": np.array(len(rec.sets))}
        for k, s in enumerate(rec.sets):
            arrays[f"set{k}_name"] = np.array(s.name)
            arrays[f"set{k}_config"] = np.array(config_json(s.config))
            arrays[f"set{k}_kind"] = np.array(s.kind)
            arrays[f"set{k}_ids"] = _u(s.ids)
            arrays[f"set{k}_X"] = np.asarray(s.X, dtype=np.float32)
            arrays[f"set{k}_request"] = np.array(s.request)
        owner, run = self.token
        if order is None:
            self._seq += 1
            final = self.dir / f"{owner:08d}-{run}-{self._seq:09d}.npz"
        else:
            final = self.dir / f"{owner:08d}-{run}-{order:09d}-{os.getpid()}.npz"
        tmp = final.with_suffix(".tmp")   # never read: a writer killed before the rename leaves only this
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
            if "memo_file" in z.files:  # records written before the scan memo have none
                facts = FileFacts.read({k[5:]: z[k] for k in z.files if k.startswith("memo_")})
                rec.files, rec.file_readers, rec.file_groups = facts.files, facts.readers, facts.groups
                rec.file_stats = [tuple(r) for r in facts.stats.tolist()]
                rec.file_frames = facts.frames.tolist()
            elif "files" in z.files:  # written by featx 0.x before the reader kind was kept
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


def remove_stale_tmp_records(cache: str | Path) -> int:
    """Delete the ``*.tmp`` files of journal writers killed before their rename (call with the cache
    lock held, when no writer of this cache runs: they are never read, only cleared away)."""
    d = journal_dir(cache)
    removed = 0
    if d.is_dir():
        for p in d.glob("*.tmp"):
            p.unlink(missing_ok=True)
            removed += 1
    return removed


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
