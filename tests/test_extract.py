"""The extraction stage end to end: cache layout, reuse, resume, failures, locking."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from featx import cache as C
from featx.errors import CacheLockedError, FeatxError
from featx.extraction import extract
from tests.support import BREAST_NPZ, TINY, write_png

FAST = dict(backbones=[TINY], weights="none", precision="fp32", progress=False, workers=0)


def test_breastmnist_cache_with_real_weights_read_by_bare_h5py(breast_cache):
    """The issue's check: 780 unique samples, (780, 1280) efficientnet_lite0, weights sha256, test split."""
    with h5py.File(breast_cache, "r") as f:  # no featx involved in reading
        X = f["features/efficientnet_lite0"][()]
        ids = f["samples/id"].asstr()[()]
        split = f["samples/split"].asstr()[()]
        y = f["samples/label"][()]
        cfg = json.loads(f["features/efficientnet_lite0"].attrs["config"])
        names = json.loads(f["samples/label"].attrs["class_names"])
        assert f.attrs["featx_layout_version"] == C.LAYOUT_VERSION
        assert f["features/efficientnet_lite0"].is_virtual   # layout 2: a view over the shards
    with h5py.File(next(C.shards_dir(breast_cache).glob("f-*.h5")), "r") as shard:
        assert shard["X"].compression == "gzip"
    assert X.shape == (780, 1280) and X.dtype == np.float32 and np.isfinite(X).all()
    assert len(set(ids)) == 780
    assert (split == "test").sum() == 156 and (split == "train").sum() == 546 and (split == "val").sum() == 78
    assert names == ["0", "1"] and set(np.unique(y)) == {0, 1}
    assert cfg["weights"]["sha256"] == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert cfg["backbone"] == "efficientnet_lite0" and cfg["preprocess"]["crop_size"] == [224, 224]
    for key in ("precision", "pooling", "taps", "versions", "read"):
        assert key in cfg
    assert {"featx", "torch", "timm"} <= set(cfg["versions"])
    z = np.load(BREAST_NPZ)
    assert (y[split == "test"] == z["test_labels"]).all()


def test_same_request_again_computes_nothing(breast_cache):
    before = os.stat(breast_cache).st_mtime_ns
    s = extract([str(BREAST_NPZ)], breast_cache, progress=False)
    assert s.ok == 0 and s.reused == 780 and s.sets == ["efficientnet_lite0"] and s.runtime == "cached"
    assert os.stat(breast_cache).st_mtime_ns == before  # the file was not even rewritten


def test_new_images_compute_only_themselves_and_new_config_adds_a_set(tmp_path, image_folder):
    cache = tmp_path / "c.h5"
    s1 = extract([image_folder], cache, **FAST)
    assert s1.ok == 12 and s1.sets == ["test_efficientnet_random"]
    rng = np.random.default_rng(5)
    for i in range(2):
        write_png(image_folder / "benign" / f"new{i}.png", (rng.random((30, 30, 3)) * 255).astype(np.uint8))
    s2 = extract([image_folder], cache, **FAST)
    assert (s2.ok, s2.reused) == (2, 12)
    s3 = extract([image_folder], cache, **dict(FAST, pooling="gem"))
    assert s3.ok == 14 and s3.sets == ["test_efficientnet_random_gem"]
    t = C.load_features(cache, "test_efficientnet_random+test_efficientnet_random_gem")
    assert t.X.shape[0] == 14 and t.set_slices["test_efficientnet_random_gem"].start == t.X.shape[1] // 2
    # fp32 and a differently-named config of the same base get a distinct name, never overwrite
    s4 = extract([image_folder], cache, **dict(FAST, precision="bf16"))
    assert s4.sets[0].startswith("test_efficientnet_random@")
    assert set(C.list_sets(cache)) == {"test_efficientnet_random", "test_efficientnet_random_gem", s4.sets[0]}


def test_rows_align_across_sets_added_in_different_runs(tmp_path, image_folder):
    cache = tmp_path / "c.h5"
    extract([image_folder / "benign"], cache, **FAST)
    extract([image_folder], cache, **dict(FAST, layers=["0"]))
    a = C.load_features(cache, "test_efficientnet_random")
    full = C.load_features(cache, ["test_efficientnet_random", "test_efficientnet_random.blocks.0"])
    assert len(a) == 6 and len(full) == 6  # only rows computed in both
    extract([image_folder], cache, **FAST)
    full = C.load_features(cache, ["test_efficientnet_random", "test_efficientnet_random.blocks.0"])
    assert len(full) == 12 and sorted(full.class_names) == ["benign", "malignant"]
    assert [full.class_names[k] for k in full.y] == [p.split("/")[-2] for p in full.paths]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    ref = tmp_path / "ref.h5"
    extract([str(BREAST_NPZ)], ref, **dict(FAST, batch_size=64))
    cache = tmp_path / "resumed.h5"
    calls = {"n": 0}
    real_append = C.Journal.append

    def crash_after_three(self, rec):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        real_append(self, rec)
    monkeypatch.setattr(C.Journal, "append", crash_after_three)
    s = extract([str(BREAST_NPZ)], cache, **dict(FAST, batch_size=64))
    assert s.interrupted and s.ok == 192
    monkeypatch.setattr(C.Journal, "append", real_append)
    assert len(C.load_features(cache, "test_efficientnet_random")) == 192  # a usable cache after Ctrl-C
    s2 = extract([str(BREAST_NPZ)], cache, **dict(FAST, batch_size=64))
    assert (s2.ok, s2.reused) == (780 - 192, 192)
    a, b = C.load_features(ref, "test_efficientnet_random"), C.load_features(cache, "test_efficientnet_random")
    order = np.argsort(b.ids)
    ref_order = np.argsort(a.ids)
    assert (a.ids[ref_order] == b.ids[order]).all()
    assert np.abs(a.X[ref_order] - b.X[order]).max() < 1e-5


def test_kill_9_mid_run_loses_nothing_written(tmp_path, chest_dir):
    """A real SIGKILL: the cache stays openable, the journal is recovered, no row twice or missing."""
    src = tmp_path / "src"
    for c in ("NORMAL", "PNEUMONIA"):
        (src / c).mkdir(parents=True)
        for p in sorted((chest_dir / "train" / c).glob("*.jpeg"))[:60]:
            (src / c / p.name).symlink_to(p)
    cache = tmp_path / "k.h5"
    args = [sys.executable, "-m", "featx.cli", "extract", str(src), "-o", str(cache), "--backbone", TINY,
            "--weights", "none", "--precision", "fp32", "--batch-size", "8", "--workers", "0", "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(C.pending_records(cache)) < 3 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    t = C.load_features(cache, "test_efficientnet_random")
    assert len(t) == 120 and len(set(t.ids)) == 120
    ref = tmp_path / "ref.h5"
    extract([src], ref, **FAST)
    r = C.load_features(ref, "test_efficientnet_random")
    ia, ib = np.argsort(t.ids), np.argsort(r.ids)
    assert (t.ids[ia] == r.ids[ib]).all() and np.abs(t.X[ia] - r.X[ib]).max() < 1e-5


def test_bad_inputs_recorded_in_failures_and_run_goes_on(tmp_path, image_folder):
    (image_folder / "benign" / "empty.png").write_bytes(b"")
    (image_folder / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (image_folder / "malignant" / "readme.txt").write_text("hello")
    cache = tmp_path / "c.h5"
    s = extract([image_folder], cache, **FAST)
    assert s.ok == 12 and s.failed == 3
    st = C.read_state(cache)
    failed = {p.rsplit("/", 1)[-1]: (r, stage) for p, r, stage in st.failures}
    assert set(failed) == {"empty.png", "broken.png", "readme.txt"}
    assert failed["broken.png"][1] == "decode" and failed["empty.png"][1] == "source"
    with pytest.raises(FeatxError, match="--strict"):
        extract([image_folder], cache, **dict(FAST, strict=True))
    (image_folder / "benign" / "broken.png").unlink()
    write_png(image_folder / "benign" / "broken.png", np.full((20, 20), 9, np.uint8))  # fixed: retried, no longer failed
    extract([image_folder], cache, **FAST)
    assert "broken.png" not in {p.rsplit("/", 1)[-1] for p, _, _ in C.read_state(cache).failures}


def test_a_second_writer_is_refused(tmp_path, image_folder):
    cache = tmp_path / "c.h5"
    with C.CacheLock(cache):
        with pytest.raises(CacheLockedError, match=r"c\.h5: cache is in use by another featx process"):
            extract([image_folder], cache, **FAST)


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatxError, match="no images found|no usable image"):
        extract([tmp_path / "empty"], tmp_path / "c.h5", **FAST)


def test_ct_dicom_folder_groups_and_window(tmp_path, ct_dir):
    cache = tmp_path / "ct.h5"
    s = extract([ct_dir], cache, **dict(FAST, window="lung"))
    assert s.ok == 12  # the committed subset: 12 slices of 10 patients
    t = C.load_features(cache, "test_efficientnet_random")
    assert len(t) == 12 and len(set(t.groups)) == 10
    assert C.list_sets(cache)["test_efficientnet_random"]["read"]["window"] == "lung"


def test_newer_layout_is_refused_with_reason(tmp_path, image_folder):
    cache = tmp_path / "c.h5"
    extract([image_folder], cache, **FAST)
    with h5py.File(cache, "a") as f:
        f.attrs["featx_layout_version"] = C.LAYOUT_VERSION + 1
    with pytest.raises(FeatxError, match="newer than this featx reads"):
        C.load_features(cache, "test_efficientnet_random")


def test_labels_given_later_by_a_manifest_fill_in_cached_samples(tmp_path, image_folder):
    cache = tmp_path / "c.h5"
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(image_folder.rglob("*.png")):
        (flat / p.name).write_bytes(p.read_bytes())
    extract([flat], cache, **FAST)
    assert (C.load_features(cache, "test_efficientnet_random").y == -1).all()
    manifest = flat / "labels.csv"
    manifest.write_text("path,label,group\n" + "".join(f"{p.name},{p.name.split('_')[0]},P{i % 3}\n"
                                                       for i, p in enumerate(sorted(flat.glob("*.png")))))
    s = extract([manifest], cache, **FAST)
    assert s.ok == 0 and s.reused == 12
    t = C.load_features(cache, "test_efficientnet_random")
    assert [t.class_names[k] for k in t.y] == [p.rsplit("/", 1)[-1].split("_")[0] for p in t.paths]
    assert set(t.groups) == {"P0", "P1", "P2"}


def test_handcrafted_sets_beside_deep_sets_on_breastmnist(tmp_path):
    """Issue 3's check: --handcrafted hog,lbp adds features/hog and features/lbp, one finite,
    non-constant row per sample, aligned with the deep set of the same cache."""
    cache = tmp_path / "h.h5"
    s = extract([str(BREAST_NPZ)], cache, backbones=[], handcrafted="hog,lbp:method=ror,points_radii=((8,1),(8,2))",
                progress=False, workers=2)
    assert s.ok == 780 and s.sets == ["hog", "lbp_pr8r1-8r2_mror"]
    extract([str(BREAST_NPZ)], cache, **FAST)
    t = C.load_features(cache, ["test_efficientnet_random", "hog", "lbp_pr8r1-8r2_mror"])
    assert len(t) == 780 and np.isfinite(t.X).all()
    for name, sl in t.set_slices.items():
        block = t.X[:, sl]
        assert (block.std(axis=1) > 0).all(), name  # non-constant within each row
        assert C.list_sets(cache)[name]["kind"] == ("handcrafted" if name != "test_efficientnet_random" else "deep")
    from featx.handcrafted import parse_handcrafted
    from featx.sources import scan_sources
    first = scan_sources([BREAST_NPZ]).samples[0]
    hog = parse_handcrafted("hog")[0].compute(first.load())
    row = list(t.ids).index(first.id)
    np.testing.assert_allclose(t.X[row, t.set_slices["hog"]], hog, atol=1e-6)
    again = extract([str(BREAST_NPZ)], cache, backbones=[], handcrafted="hog", progress=False)
    assert again.ok == 0 and again.runtime == "cached"
