"""Names, paths, opening and locking shared by the cache modules (see featx.cache for the layout)."""
from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from featx.check import HDF5_SIGNATURE, structure_problems
from featx.errors import CacheError, CacheLockedError
from featx.safeio import ExclusiveLockFile, LockFileBusy, not_regular_reason

log = logging.getLogger("featx")
_STR = None  # set lazily: h5py.string_dtype()


def str_dtype():
    """h5py's variable-length UTF-8 string type (created on first use: h5py imports lazily)."""
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


def shards_dir(cache: str | Path) -> Path:
    """The folder of a layout-2 cache's immutable shard files (``CACHE.h5.shards/``)."""
    return Path(str(cache) + ".shards")


def decoded_strs(ds) -> np.ndarray:
    """A string dataset's values as an object array of str."""
    return np.array([s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]], dtype=object)


def one_line(e: BaseException, limit: int = 300) -> str:
    return " ".join(str(e).split())[:limit]


def open_read(path: str | Path, labels: bool = True):
    """The cache opened for reading, its structure checked (featx.check; ``labels`` False skips
    the check that reads every label): CacheError if not."""
    import h5py
    path = Path(path)
    reason = not_regular_reason(path)
    if reason is not None:
        raise CacheError(f"cache {reason}", path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(f"not a readable HDF5 file ({one_line(e)})", path) from None
    try:
        problems = structure_problems(f, labels)
    except Exception as e:  # a damaged object header
        problems = [f"cannot read the cache's structure ({type(e).__name__}: {one_line(e)})"]
    if problems:
        f.close()
        more = f" (and {len(problems) - 1} more; `featx check` lists them)" if len(problems) > 1 else ""
        raise CacheError(problems[0] + more, path)
    return f


@contextmanager
def reading(path):
    """Turn an error met while reading a structurally sound cache (a damaged chunk) into one line."""
    try:
        yield
    except CacheError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise CacheError(f"cannot read the cache ({type(e).__name__}: {one_line(e)}); "
                         "`featx check` lists its problems", path) from None


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


def tmp_name(cache: Path, token: str) -> Path:
    """The temporary name a commit writes the new index (or a v1 file) under, beside ``cache``."""
    return cache.parent / f"{cache.name}.tmp-featx-{os.getpid()}-{token}"


def _tmp_pattern(cache: Path) -> re.Pattern:
    """Names of the temporary files featx's commit writes beside ``cache`` (and only those)."""
    return re.compile(re.escape(cache.name) + r"\.tmp-featx-\d+-[0-9a-f]{8}")


def remove_stale_tmp(cache: Path) -> None:
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


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())
