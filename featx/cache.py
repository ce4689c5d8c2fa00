"""The HDF5 feature cache: layout, reading, and crash-safe writing through a journal.

Layout (version 1), every dataset under /samples and /features row-aligned::

    /                     attrs featx_layout_version, featx_version
    /samples/id           str  sha256 of the file bytes [+ "#<index>" in multi-image files, "~<k>" for copies]
    /samples/path         str
    /samples/label        int64 (-1 = unknown); attr class_names (JSON list, index = label)
    /samples/group        str  (patient id; "" = none)
    /samples/split        str  (train / val / test / "")
    /samples/duplicate_of str  (id of an earlier file with the same bytes, or "")
    /features/<name>      float32 [n, d], chunked, gzip+shuffle; attrs config (JSON), kind
    /features/<name>_ok   bool [n]: row computed
    /failures/path, /failures/reason, /failures/stage   str

Writing never modifies the .h5 in place. Extraction appends each batch's results to a journal
folder beside it (``CACHE.h5.journal/``), one file per batch written to a temporary name and
renamed, so a kill -9 loses at most the batch in flight. ``commit`` merges the journal into a new
file and atomically replaces the cache; only then are the journal files removed. Applying a
record twice is harmless (rows are keyed by sample id), so a crash at any point is recovered by
the next run's commit. A lock file (``CACHE.h5.lock``, an fcntl lock that dies with its process)
keeps two writers apart.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from featx.check import HDF5_SIGNATURE, LAYOUT_VERSION, nonfinite_rows, structure_problems
from featx.errors import CacheError, CacheLockedError
from featx.table import FeatureTable  # noqa: F401  (defined there; featx.cache.FeatureTable stays)
from featx.safeio import (ExclusiveLockFile, LockFileBusy, fsync_dir, io_reason, not_regular_reason,
                          sigint_deferred)

log = logging.getLogger("featx")
_STR = None  # set lazily: h5py.string_dtype()


def _str_dtype():
    global _STR
    if _STR is None:
        import h5py
        _STR = h5py.string_dtype("utf-8")
    return _STR


def config_json(config: dict) -> str:
    """Canonical JSON of a config: equal configs give equal strings."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def journal_dir(cache: str | Path) -> Path:
    return Path(str(cache) + ".journal")


def lock_path(cache: str | Path) -> Path:
    return Path(str(cache) + ".lock")


# ----------------------------------------------------------------------------------------------
# Reading


def _open_read(path: str | Path):
    """The cache opened for reading, its structure checked (featx.check): CacheError if not."""
    import h5py
    path = Path(path)
    reason = not_regular_reason(path)
    if reason is not None:
        raise CacheError(f"cache {reason}", path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"not a readable HDF5 file ({' '.join(str(e).split())})", path) from None
    try:
        problems = structure_problems(f)
    except Exception as e:  # a damaged object header
        problems = [f"cannot read the cache's structure ({type(e).__name__}: {' '.join(str(e).split())})"]
    if problems:
        f.close()
        more = f" (and {len(problems) - 1} more; `featx check` lists them)" if len(problems) > 1 else ""
        raise CacheError(problems[0] + more, path)
    return f


@contextmanager
def _reading(path):
    """Turn an error met while reading a structurally sound cache (a damaged chunk) into one line."""
    try:
        yield
    except CacheError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CacheError(f"cannot read the cache ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
                         "`featx check` lists its problems", path) from None


def _strs(ds) -> np.ndarray:
    return np.array([s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]], dtype=object)


@dataclass
class CacheState:
    """What a cache holds, without the feature values."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)   # class names, "" = unknown
    groups: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    sets: dict[str, dict] = field(default_factory=dict)          # name -> config
    done: dict[str, set[str]] = field(default_factory=dict)      # name -> ids computed
    requests: dict[str, str] = field(default_factory=dict)       # request key -> set name
    failures: list[tuple[str, str, str]] = field(default_factory=list)


def read_state(path: str | Path) -> CacheState:
    """The cache's samples, sets, configs and which rows are done (empty state if no file).

    A row whose features hold NaN or infinity is not done, so the next extraction recomputes it."""
    path = Path(path)
    st = CacheState()
    if not os.path.lexists(path):
        return st
    with _open_read(path) as f, _reading(path):
        if "samples" in f:
            st.ids = list(_strs(f["samples/id"]))
            st.paths = list(_strs(f["samples/path"]))
            st.class_names = json.loads(f["samples/label"].attrs.get("class_names", "[]"))
            st.labels = [st.class_names[k] if k >= 0 else "" for k in f["samples/label"][()]]
            st.groups = list(_strs(f["samples/group"]))
            st.splits = list(_strs(f["samples/split"]))
        for name, cfg, ok in _iter_sets(f):
            st.sets[name] = cfg
            ok = ok.astype(bool) & ~nonfinite_rows(f["features"][name], ok.astype(bool))
            st.done[name] = {i for i, o in zip(st.ids, ok) if o}
            for key in json.loads(f["features"][name].attrs.get("requests", "[]")):
                st.requests[key] = name
        if "failures" in f:
            st.failures = list(zip(_strs(f["failures/path"]), _strs(f["failures/reason"]),
                                   _strs(f["failures/stage"])))
    return st


def _iter_sets(f):
    if "features" not in f:
        return
    for name in f["features"]:
        if name.endswith("_ok"):
            continue
        ds = f["features"][name]
        yield name, json.loads(ds.attrs["config"]), f["features"][name + "_ok"][()]


def list_sets(path: str | Path) -> dict[str, dict]:
    """Feature-set names and their configs."""
    with _open_read(path) as f, _reading(path):
        return {name: cfg for name, cfg, _ in _iter_sets(f)}


def parse_sets(sets: str | Sequence[str]) -> list[str]:
    if isinstance(sets, str):
        sets = sets.replace("+", ",").split(",")
    return [s.strip() for s in sets if s and s.strip()]


def load_features(cache: str | Path, sets: str | Sequence[str]) -> FeatureTable:
    """Features of one or more sets, concatenated in the order given, with labels and groups.

    Only rows computed in every requested set are returned. ``sets`` is a list of names or a
    string ``"a,b"`` / ``"a+b"``.
    """
    names = parse_sets(sets)
    if not names:
        raise CacheError("no feature set named", cache)
    with _open_read(cache) as f, _reading(cache):
        available = [n for n in f.get("features", {}) if not n.endswith("_ok")]
        for n in names:
            if n not in available:
                raise CacheError(f"no feature set {n!r} (available: {', '.join(available) or 'none'})", cache)
        ok = np.ones(f["samples/id"].shape[0], dtype=bool)
        for n in names:
            ok &= f["features"][n + "_ok"][()].astype(bool)
        rows = np.flatnonzero(ok)
        blocks, slices, configs, start = [], {}, {}, 0
        for n in names:
            ds = f["features"][n]
            block = ds[()][rows] if len(rows) > ds.shape[0] // 2 else ds[rows] if len(rows) else np.zeros((0, ds.shape[1]), np.float32)
            blocks.append(np.asarray(block, dtype=np.float32))
            slices[n] = slice(start, start + ds.shape[1])
            start += ds.shape[1]
            configs[n] = json.loads(ds.attrs["config"])
        label = f["samples/label"]
        return FeatureTable(
            X=np.hstack(blocks) if blocks else np.zeros((len(rows), 0), np.float32),
            y=label[()][rows].astype(np.int64),
            groups=_strs(f["samples/group"])[rows],
            ids=_strs(f["samples/id"])[rows],
            splits=_strs(f["samples/split"])[rows],
            paths=_strs(f["samples/path"])[rows],
            class_names=json.loads(label.attrs.get("class_names", "[]")),
            set_slices=slices, configs=configs, source=str(cache),
            duplicate_of=_strs(f["samples/duplicate_of"])[rows] if "samples/duplicate_of" in f else None,
        )


# ----------------------------------------------------------------------------------------------
# Locking


class CacheLock:
    """An exclusive, non-blocking lock on a cache; released on exit or when the process dies.

    Its lock file (``CACHE.lock``) exists only while the lock is held (featx.safeio.ExclusiveLockFile)."""

    def __init__(self, cache: str | Path):
        self.cache = Path(cache)
        self._lock = ExclusiveLockFile(lock_path(cache))

    def __enter__(self):
        try:
            self._lock.acquire()
        except LockFileBusy:
            raise CacheLockedError("cache is in use by another featx process (its lock "
                                   f"{lock_path(self.cache).name} is held); wait for it to finish",
                                   self.cache) from None
        return self

    def __exit__(self, *exc):
        self._lock.release()


def _tmp_pattern(cache: Path) -> re.Pattern:
    """Names of the temporary files featx's commit writes beside ``cache`` (and only those)."""
    return re.compile(re.escape(cache.name) + r"\.tmp-featx-\d+-[0-9a-f]{8}")


def _remove_stale_tmp(cache: Path) -> None:
    """Remove temporary files a killed commit of this cache left (call with the lock held).

    Only files with featx's own temporary name that are empty or HDF5 are removed: a user's
    ``CACHE.tmp-notes`` is never touched."""
    pattern = _tmp_pattern(cache)
    for p in cache.parent.glob(cache.name + ".tmp-featx-*"):
        if not pattern.fullmatch(p.name) or not_regular_reason(p):
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(8)
        except OSError:
            continue
        if head in (b"", HDF5_SIGNATURE):
            p.unlink(missing_ok=True)


def quarantine_dir(cache: str | Path) -> Path:
    return journal_dir(cache) / "quarantine"


def _quarantine(cache: Path, record: Path) -> None:
    """Move an unreadable journal record aside (never delete what may be someone's rows) and say so."""
    dest = quarantine_dir(cache)
    dest.mkdir(parents=True, exist_ok=True)
    os.replace(record, dest / record.name)
    log.warning("%s: unreadable journal record moved to %s (its rows, if any, are recomputed by the next run)",
                record, dest)


# ----------------------------------------------------------------------------------------------
# Journal


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
    """One batch of results: new samples' metadata, feature rows per set, failures."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)     # label names, "" = unknown
    groups: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    duplicate_of: list[str] = field(default_factory=list)
    sets: list[SetRows] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def add_sample(self, s) -> None:
        """Record a featx.sources.Sample's metadata."""
        self.ids.append(s.id)
        self.paths.append(s.path)
        self.labels.append(s.label or "")
        self.groups.append(s.group)
        self.splits.append(s.split)
        self.duplicate_of.append(s.duplicate_of)


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
        arrays = {"ids": _u(rec.ids), "paths": _u(rec.paths), "labels": _u(rec.labels),
                  "groups": _u(rec.groups), "splits": _u(rec.splits), "dups": _u(rec.duplicate_of),
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


def _read_record(path: Path) -> BatchRecord | None:
    if not_regular_reason(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            rec = BatchRecord(ids=list(z["ids"]), paths=list(z["paths"]), labels=list(z["labels"]),
                              groups=list(z["groups"]), splits=list(z["splits"]), duplicate_of=list(z["dups"]),
                              failures=list(zip(z["fail_path"], z["fail_reason"], z["fail_stage"])))
            for k in range(int(z["n_sets"])):
                # X stays on disk: commit reads it set by set, so memory does not grow with the run
                rec.sets.append(SetRows(str(z[f"set{k}_name"]), json.loads(str(z[f"set{k}_config"])),
                                        str(z[f"set{k}_kind"]), list(z[f"set{k}_ids"]), (path, f"set{k}_X"),
                                        str(z[f"set{k}_request"]) if f"set{k}_request" in z.files else ""))
            return rec
    except Exception:
        return None  # a torn file can only come from outside featx (we rename complete files)


def _load_rows(where) -> np.ndarray:
    path, key = where
    with np.load(path, allow_pickle=False) as z:
        return np.asarray(z[key], dtype=np.float32)


def pending_records(cache: str | Path) -> list[Path]:
    d = journal_dir(cache)
    return sorted(d.glob("*.npz")) if d.is_dir() else []


# ----------------------------------------------------------------------------------------------
# Commit


def _runs(idx: np.ndarray):
    """Split sorted indices into (start, stop, positions) runs of consecutive values."""
    if len(idx) == 0:
        return
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(idx)]])
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield int(idx[a]), int(idx[b - 1]) + 1, slice(int(a), int(b))


def commit(cache: str | Path, featx_version: str | None = None) -> dict:
    """Merge every journal record into the cache, atomically. Call with the cache lock held.

    Returns counts: ``{"records", "new_samples", "rows", "stale"}``. A Ctrl-C during the commit
    is held back until it is done (then raised), so an interrupted run still leaves its rows
    committed; a kill -9 leaves the old cache and the journal, as before.
    """
    with sigint_deferred():
        return _commit(cache, featx_version)


def _commit(cache: str | Path, featx_version: str | None = None) -> dict:
    import h5py
    cache = Path(cache)
    _remove_stale_tmp(cache)
    records_paths = pending_records(cache)
    if not records_paths and cache.exists():
        return {"records": 0, "new_samples": 0, "rows": 0, "stale": 0}
    records = []
    for p in list(records_paths):
        rec = _read_record(p)
        if rec is None:
            _quarantine(cache, p)
            records_paths.remove(p)
        else:
            records.append(rec)
    if featx_version is None:
        from featx import __version__ as featx_version

    old = _open_read(cache) if cache.exists() else None
    try:
        ids = list(_strs(old["samples/id"])) if old is not None and "samples" in old else []
        meta = {k: (list(_strs(old[f"samples/{k}"])) if old is not None and f"samples/{k}" in old else [""] * len(ids))
                for k in ("path", "group", "split", "duplicate_of")}
        labels = list(old["samples/label"][()]) if old is not None and "samples" in old else []
        class_names = json.loads(old["samples/label"].attrs.get("class_names", "[]")) if old is not None and "samples" in old else []
        index = {i: r for r, i in enumerate(ids)}
        n_old = len(ids)

        # 1. new samples, with new class names appended in sorted order (old indices never move)
        new_labels = sorted({lab for rec in records for lab in rec.labels if lab and lab not in class_names})
        class_names = class_names + new_labels
        cls_index = {c: k for k, c in enumerate(class_names)}
        for rec in records:
            for k, sid in enumerate(rec.ids):
                if sid in index:  # known sample: fill in what was unknown, never overwrite
                    r = index[sid]
                    if labels[r] < 0 and rec.labels[k]:
                        labels[r] = cls_index[rec.labels[k]]
                    for key, vals in (("group", rec.groups), ("split", rec.splits)):
                        if not meta[key][r] and vals[k]:
                            meta[key][r] = vals[k]
                    continue
                index[sid] = len(ids)
                ids.append(sid)
                meta["path"].append(rec.paths[k])
                meta["group"].append(rec.groups[k])
                meta["split"].append(rec.splits[k])
                meta["duplicate_of"].append(rec.duplicate_of[k] if rec.duplicate_of else "")
                labels.append(cls_index[rec.labels[k]] if rec.labels[k] else -1)
        n = len(ids)

        # 2. feature rows per set; a record whose config disagrees with the set's is stale
        existing = {name: cfg for name, cfg, _ in _iter_sets(old)} if old is not None else {}
        set_cfg: dict[str, tuple[dict, str]] = {name: (cfg, old["features"][name].attrs.get("kind", "deep"))
                                                for name, cfg in existing.items()}
        rows: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        requests: dict[str, list[str]] = {name: json.loads(old["features"][name].attrs.get("requests", "[]"))
                                          for name in existing}
        stale = 0
        for rec in records:
            for s in rec.sets:
                if s.name in set_cfg and config_json(set_cfg[s.name][0]) != config_json(s.config):
                    stale += len(s.ids)
                    continue
                set_cfg.setdefault(s.name, (s.config, s.kind))
                req = requests.setdefault(s.name, [])
                if s.request and s.request not in req:
                    req.append(s.request)
                r = np.array([index[i] for i in s.ids], dtype=np.int64)
                rows.setdefault(s.name, []).append((r, s.X))

        # 3. failures: newest word per path; a path that now has a sample is no longer failed
        fails: dict[str, tuple[str, str]] = {}
        if old is not None and "failures" in old:
            for p, r, s in zip(_strs(old["failures/path"]), _strs(old["failures/reason"]), _strs(old["failures/stage"])):
                fails[p] = (r, s)
        for rec in records:
            for p, r, s in rec.failures:
                fails[str(p)] = (str(r), str(s))
        for rec in records:
            for p in rec.paths:
                fails.pop(p, None)

        tmp = cache.parent / f"{cache.name}.tmp-featx-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        total_rows = 0
        _check_space(cache, records_paths)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["featx_layout_version"] = LAYOUT_VERSION
                f.attrs["featx_version"] = featx_version
                g = f.create_group("samples")
                g.create_dataset("id", data=np.array(ids, dtype=object), dtype=_str_dtype())
                for k in ("path", "group", "split", "duplicate_of"):
                    g.create_dataset(k, data=np.array(meta[k], dtype=object), dtype=_str_dtype())
                lab = g.create_dataset("label", data=np.array(labels, dtype=np.int64).reshape(-1))
                lab.attrs["class_names"] = json.dumps(class_names)
                fg = f.create_group("features")
                for name, (cfg, kind) in set_cfg.items():
                    d = None
                    if name in existing:
                        d = old["features"][name].shape[1]
                    else:
                        d = _load_rows(rows[name][0][1]).shape[1]
                    chunk_rows = max(1, min(1024, (1 << 20) // max(1, 4 * d)))
                    ds = fg.create_dataset(name, shape=(n, d), maxshape=(None, d), dtype=np.float32,
                                           chunks=(chunk_rows, d), compression="gzip", compression_opts=1,
                                           shuffle=True, fillvalue=0.0)
                    ds.attrs["config"] = config_json(cfg)
                    ds.attrs["kind"] = kind
                    ds.attrs["requests"] = json.dumps(requests.get(name, []))
                    ok = np.zeros(n, dtype=bool)
                    if name in existing:
                        src = old["features"][name]
                        step = chunk_rows * 16
                        for a in range(0, n_old, step):
                            ds[a:min(n_old, a + step)] = src[a:min(n_old, a + step)]
                        ok[:n_old] = old["features"][name + "_ok"][()].astype(bool)
                    for r, where in rows.get(name, []):
                        X = _load_rows(where)
                        if X.shape[1] != d:
                            raise CacheError(f"feature set {name!r} has width {d} but a journal record has "
                                             f"{X.shape[1]}", cache)
                        order = np.argsort(r, kind="stable")
                        r, X = r[order], X[order]
                        for a, b, pos in _runs(r):
                            ds[a:b] = X[pos]
                        ok[r] = True
                        total_rows += len(r)
                    fg.create_dataset(name + "_ok", data=ok)
                fl = f.create_group("failures")
                for key, vals in (("path", list(fails)), ("reason", [v[0] for v in fails.values()]),
                                  ("stage", [v[1] for v in fails.values()])):
                    fl.create_dataset(key, data=np.array(vals, dtype=object), dtype=_str_dtype())
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except (OSError, RuntimeError) as e:  # h5py reports a write that failed at close as RuntimeError
            tmp.unlink(missing_ok=True)
            raise CacheError(f"cannot write the cache ({io_reason(e)}); the cache is "
                             "unchanged and computed rows stay in its journal for the next run", cache) from None
    finally:
        if old is not None:
            old.close()
    os.replace(tmp, cache)
    fsync_dir(cache.parent)
    for p in records_paths:
        p.unlink(missing_ok=True)
    d = journal_dir(cache)
    if d.is_dir() and not any(d.iterdir()):
        d.rmdir()
    return {"records": len(records), "new_samples": n - n_old, "rows": total_rows, "stale": stale}


def _check_space(cache: Path, records_paths: list[Path]) -> None:
    """Refuse a commit that cannot fit before HDF5 starts writing: after a failed write (ENOSPC)
    libhdf5's objects are left broken and the process crashes (SIGSEGV) when they are freed."""
    import shutil
    try:  # the journal holds the new rows and names uncompressed: an upper bound of what they add
        need = (cache.stat().st_size if cache.exists() else 0) + sum(p.stat().st_size for p in records_paths)
        need = int(need * 1.05) + (64 << 10)
        free = shutil.disk_usage(cache.parent).free
    except OSError:
        return
    if free < need:
        raise CacheError(f"cannot write the cache (No space left on device: about {need / 1e6:.1f} MB needed, "
                         f"{free / 1e6:.1f} MB free); the cache is unchanged and computed rows stay in its "
                         "journal for the next run", cache)
