"""Layout 2 on disk: immutable shard files and the small index that binds them (see featx.cache).

A *block* is a range of rows [start, stop). Each block has one samples shard (the rows' ids,
paths, labels, ... and the scan memo) and at most one shard per feature set (its rows and ok
flags). Shards are written whole under a temporary name, fsynced and renamed; they are never
modified. The index ``CACHE.h5`` lists blocks and shards and presents them as ordinary
(n,)/(n, d) datasets through HDF5 virtual datasets; it is rewritten whole (its size grows with
the number of shards, not rows) and swapped in with a rename.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featx.cache.base import config_json, decoded_strs, fsync_file, shards_dir, str_dtype, tmp_name
from featx.cache.journal import FileFacts
from featx.safeio import fsync_dir

LAYOUT_V2 = 2
STR_FIELDS = ("id", "path", "group", "split", "duplicate_of")
SAMPLES = ""          # the ``what`` of a block's samples shard (a feature set's is its name)
_SHARD_NAME = re.compile(r"[sf]-[0-9a-f]{16}\.h5(\.tmp)?")


@dataclass
class SetInfo:
    config: dict
    kind: str
    width: int
    requests: list[str] = field(default_factory=list)


@dataclass
class Index:
    """What a layout-2 index holds (everything but the rows)."""

    starts: list[int] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)
    shards: dict[tuple[int, str], str] = field(default_factory=dict)   # (block, what) -> file name in shards/
    class_names: list[str] = field(default_factory=list)
    sets: dict[str, SetInfo] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (reason, stage)
    dir_name: str = ""   # the shards folder, beside the index ("" = CACHE.h5.shards for a new cache)

    def folder(self, cache: Path) -> Path:
        """Where this cache's shards are: the folder the index names, so a renamed index still finds them."""
        return cache.parent / (self.dir_name or shards_dir(cache).name)

    @property
    def n(self) -> int:
        return self.stops[-1] if self.stops else 0

    def block_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts, np.int64), rows, side="right") - 1


def read_index(f) -> Index:
    """The Index of an open layout-2 cache file."""
    idx = Index(dir_name=str(f.attrs.get("shards_dir", "")))
    if "blocks" in f:
        idx.starts = [int(v) for v in f["blocks/start"][()]]
        idx.stops = [int(v) for v in f["blocks/stop"][()]]
        for b, what, name in zip(f["shards/block"][()], decoded_strs(f["shards/what"]), decoded_strs(f["shards/file"])):
            idx.shards[(int(b), str(what))] = str(name)
    if "samples/label" in f:
        idx.class_names = json.loads(f["samples/label"].attrs.get("class_names", "[]"))
    for name in f.get("features", {}):
        if name.endswith("_ok"):
            continue
        ds = f["features"][name]
        idx.sets[name] = SetInfo(json.loads(ds.attrs["config"]), str(ds.attrs.get("kind", "deep")), int(ds.shape[1]),
                                 json.loads(ds.attrs.get("requests", "[]")))
    if "failures" in f:
        for p, r, s in zip(decoded_strs(f["failures/path"]), decoded_strs(f["failures/reason"]),
                           decoded_strs(f["failures/stage"])):
            idx.failures[p] = (r, s)
    return idx




class ShardWriter:
    """A new shard file: written under a temporary name, fsynced and renamed by ``close``."""

    def __init__(self, folder: Path, kind: str):
        import h5py
        d = folder
        d.mkdir(exist_ok=True)
        self.name = f"{kind}-{uuid.uuid4().hex[:16]}.h5"
        self.final = d / self.name
        self.tmp = d / (self.name + ".tmp")
        self.f = h5py.File(self.tmp, "w")

    def close(self) -> str:
        self.f.close()
        fsync_file(self.tmp)
        os.replace(self.tmp, self.final)
        return self.name

    def abandon(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass
        self.tmp.unlink(missing_ok=True)


def write_samples_shard(folder: Path, meta: dict[str, list], labels: np.ndarray, facts: FileFacts) -> str:
    """A samples shard for a block: ``meta`` holds the STR_FIELDS lists, ``labels`` class indices.

    It also holds ``id_key``/``id_row`` (the ids sorted, as bytes, and their rows), ``id_fence``
    (every ID_FENCE-th sorted key) and ``id_bloom`` (a bloom filter of the ids, see id_bloom) so a
    commit finds which of its ids a block holds reading a few kilobytes (find_ids), and the scan memo
    (``facts``): ``file``, ``file_stat`` [size, mtime_ns, ctime_ns, inode] (-1 = unknown),
    ``file_reader``, ``file_frames``, ``file_group``."""
    w = ShardWriter(folder, "s")
    try:
        f = w.f
        f.attrs["featx_shard"] = "samples"
        for k in STR_FIELDS:
            f.create_dataset(k, data=np.array(meta[k], dtype=object), dtype=str_dtype())
        f.create_dataset("label", data=np.asarray(labels, np.int64).reshape(-1))
        keys = np.array([s.encode() for s in meta["id"]], dtype=bytes)
        order = np.argsort(keys, kind="stable")
        write_id_index(f, keys[order] if len(keys) else np.zeros(0, "S1"), order.astype(np.int64))
        write_facts(f, facts.arrays())
        return w.close()
    except BaseException:
        w.abandon()
        raise


ID_FENCE = 256          # rows of id_key between two fence keys (and id_key's chunk)
BLOOM_BITS_PER_ID = 16  # with 4 probes: about 0.24% false positives


def bloom_hashes(keys) -> np.ndarray:
    """uint32 [len(keys), 4]: blake2b's 16-byte digest of each id (bytes) as four little-endian uint32."""
    import hashlib
    raw = b"".join(hashlib.blake2b(bytes(k).rstrip(b"\0"), digest_size=16).digest() for k in keys)
    return np.frombuffer(raw, "<u4").reshape(-1, 4)


def bloom_probes(hashes: np.ndarray, m_bits: int) -> np.ndarray:
    """Bit positions [n, 4] of ids with bloom_hashes ``hashes`` in a filter of ``m_bits`` (a power of two)."""
    return (hashes & np.uint32(m_bits - 1)).astype(np.int64)


def write_id_index(f, keys: np.ndarray, rows: np.ndarray) -> None:
    """``id_key``/``id_row`` (sorted keys, their rows), ``id_fence`` and ``id_bloom`` of a block."""
    f.create_dataset("id_key", data=keys, chunks=(min(ID_FENCE, len(keys)),) if len(keys) else None)
    f.create_dataset("id_row", data=rows, chunks=(min(ID_FENCE, len(rows)),) if len(rows) else None)
    f.create_dataset("id_fence", data=keys[::ID_FENCE])
    m_bits = 64
    while m_bits < BLOOM_BITS_PER_ID * len(keys):
        m_bits *= 2
    bits = np.zeros(m_bits, bool)
    bits[bloom_probes(bloom_hashes(keys), m_bits).ravel()] = True
    f.create_dataset("id_bloom", data=np.packbits(bits, bitorder="little"))


def find_ids(f, query: np.ndarray, hashes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``query``, rows in the block) of the query ids (bytes) that a samples shard
    ``f`` holds (``hashes``: their bloom_hashes, computed once for many shards). Reads the bloom filter and, for the few ids it may hold, one fence slice of
    ``id_key`` each: the cost grows with the query, not the block. A shard written before the
    filter existed is searched whole."""
    keys_ds = f["id_key"]
    n = keys_ds.shape[0]
    if not n or not len(query):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if "id_bloom" not in f:
        keys = keys_ds[()]
        pos = np.searchsorted(keys, query)
        hit = np.flatnonzero((pos < n) & (keys[np.minimum(pos, n - 1)] == query))
        return hit, f["id_row"][()][pos[hit]] if len(hit) else np.zeros(0, np.int64)
    bloom = f["id_bloom"][()]
    probes = bloom_probes(bloom_hashes(query) if hashes is None else hashes, len(bloom) * 8)
    maybe = np.flatnonzero(((bloom[probes >> 3] >> (probes & 7)) & 1).all(axis=1))
    if not len(maybe):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    fence = f["id_fence"][()]
    hits, rows = [], []
    for q in maybe.tolist():
        a = max(0, int(np.searchsorted(fence, query[q], side="right")) - 1) * ID_FENCE
        z = min(n, a + ID_FENCE)
        part = keys_ds[a:z]
        k = int(np.searchsorted(part, query[q]))
        if k < len(part) and part[k] == query[q]:
            hits.append(q)
            rows.append(int(f["id_row"][a + k]))
    return np.array(hits, np.int64), np.array(rows, np.int64)


def write_facts(f, arrays: dict[str, np.ndarray]) -> None:
    """Store FileFacts.arrays() in an open HDF5 file (text columns as UTF-8 strings)."""
    for key, val in arrays.items():
        if val.dtype.kind == "U":
            f.create_dataset(key, data=val.astype(object), dtype=str_dtype())
        else:
            f.create_dataset(key, data=val)


def chunk_rows(d: int) -> int:
    return max(1, min(1024, (1 << 20) // max(1, 4 * d)))


class SetShard:
    """A new feature-set shard of ``rows`` x ``d``: fill it with ``put`` (ok is set where the rows
    are finite), then ``close``. Rows never written read as 0 with ok False."""

    def __init__(self, folder: Path, rows: int, d: int):
        self.w = ShardWriter(folder, "f")
        self.w.f.attrs["featx_shard"] = "set"
        self.X = self.w.f.create_dataset("X", shape=(rows, d), dtype=np.float32, chunks=(min(chunk_rows(d), max(rows, 1)), d),
                                         compression="gzip", compression_opts=1, shuffle=True, fillvalue=0.0)
        self.ok = np.zeros(rows, dtype=bool)

    def put(self, rows: np.ndarray, X: np.ndarray, ok: np.ndarray | None = None) -> None:
        """Write ``X`` at local ``rows`` (sorted or not); ``ok`` overrides the finite test if given."""
        order = np.argsort(rows, kind="stable")
        rows, X = rows[order], X[order]
        good = np.isfinite(X).all(axis=1) if ok is None else np.asarray(ok, bool)[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        bounds = np.concatenate([[0], breaks, [len(rows)]]).astype(np.int64)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b > a:
                self.X[int(rows[a]):int(rows[b - 1]) + 1] = X[a:b]
        self.ok[rows] = good

    def close(self) -> str:
        self.w.f.create_dataset("ok", data=self.ok)
        return self.w.close()

    def abandon(self) -> None:
        self.w.abandon()


def write_index(cache: Path, idx: Index, featx_version: str) -> None:
    """Write the index to a temporary file, fsync it, and rename it over ``cache``."""
    import h5py
    tmp = tmp_name(cache, uuid.uuid4().hex[:8])
    n = idx.n
    idx.dir_name = idx.folder(cache).name
    rel = lambda name: f"{idx.dir_name}/{name}"  # noqa: E731  (relative to the index's folder)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["featx_layout_version"] = LAYOUT_V2
            f.attrs["featx_version"] = featx_version
            f.attrs["shards_dir"] = idx.dir_name
            f.create_dataset("blocks/start", data=np.asarray(idx.starts, np.int64))
            f.create_dataset("blocks/stop", data=np.asarray(idx.stops, np.int64))
            keys = sorted(idx.shards)
            f.create_dataset("shards/block", data=np.array([b for b, _ in keys], np.int64))
            f.create_dataset("shards/what", data=np.array([w for _, w in keys], dtype=object), dtype=str_dtype())
            f.create_dataset("shards/file", data=np.array([idx.shards[k] for k in keys], dtype=object),
                             dtype=str_dtype())
            g = f.create_group("samples")
            for k in STR_FIELDS + ("label",):
                dt = np.int64 if k == "label" else str_dtype()
                layout = h5py.VirtualLayout(shape=(n,), dtype=dt)
                for b, (a, z) in enumerate(zip(idx.starts, idx.stops)):
                    layout[a:z] = h5py.VirtualSource(rel(idx.shards[(b, SAMPLES)]), k, shape=(z - a,))
                g.create_virtual_dataset(k, layout, fillvalue=-1 if k == "label" else None)
            g["label"].attrs["class_names"] = json.dumps(idx.class_names)
            fg = f.create_group("features")
            for name, info in idx.sets.items():
                X = h5py.VirtualLayout(shape=(n, info.width), dtype=np.float32)
                ok = h5py.VirtualLayout(shape=(n,), dtype=bool)
                for b, (a, z) in enumerate(zip(idx.starts, idx.stops)):
                    shard = idx.shards.get((b, name))
                    if shard is not None:
                        X[a:z] = h5py.VirtualSource(rel(shard), "X", shape=(z - a, info.width))
                        ok[a:z] = h5py.VirtualSource(rel(shard), "ok", shape=(z - a,))
                ds = fg.create_virtual_dataset(name, X, fillvalue=0.0)
                ds.attrs["config"] = config_json(info.config)
                ds.attrs["kind"] = info.kind
                ds.attrs["requests"] = json.dumps(info.requests)
                fg.create_virtual_dataset(name + "_ok", ok, fillvalue=False)
            fl = f.create_group("failures")
            for k, vals in (("path", list(idx.failures)), ("reason", [v[0] for v in idx.failures.values()]),
                            ("stage", [v[1] for v in idx.failures.values()])):
                fl.create_dataset(k, data=np.array(vals, dtype=object), dtype=str_dtype())
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, cache)
    fsync_dir(cache.parent)


def remove_unreferenced_shards(cache: Path, idx: Index | None) -> int:
    """Delete shard files the current index does not name (call with the lock held): those a
    killed commit wrote, and those the previous commit replaced (kept until now so a reader that
    opened the older index could finish). Returns how many were removed."""
    d = idx.folder(cache) if idx is not None else shards_dir(cache)
    if not d.is_dir():
        return 0
    keep = set(idx.shards.values()) if idx is not None else set()
    removed = 0
    for p in d.iterdir():
        if _SHARD_NAME.fullmatch(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
            removed += 1
    return removed
