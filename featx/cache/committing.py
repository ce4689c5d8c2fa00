"""Committing the journal into a layout-2 cache, migrating a layout-1 file, and compacting.

A commit writes new shards for what the journal adds (a block for new samples; a replacement
shard for a block whose rows of a set or whose metadata change), then swaps in a new index. Its
cost grows with the rows added and the number of shards, not with the rows already cached (a
block touched by new rows of an old sample is rewritten: that costs the block's size).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from featx.cache.base import decoded_strs, log, open_read, remove_stale_tmp, shards_dir
from featx.cache.journal import BatchRecord, FileFacts, load_rows, read_pending, remove_stale_tmp_records
from featx.cache.store import (SAMPLES, STR_FIELDS, Index, SetInfo, SetShard, bloom_hashes, find_ids, read_index,
                               remove_unreferenced_shards, write_index, write_samples_shard)
from featx.cache.base import config_json
from featx.errors import CacheError
from featx.safeio import io_reason, sigint_deferred

COPY_ROWS = 16384


def _version(featx_version):
    if featx_version is None:
        from featx import __version__ as featx_version
    return featx_version


def commit(cache: str | Path, featx_version: str | None = None) -> dict:
    """Fold every journal record into the cache, atomically. Call with the cache lock held.

    Returns counts: ``{"records", "new_samples", "rows", "stale"}``. A Ctrl-C during the commit
    is held back until it is done (then raised), so an interrupted run still leaves its rows
    committed; a kill -9 leaves the old index (and shards nobody names, removed next time) and the
    journal, so the next run's commit does it again.
    """
    with sigint_deferred():
        return _commit(Path(cache), _version(featx_version))


def layout_version(cache: Path) -> int | None:
    """The layout version of an existing cache file (structure checked), or None if there is none."""
    if not cache.exists():
        return None
    with open_read(cache) as f:
        return int(np.asarray(f.attrs["featx_layout_version"]).item())


def current_index(cache: Path, featx_version: str) -> Index:
    """The cache's index, migrating a layout-1 file first (once); an empty Index if no file.

    Opened once, without reading every label (featx.check.structure_problems): its cost does not
    grow with the rows."""
    if not cache.exists():
        return Index()
    with open_read(cache, labels=False) as f:
        if int(np.asarray(f.attrs["featx_layout_version"]).item()) >= 2:
            return read_index(f)
    migrate_v1(cache, featx_version)
    with open_read(cache, labels=False) as f:
        return read_index(f)


def _commit(cache: Path, featx_version: str) -> dict:
    remove_stale_tmp(cache)
    remove_stale_tmp_records(cache)
    records_paths, records = read_pending(cache)
    if not records_paths and cache.exists():
        return {"records": 0, "new_samples": 0, "rows": 0, "stale": 0}
    try:
        idx = current_index(cache, featx_version)
        remove_unreferenced_shards(cache, idx)
        _check_space(cache, records_paths)
        counts = _apply(cache, idx, records)
        write_index(cache, idx, featx_version)
    except (OSError, RuntimeError) as e:  # h5py reports a write that failed at close as RuntimeError
        raise CacheError(f"cannot write the cache ({io_reason(e)}); the cache is unchanged and computed "
                         "rows stay in its journal for the next run", cache) from None
    for p in records_paths:
        p.unlink(missing_ok=True)
    d = records_paths[0].parent if records_paths else None
    if d is not None and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
    return dict(counts, records=len(records))


def _open_shard(folder: Path, name: str):
    import h5py
    return h5py.File(folder / name, "r")


def _find_rows(cache: Path, idx: Index, ids: list[str]) -> dict[str, int]:
    """Row of each of ``ids`` the cache already holds (each block's bloom filter and fence keys
    are read, not its ids: featx.cache.store.find_ids)."""
    found: dict[str, int] = {}
    if not ids:
        return found
    query = np.array([i.encode() for i in ids], dtype=bytes)
    hashes = bloom_hashes(query)
    for b, start in enumerate(idx.starts):
        with _open_shard(idx.folder(cache), idx.shards[(b, SAMPLES)]) as f:
            hit, rows = find_ids(f, query, hashes)
            for q, r in zip(hit.tolist(), rows.tolist()):
                found[ids[q]] = start + r
    return found


def _apply(cache: Path, idx: Index, records: list[BatchRecord]) -> dict:
    """Write the shards the records add and update ``idx`` to name them (the index is not written)."""
    wanted = list(dict.fromkeys(i for rec in records for i in rec.ids))
    row_of = _find_rows(cache, idx, wanted)
    n_old = idx.n
    new_labels = sorted({lab for rec in records for lab in rec.labels if lab and lab not in idx.class_names})
    idx.class_names = idx.class_names + new_labels
    cls = {c: k for k, c in enumerate(idx.class_names)}

    # 1. new samples get the next rows; known ones may have unknown label/group/split filled in
    new = {k: [] for k in STR_FIELDS}
    new_labels_idx, new_facts = [], []
    fills: dict[int, dict[int, tuple[str, str, str]]] = {}
    for rec in records:
        facts, taken = rec.sample_files(), []
        dups = rec.duplicate_of if rec.duplicate_of else [""] * len(rec.ids)
        for k, sid in enumerate(rec.ids):
            if sid in row_of:
                r = row_of[sid]
                if r < n_old and (rec.labels[k] or rec.groups[k] or rec.splits[k]):
                    b = int(idx.block_of(np.array([r]))[0])
                    fills.setdefault(b, {})[r - idx.starts[b]] = (rec.labels[k], rec.groups[k], rec.splits[k])
                continue
            row_of[sid] = n_old + len(new["id"])
            for key, val in zip(STR_FIELDS, (sid, rec.paths[k], rec.groups[k], rec.splits[k], dups[k])):
                new[key].append(str(val))
            new_labels_idx.append(cls[rec.labels[k]] if rec.labels[k] else -1)
            taken.append(k)
        new_facts.append(facts.take(taken))
    n_new = len(new["id"])

    # 2. feature rows per (block, set); a record whose config disagrees with the set's is stale
    plan: dict[tuple[int, str], list[tuple[object, np.ndarray, np.ndarray]]] = {}
    stale = 0
    new_block = len(idx.starts)
    for rec in records:
        for s in rec.sets:
            info = idx.sets.get(s.name)
            if info is not None and config_json(info.config) != config_json(s.config):
                stale += len(s.ids)
                continue
            if info is None:
                info = idx.sets[s.name] = SetInfo(s.config, s.kind, int(load_rows(s.X).shape[1]))
            if s.request and s.request not in info.requests:
                info.requests.append(s.request)
            try:
                rows = np.array([row_of[i] for i in s.ids], dtype=np.int64)
            except KeyError as e:
                raise CacheError(f"a journal record holds rows of set {s.name!r} for sample {e.args[0]} "
                                 "that no record describes", cache) from None
            blocks = np.where(rows >= n_old, new_block, idx.block_of(rows) if n_old else new_block)
            for b in np.unique(blocks):
                pos = np.flatnonzero(blocks == b)
                start = n_old if b == new_block else idx.starts[b]
                plan.setdefault((int(b), s.name), []).append((s.X, pos, rows[pos] - start))

    written = 0
    if n_new:
        name = write_samples_shard(idx.folder(cache), new, np.array(new_labels_idx, np.int64),
                                   FileFacts.concat(new_facts))
        idx.starts.append(n_old)
        idx.stops.append(n_old + n_new)
        idx.shards[(new_block, SAMPLES)] = name
    for b, fill in fills.items():
        _fill_metadata(cache, idx, b, fill, cls)
    for (b, set_name), parts in plan.items():
        written += _write_set_rows(cache, idx, b, set_name, parts)

    # 3. failures: newest word per path; a path that now has a sample is no longer failed
    for rec in records:
        for p, r, s in rec.failures:
            idx.failures[str(p)] = (str(r), str(s))
    for rec in records:
        for p in rec.paths:
            idx.failures.pop(p, None)
    return {"new_samples": n_new, "rows": written, "stale": stale}


def _fill_metadata(cache: Path, idx: Index, b: int, fill: dict, cls: dict) -> None:
    """Rewrite block ``b``'s samples shard if a label, group or split it lacks is now known."""
    with _open_shard(idx.folder(cache), idx.shards[(b, SAMPLES)]) as f:
        meta = {k: list(decoded_strs(f[k])) for k in STR_FIELDS}
        labels = f["label"][()]
        facts = FileFacts.read(f)
    changed = False
    for r, (label, group, split) in fill.items():
        if labels[r] < 0 and label:
            labels[r], changed = cls[label], True
        for key, val in (("group", group), ("split", split)):
            if not meta[key][r] and val:
                meta[key][r], changed = val, True
    if changed:
        idx.shards[(b, SAMPLES)] = write_samples_shard(idx.folder(cache), meta, labels, facts)


def _write_set_rows(cache: Path, idx: Index, b: int, name: str, parts) -> int:
    """A new shard of set ``name`` for block ``b``: the old shard's rows (if any) plus the new ones.

    Rows already computed are kept as they are (a journal record applied twice adds nothing), so
    a re-run's recovery of an already committed record rewrites nothing."""
    info = idx.sets[name]
    rows_in_block = idx.stops[b] - idx.starts[b]
    old = idx.shards.get((b, name))
    old_ok = np.zeros(rows_in_block, bool)
    if old is not None:
        with _open_shard(idx.folder(cache), old) as f:
            old_ok = f["ok"][()].astype(bool)
    todo = [(where, pos, local) for where, pos, local in parts if (~old_ok[local]).any()]
    if not todo:
        return 0
    shard = SetShard(idx.folder(cache), rows_in_block, info.width)
    try:
        if old is not None:
            with _open_shard(idx.folder(cache), old) as f:
                for a in range(0, rows_in_block, COPY_ROWS):
                    z = min(rows_in_block, a + COPY_ROWS)
                    if old_ok[a:z].any():
                        shard.X[a:z] = f["X"][a:z]
            shard.ok[:] = old_ok
        written = 0
        for where, pos, local in todo:
            X = load_rows(where)
            if X.shape[1] != info.width:
                raise CacheError(f"feature set {name!r} has width {info.width} but a journal record has "
                                 f"{X.shape[1]}", cache)
            fresh = ~old_ok[local]
            shard.put(local[fresh], X[pos[fresh]])
            written += int(fresh.sum())
        idx.shards[(b, name)] = shard.close()
        return written
    except BaseException:
        shard.abandon()
        raise


def migrate_v1(cache: Path, featx_version: str) -> None:
    """Turn a layout-1 file into layout 2 (one block holding every row), once, atomically."""
    from featx.check import nonfinite_rows
    with open_read(cache) as f:
        idx = Index()
        n = f["samples/id"].shape[0] if "samples" in f else 0
        if n:
            meta = {k: list(decoded_strs(f[f"samples/{k}"])) if f"samples/{k}" in f else [""] * n for k in STR_FIELDS}
            idx.class_names = json_list(f["samples/label"].attrs.get("class_names", "[]"))
            idx.shards[(0, SAMPLES)] = write_samples_shard(idx.folder(cache), meta, f["samples/label"][()],
                                                           FileFacts.unknown(n))
            idx.starts, idx.stops = [0], [n]
        for name in f.get("features", {}) if n else ():
            if name.endswith("_ok"):
                continue
            ds = f["features"][name]
            idx.sets[name] = SetInfo(json_dict(ds.attrs["config"]), str(ds.attrs.get("kind", "deep")), int(ds.shape[1]),
                                     json_list(ds.attrs.get("requests", "[]")))
            ok = f["features"][name + "_ok"][()].astype(bool)
            ok &= ~nonfinite_rows(ds, ok)
            shard = SetShard(idx.folder(cache), n, int(ds.shape[1]))
            try:
                for a in range(0, n, COPY_ROWS):
                    z = min(n, a + COPY_ROWS)
                    if ok[a:z].any():
                        shard.X[a:z] = ds[a:z]
                shard.ok[:] = ok
                idx.shards[(0, name)] = shard.close()
            except BaseException:
                shard.abandon()
                raise
        if "failures" in f:
            for p, r, s in zip(decoded_strs(f["failures/path"]), decoded_strs(f["failures/reason"]),
                               decoded_strs(f["failures/stage"])):
                idx.failures[p] = (r, s)
    write_index(cache, idx, featx_version)
    log.info("%s: cache layout 1 migrated to layout 2 (rows now in %s/)", cache, shards_dir(cache).name)


def json_list(text) -> list:
    import json
    return list(json.loads(text))


def json_dict(text) -> dict:
    import json
    return dict(json.loads(text))


def _check_space(cache: Path, records_paths: list[Path]) -> None:
    """Refuse a commit that cannot fit before HDF5 starts writing: after a failed write (ENOSPC)
    libhdf5's objects are left broken and the process crashes (SIGSEGV) when they are freed."""
    try:  # the journal holds the new rows and names uncompressed: an upper bound of what they add
        need = sum(p.stat().st_size for p in records_paths) + (cache.stat().st_size if cache.exists() else 0)
        need = int(need * 1.05) + (256 << 10)
        free = shutil.disk_usage(cache.parent).free
    except OSError:
        return
    if free < need:
        raise CacheError(f"cannot write the cache (No space left on device: about {need / 1e6:.1f} MB needed, "
                         f"{free / 1e6:.1f} MB free); the cache is unchanged and computed rows stay in its "
                         "journal for the next run", cache)
