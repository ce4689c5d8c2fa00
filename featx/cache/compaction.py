"""Folding a layout-2 cache's shards into one block, and copying a cache with its shards."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from featx.cache.base import CacheLock, open_read, shards_dir, str_dtype
from featx.cache.committing import COPY_ROWS, commit, current_index
from featx.cache.journal import FileFacts
from featx.cache.store import (SAMPLES, STR_FIELDS, Index, SetShard, ShardWriter, read_index, remove_unreferenced_shards,
                               write_id_index, write_index)
from featx.errors import CacheError
from featx.safeio import io_reason, sigint_deferred


def compact(cache: str | Path, featx_version: str | None = None) -> dict:
    """Fold every block of ``cache`` into one: one samples shard and one shard per feature set.

    Takes the cache lock, commits a pending journal first, migrates a layout-1 file. The shards
    it replaces are removed once the new index is in place (close readers of the cache first).
    Returns ``{"shards_before", "shards_after", "rows"}``."""
    from featx import __version__
    cache = Path(cache)
    if not cache.exists():
        raise CacheError("no such cache", cache)
    version = featx_version or __version__
    with CacheLock(cache), sigint_deferred():
        commit(cache, version)
        idx = current_index(cache, version)
        remove_unreferenced_shards(cache, idx)
        before = len(idx.shards)
        if len(idx.starts) > 1:
            try:
                idx = _fold(cache, idx)
                write_index(cache, idx, version)
            except (OSError, RuntimeError) as e:
                raise CacheError(f"cannot compact the cache ({io_reason(e)}); the cache is unchanged", cache) from None
            remove_unreferenced_shards(cache, idx)
        return {"shards_before": before, "shards_after": len(idx.shards), "rows": idx.n}


def _fold(cache: Path, idx: Index) -> Index:
    import h5py
    folder, n = idx.folder(cache), idx.n
    out = Index(starts=[0], stops=[n], class_names=idx.class_names, sets=idx.sets, failures=idx.failures,
                dir_name=idx.dir_name)
    w = ShardWriter(folder, "s")
    try:
        w.f.attrs["featx_shard"] = "samples"
        dst = {k: w.f.create_dataset(k, shape=(n,), dtype=str_dtype()) for k in STR_FIELDS}
        dst["label"] = w.f.create_dataset("label", shape=(n,), dtype=np.int64)
        for k, v in FileFacts.unknown(0).arrays().items():
            dst[k] = w.f.create_dataset(k, shape=(n, *v.shape[1:]), dtype=str_dtype() if v.dtype.kind == "U" else v.dtype)
        keys, rows = [], []
        for b, (a, z) in enumerate(zip(idx.starts, idx.stops)):
            with h5py.File(folder / idx.shards[(b, SAMPLES)], "r") as f:
                for k in STR_FIELDS + ("label",):
                    dst[k][a:z] = f[k][()]
                for k, v in FileFacts.read(f).arrays().items():
                    dst[k][a:z] = v.astype(object) if v.dtype.kind == "U" else v
                keys.append(f["id_key"][()])
                rows.append(f["id_row"][()] + a)
        keys_all = np.concatenate(keys) if keys else np.zeros(0, "S1")
        order = np.argsort(keys_all, kind="stable")
        write_id_index(w.f, keys_all[order], np.concatenate(rows)[order].astype(np.int64))
        out.shards[(0, SAMPLES)] = w.close()
    except BaseException:
        w.abandon()
        raise
    for name, info in idx.sets.items():
        shard = SetShard(folder, n, info.width)
        try:
            for b, (a, z) in enumerate(zip(idx.starts, idx.stops)):
                src = idx.shards.get((b, name))
                if src is None:
                    continue
                with h5py.File(folder / src, "r") as f:
                    for c in range(a, z, COPY_ROWS):
                        e = min(z, c + COPY_ROWS)
                        shard.X[c:e] = f["X"][c - a:e - a]
                    shard.ok[a:z] = f["ok"][()]
            out.shards[(0, name)] = shard.close()
        except BaseException:
            shard.abandon()
            raise
    return out


def copy_cache(src: str | Path, dst: str | Path) -> Path:
    """Copy a cache (its index and, in layout 2, its shards) to ``dst``; ``dst`` must not exist.

    A layout-2 index names its shards relative to its own folder, so copying ``CACHE.h5`` alone
    gives a cache whose shards are missing (featx says so when opening it): use this instead."""
    from featx import __version__
    src, dst = Path(src), Path(dst)
    if dst.exists() or shards_dir(dst).exists():
        raise CacheError("destination exists", dst)
    with CacheLock(src):
        with open_read(src) as f:
            if "shards" not in f:  # layout 1: one self-contained file
                shutil.copy2(src, dst)
                return dst
            idx = read_index(f)
        shutil.copytree(idx.folder(src), shards_dir(dst))
        idx.dir_name = shards_dir(dst).name
        write_index(dst, idx, __version__)
    return dst
