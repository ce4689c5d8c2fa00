"""Damaged caches, NaN rows, featx's own temporary and journal files, the lock file, and
property-based hostile manifests, npz files and cache edits (hypothesis, small example counts)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from featx import cache as C
from featx.check import check_cache
from featx.errors import CacheError, SourceError
from featx.sources import scan_sources
from featx.sources.npz import scan_npz
from tests.support import ROOT, TINY
from tests.test_hostile import _limits, assert_one_line_each, jpeg, run_featx

FAST = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory):
    from featx.extraction import extract
    work = tmp_path_factory.mktemp("base")
    for i in range(4):
        jpeg(work / "img" / ("a" if i % 2 else "b") / f"{i}.jpg", i)
    extract([work / "img"], work / "c.h5", backbones=None, handcrafted="firstorder", workers=0, progress=False)
    return work / "c.h5"


def _edit(path, how):
    with h5py.File(path, "r+") as f:
        how(f)


def _replace(f, name, data):
    attrs = dict(f[name].attrs)
    del f[name]
    f[name] = data
    for k, v in attrs.items():
        f[name].attrs[k] = v


EDITS = {
    "ok_shorter": (lambda f: _replace(f, "features/firstorder_ok", np.ones(2, bool)), "_ok has 2 rows but there are 4 samples"),
    "ok_longer": (lambda f: _replace(f, "features/firstorder_ok", np.ones(9, bool)), "_ok has 9 rows but there are 4 samples"),
    "ok_missing": (lambda f: f["features"].__delitem__("firstorder_ok"), "firstorder_ok (which rows are computed) is missing"),
    "config_not_json": (lambda f: f["features/firstorder"].attrs.__setitem__("config", "{nope"), "attribute config is missing or not a JSON object"),
    "class_names_not_json": (lambda f: f["samples/label"].attrs.__setitem__("class_names", "[a,"), "class_names is not a JSON list"),
    "label_beyond_names": (lambda f: _replace(f, "samples/label", np.array([0, 1, 7, -1])), "/samples/label row 2 is 7 but there are 2 class names"),
    "bad_layout_version": (lambda f: f.attrs.__setitem__("featx_layout_version", "one"), "featx_layout_version is 'one'"),
    "newer_layout": (lambda f: f.attrs.__setitem__("featx_layout_version", 7), "cache layout version 7 is newer"),
    "no_sample_ids": (lambda f: f["samples"].__delitem__("id"), "/samples/id is missing"),
    "fewer_feature_rows": (lambda f: _replace(f, "features/firstorder", f["features/firstorder"][:2]), "/features/firstorder has 2 rows but there are 4 samples"),
    "features_dataset": (lambda f: (f.__delitem__("features"), f.create_dataset("features", data=np.zeros(3))), "/features is not a group"),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_inconsistent_cache_is_one_error_line(base_cache, tmp_path, kind):
    edit, words = EDITS[kind]
    cache = tmp_path / "c.h5"
    C.copy_cache(base_cache, cache)
    _edit(cache, edit)
    problems = check_cache(cache)
    assert any(words in p for p in problems), problems
    with pytest.raises(CacheError, match=f"^{cache}: "):
        C.read_state(cache)
    with pytest.raises(CacheError):
        C.load_features(cache, "firstorder")
    r = run_featx("info", cache)
    assert r.returncode == 2 and r.stderr.startswith(f"featx: error: {cache}: ") and words in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
    assert_one_line_each(r.stderr)


def test_bit_flipped_cache_is_one_error_line(base_cache, tmp_path):
    cache = tmp_path / "c.h5"
    data = bytearray(base_cache.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(data), 200):
        data[pos] ^= 0xFF
    cache.write_bytes(bytes(data))
    r = run_featx("info", cache)
    assert r.returncode == 2 and r.stderr.startswith(f"featx: error: {cache}: "), r.stderr[-2000:]
    assert_one_line_each(r.stderr)
    c = subprocess.run([sys.executable, "-c", "from featx.cli.check import check_cmd; check_cmd()", str(cache)],
                       capture_output=True, text=True, timeout=60, preexec_fn=_limits, cwd=ROOT)
    assert c.returncode == 2 and c.stderr and "Traceback" not in c.stderr


def test_check_command_healthy_cache(base_cache):
    assert check_cache(base_cache) == []
    c = subprocess.run([sys.executable, "-c", "from featx.cli.check import check_cmd; check_cmd()", str(base_cache)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert c.returncode == 0 and c.stdout.strip() == f"{base_cache}: ok"


def test_nan_rows_are_not_done_and_re_extract_recomputes_them(tmp_path):
    """A row holding NaN reaches the cache through the journal (layout 2 checks rows as they are
    committed): it is stored as not computed, and the next extraction recomputes it. A NaN written
    into a computed row from outside is what `featx check` reports."""
    from featx.extraction import extract
    for i in range(4):
        jpeg(tmp_path / "img" / f"{i}.jpg", i)
    kw = dict(backbones=[TINY], weights="none", precision="fp32", workers=0, progress=False)
    extract([tmp_path / "img"], tmp_path / "ref.h5", **kw)
    (tmp_path / "img" / "3.jpg").rename(tmp_path / "3.jpg")
    cache = tmp_path / "c.h5"
    extract([tmp_path / "img"], cache, **kw)
    name = "test_efficientnet_random"
    (tmp_path / "3.jpg").rename(tmp_path / "img" / "3.jpg")
    sample = next(s for s in scan_sources([tmp_path / "img"]).samples if s.path.endswith("3.jpg"))
    rec = C.BatchRecord()
    rec.add_sample(sample)
    width = C.load_features(cache, name).X.shape[1]
    rec.sets.append(C.SetRows(name, C.list_sets(cache)[name], "deep", [sample.id], np.full((1, width), np.nan, np.float32)))
    C.Journal(cache).append(rec)
    with C.CacheLock(cache):
        C.commit(cache)
    assert check_cache(cache) == [] and len(C.read_state(cache).done[name]) == 3
    summary = extract([tmp_path / "img"], cache, **kw)
    assert (summary.ok, summary.reused) == (1, 3)
    ref, got = C.load_features(tmp_path / "ref.h5", name), C.load_features(cache, name)
    order = {i: k for k, i in enumerate(got.ids)}
    np.testing.assert_allclose(got.X[[order[i] for i in ref.ids]], ref.X, rtol=1e-5, atol=1e-6)
    with h5py.File(cache, "r+") as f:  # written through the virtual dataset into its shard
        f["features"][name][1] = np.nan
    assert any("1 computed rows holding NaN" in p for p in check_cache(cache))


def test_commit_removes_only_its_own_temporary_files(base_cache, tmp_path):
    cache = tmp_path / "c.h5"
    C.copy_cache(base_cache, cache)
    mine = tmp_path / "c.h5.tmp-notes"
    mine.write_text("user data")
    lookalike = tmp_path / "c.h5.tmp-featx-123-0123abcd"
    lookalike.write_text("user text with featx's name pattern")
    stale = tmp_path / "c.h5.tmp-featx-99-deadbeef"
    stale.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    C.Journal(cache).append(C.BatchRecord(failures=[("x.png", "bad", "decode")]))
    with C.CacheLock(cache):
        C.commit(cache)
    assert mine.read_text() == "user data" and lookalike.exists() and not stale.exists()
    assert not (tmp_path / "c.h5.lock").exists()


def test_unreadable_journal_record_is_quarantined_with_a_warning(base_cache, tmp_path, caplog):
    cache = tmp_path / "c.h5"
    C.copy_cache(base_cache, cache)
    jdir = C.journal_dir(cache)
    jdir.mkdir()
    (jdir / "00000001-garbage-000000001.npz").write_bytes(b"PK\x03\x04 not a zip")
    C.Journal(cache).append(C.BatchRecord(failures=[("y.png", "bad", "decode")]))
    with caplog.at_level(logging.WARNING, logger="featx"), C.CacheLock(cache):
        C.commit(cache)
    assert (C.quarantine_dir(cache) / "00000001-garbage-000000001.npz").exists()
    msgs = [r.getMessage() for r in caplog.records if "unreadable journal record" in r.getMessage()]
    assert len(msgs) == 1 and str(C.quarantine_dir(cache)) in msgs[0]
    assert ("y.png", "bad", "decode") in C.read_state(cache).failures


def test_lock_file_exists_only_while_held(tmp_path):
    cache = tmp_path / "c.h5"
    with C.CacheLock(cache):
        assert C.lock_path(cache).exists()
        with pytest.raises(C.CacheLockedError):
            with C.CacheLock(cache):
                pass
        assert C.lock_path(cache).exists()
    assert not C.lock_path(cache).exists()
    os.mkfifo(C.lock_path(cache))
    with pytest.raises(Exception, match="lock file is a FIFO"):
        with C.CacheLock(cache):
            pass


# ----------------------------------------------------------------------------------------------
# Property-based hostile inputs

_cell = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@FAST
@given(rows=st.lists(st.tuples(st.one_of(_cell, st.sampled_from(["ok.jpg", "../ok.jpg", "", "x" * 300])), _cell),
                     max_size=8))
def test_manifest_rows_never_crash(tmp_path_factory, rows):
    d = tmp_path_factory.mktemp("man")
    jpeg(d / "ok.jpg", 0)
    import csv
    with open(d / "m.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    try:
        res = scan_sources([d / "m.csv"])
    except SourceError as e:
        assert "\n" not in str(e)
        return
    assert len(res.samples) <= 1
    for f in res.failures:
        assert f.reason and "\n" not in f.reason


_dtypes = st.sampled_from(["u1", "u2", "i4", "f4", "f8", "U3", "b1", "c8"])


@FAST
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=5), dtype=_dtypes,
       labels=st.one_of(st.none(), st.lists(st.one_of(st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True)),
                                            max_size=6)))
@example(shape=[1, 0, 0], dtype="u1", labels=None)      # zero-size images: refused at scan, never at load
@example(shape=[2, 5, 0, 1], dtype="f4", labels=[0, 1])
def test_npz_contents_never_crash(tmp_path_factory, shape, dtype, labels):
    p = tmp_path_factory.mktemp("npz") / "x.npz"
    arrays = {"train_images": np.zeros(shape, dtype=dtype)}
    if labels is not None:
        arrays["train_labels"] = np.array(labels)
    np.savez(p, **arrays)
    try:
        res = scan_npz(p)
    except SourceError as e:
        assert "\n" not in str(e)
        return
    n = len(res.samples)
    if n:
        assert len(shape) in (3, 4) and n == shape[0]
        assert all(s.label is None or int(s.label) >= 0 for s in res.samples)
        for s in res.samples:
            img = s.load()
            assert img.dtype == np.float32 and np.isfinite(img).all()
    else:
        assert res.failures or (len(shape) in (3, 4) and shape[0] == 0)


_attr_values = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.just("[]"), st.just("{}"), st.just('["a"]'))
_targets = st.sampled_from([("/", "featx_layout_version"), ("samples/label", "class_names"),
                            ("features/firstorder", "config"), ("features/firstorder", "requests")])


@FAST
@given(target=_targets, value=_attr_values, drop=st.sampled_from([None, "samples/path", "samples/split",
                                                                   "failures/reason", "features/firstorder_ok"]))
def test_cache_edits_are_cache_errors_or_readable(base_cache, tmp_path_factory, target, value, drop):
    cache = tmp_path_factory.mktemp("edit") / "c.h5"
    C.copy_cache(base_cache, cache)
    with h5py.File(cache, "r+") as f:
        f[target[0]].attrs[target[1]] = value
        if drop:
            del f[drop]
    problems = check_cache(cache)
    try:
        st_ = C.read_state(cache)
        table = C.load_features(cache, "firstorder")
    except CacheError as e:
        assert problems and "\n" not in str(e) and str(e).startswith(f"{cache}: ")
        return
    assert problems == []
    assert len(table.X) == 4 and len(st_.ids) == 4
