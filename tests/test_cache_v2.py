"""Layout 2: a commit writes shards for what it adds and swaps a small index; layout-1 caches are
migrated on their first write; compact folds shards; the scan memo skips unchanged files."""
from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from featx import cache as C
from featx.cache.store import read_index
from featx.check import check_cache
from featx.errors import CacheError
from featx.sources import base as source_base
from featx.sources import scan_sources
from tests.fit_helpers import write_cache
from tests.support.caches import journal_cache


def _add(cache, ids, X, set_name="deep", config=None, labels=None):
    rec = C.BatchRecord(ids=list(ids), paths=[f"/p/{i}" for i in ids], labels=labels or [""] * len(ids),
                        groups=[""] * len(ids), splits=[""] * len(ids), duplicate_of=[""] * len(ids),
                        sets=[C.SetRows(set_name, config or {"kind": "test"}, "deep", list(ids), X)])
    C.Journal(cache).append(rec)
    with C.CacheLock(cache):
        return C.commit(cache)


def _files(cache):
    return sorted(p.name for p in C.shards_dir(cache).iterdir())


def test_commit_writes_only_new_shards_and_bare_h5py_reads_one_dataset(tmp_path):
    cache = tmp_path / "c.h5"
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 16)).astype(np.float32)
    journal_cache(cache, A, rows_per_record=100)
    first = _files(cache)
    B = rng.standard_normal((5, 16)).astype(np.float32)
    out = _add(cache, [f"new{i}" for i in range(5)], B)
    assert out == {"records": 1, "new_samples": 5, "rows": 5, "stale": 0}
    assert set(first) <= set(_files(cache)) and len(_files(cache)) == len(first) + 2   # old shards untouched
    assert os.path.getsize(cache) < 64 << 10
    with h5py.File(cache, "r") as f:
        assert f.attrs["featx_layout_version"] == 2 and f["features/deep"].shape == (305, 16)
        np.testing.assert_array_equal(f["features/deep"][()], np.vstack([A, B]))
        assert f["features/deep_ok"][()].all()
        assert list(f["samples/id"].asstr()[-2:]) == ["new3", "new4"]
    # the same record applied again (a kill after the index swap, before the journal was cleared) adds nothing
    assert _add(cache, [f"new{i}" for i in range(5)], B)["rows"] == 0
    t = C.load_features(cache, "deep")
    assert len(t) == 305 and len(set(t.ids)) == 305 and check_cache(cache) == []


def test_new_set_rows_for_old_samples_and_label_fill_in_rewrite_only_their_block(tmp_path):
    cache = tmp_path / "c.h5"
    journal_cache(cache, np.ones((10, 4), np.float32))
    _add(cache, ["x1", "x2"], np.zeros((2, 4), np.float32))
    idx = read_index(h5py.File(cache, "r"))
    old_block1 = idx.shards[(1, "")]
    H = np.arange(6, dtype=np.float32).reshape(3, 2)
    _add(cache, ["s001", "s005", "x2"], H, set_name="hog", labels=["a", "", "b"])
    t = C.load_features(cache, "hog")
    assert list(t.ids) == ["s001", "s005", "x2"] and np.array_equal(t.X, H)
    assert list(t.y) == [0, -1, 1] and t.class_names == ["a", "b"]
    idx2 = read_index(h5py.File(cache, "r"))
    assert idx2.shards[(0, "deep")] == idx.shards[(0, "deep")]         # set "deep" of block 0 untouched
    assert idx2.shards[(1, "")] != old_block1                            # block 1's label filled in
    st = C.read_state(cache)
    assert st.done["deep"] == set(st.ids) and st.done["hog"] == {"s001", "s005", "x2"}


def test_stale_config_and_width_mismatch(tmp_path):
    cache = tmp_path / "c.h5"
    journal_cache(cache, np.ones((3, 4), np.float32))
    assert _add(cache, ["n1"], np.ones((1, 4), np.float32), config={"kind": "other"})["stale"] == 1
    C.Journal(cache).append(C.BatchRecord(sets=[C.SetRows("deep", {"kind": "test"}, "deep", ["s000"],
                                                          np.ones((1, 4), np.float32))]))
    with pytest.raises(CacheError, match="width"):
        _add(cache, ["n2"], np.ones((1, 5), np.float32))


def test_layout_1_is_read_as_is_and_migrated_once_on_first_write(tmp_path, caplog):
    cache = tmp_path / "v1.h5"
    X = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    X[3] = np.nan
    ok = np.ones(20, bool)
    ok[7] = False
    write_cache(cache, {"deep": X}, np.arange(20) % 2, ok={"deep": ok}, configs={"deep": {"kind": "test"}})
    before = C.load_features(cache, "deep")
    assert C.layout_version(cache) == 1 and len(C.read_state(cache).done["deep"]) == 18
    with caplog.at_level("INFO", logger="featx"):
        _add(cache, ["n1"], np.ones((1, 8), np.float32))
    assert sum("migrated to layout 2" in r.getMessage() for r in caplog.records) == 1
    assert C.layout_version(cache) == 2 and check_cache(cache) == []
    after = C.load_features(cache, "deep")
    keep = [i for i in range(len(before)) if before.ids[i] != f"{3:064x}"]
    np.testing.assert_array_equal(after.X[:len(keep)], before.X[keep])
    assert len(after) == 19 and after.ids[-1] == "n1" and after.class_names == ["c0", "c1"]


def test_orphan_shards_of_a_killed_commit_are_removed_and_missing_shards_are_one_line(tmp_path):
    cache = tmp_path / "c.h5"
    journal_cache(cache, np.ones((4, 2), np.float32))
    orphan = C.shards_dir(cache) / "f-0123456789abcdef.h5"
    orphan.write_bytes(b"partial")
    torn = C.shards_dir(cache) / "s-0123456789abcdef.h5.tmp"
    torn.write_bytes(b"")
    user = C.shards_dir(cache) / "notes.txt"
    user.write_text("mine")
    _add(cache, ["n"], np.ones((1, 2), np.float32))
    assert not orphan.exists() and not torn.exists() and user.exists()
    victim = C.shards_dir(cache) / read_index(h5py.File(cache, "r")).shards[(1, "deep")]
    victim.unlink()
    with pytest.raises(CacheError, match="is missing"):
        C.load_features(cache, "deep")


def test_compact_and_copy(tmp_path):
    cache = tmp_path / "c.h5"
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 6)).astype(np.float32)
    for k in range(5):
        _add(cache, [f"r{k}-{i}" for i in range(10)], X[k * 10:(k + 1) * 10])
    _add(cache, ["r0-1", "r4-2"], np.ones((2, 3), np.float32), set_name="hog")
    ref, hog = C.load_features(cache, "deep"), C.load_features(cache, "hog")
    out = C.compact(cache)
    assert out["shards_before"] > out["shards_after"] == 3 and len(_files(cache)) == 3
    t = C.load_features(cache, "deep")
    assert np.array_equal(t.X, ref.X) and list(t.ids) == list(ref.ids)
    assert list(C.load_features(cache, "hog").ids) == list(hog.ids)
    assert _add(cache, ["r3-3", "z"], rng.standard_normal((2, 6)).astype(np.float32))["new_samples"] == 1
    (tmp_path / "sub").mkdir()
    dst = C.copy_cache(cache, tmp_path / "sub" / "copy.h5")
    (tmp_path / "moved.h5").write_bytes(dst.read_bytes())   # the index alone, away from its shards
    assert check_cache(dst) == [] and len(C.load_features(dst, "deep")) == 51
    with pytest.raises(CacheError, match="missing"):
        C.load_features(tmp_path / "moved.h5", "deep")


def test_scan_memo_skips_unchanged_files_and_rehashes_changed_ones(tmp_path, hash_calls):
    from PIL import Image
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), i * 30, np.uint8)).save(folder / f"{i}.png")
    cache = tmp_path / "c.h5"
    scan = scan_sources([folder])
    rec = C.BatchRecord()
    for s in scan.samples:
        rec.add_sample(s)
    rec.sets.append(C.SetRows("h", {"k": 1}, "handcrafted", [s.id for s in scan.samples], np.ones((6, 2), np.float32)))
    C.Journal(cache).append(rec)
    with C.CacheLock(cache):
        C.commit(cache)
    memo = C.read_memo(cache)
    assert len(memo) == 6
    calls = hash_calls
    calls.clear()   # count from here on
    again = scan_sources([folder], memo=memo)
    assert calls == [] and [s.id for s in again.samples] == [s.id for s in scan.samples]
    # different bytes, same size, mtime put back: ctime still tells
    p = folder / "2.png"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[-20] ^= 0xFF
    time.sleep(0.01)
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    (folder / "4.png").write_bytes((folder / "4.png").read_bytes() + b"\0")   # size changes
    changed = scan_sources([folder], memo=memo)
    assert sorted(os.path.basename(c) for c in calls) == ["2.png", "4.png"]
    new_ids = {os.path.basename(s.path): s.id for s in changed.samples}
    assert new_ids["2.png"] == source_base.sha256_file(p) != memo[str(p.resolve())][4]
    calls.clear()
    scan_sources([folder], memo=None)                    # --rehash: every file read again
    assert len(calls) == 6


def test_find_ids_reads_the_bloom_filter_and_one_fence_slice_and_agrees_with_a_plain_search(tmp_path):
    import hashlib

    from featx.cache.store import ID_FENCE, find_ids, write_id_index
    ids = sorted(hashlib.sha256(str(k).encode()).hexdigest() for k in range(3 * ID_FENCE + 17))
    keys = np.array([i.encode() for i in ids], dtype=bytes)
    rows = np.random.default_rng(0).permutation(len(ids)).astype(np.int64)   # the row each sorted key names
    absent = [hashlib.sha256(f"new{k}".encode()).hexdigest() for k in range(500)]
    query_ids = absent[:250] + ids[::7] + absent[250:] + [ids[0], ids[-1], ids[ID_FENCE], ids[ID_FENCE - 1]]
    query = np.array([i.encode() for i in query_ids], dtype=bytes)
    truth = {q: rows[ids.index(i)] for q, i in enumerate(query_ids) if i in set(ids)}
    with h5py.File(tmp_path / "with_filter.h5", "w") as f:
        write_id_index(f, keys, rows)
    with h5py.File(tmp_path / "before_filter.h5", "w") as f:   # a shard written before id_bloom/id_fence
        f["id_key"], f["id_row"] = keys, rows
    for name in ("with_filter.h5", "before_filter.h5"):
        with h5py.File(tmp_path / name, "r") as f:
            hit, found = find_ids(f, query)
        assert dict(zip(hit.tolist(), found.tolist())) == truth, name
    with h5py.File(tmp_path / "with_filter.h5", "r") as f:   # the filter turns away (nearly) every new id
        bloom = f["id_bloom"][()]
        from featx.cache.store import bloom_hashes, bloom_probes
        probes = bloom_probes(bloom_hashes(np.array([a.encode() for a in absent], dtype=bytes)), len(bloom) * 8)
        passed = ((bloom[probes >> 3] >> (probes & 7)) & 1).all(axis=1).sum()
    assert passed <= 5
