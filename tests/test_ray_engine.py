"""--engine ray: the same cache as the local path, fault tolerance, fit on Ray, the missing-ray error.

A local Ray cluster (``ray.init(num_cpus=2)``) runs everything; the local path is the reference.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from featx import cache as C  # noqa: E402
from featx.engines.ray import RayEngine, extract_ray  # noqa: E402
from featx.extraction import extract  # noqa: E402

from tests.fit_helpers import toy_data, write_cache  # noqa: E402
from tests.support import BREAST_NPZ, TINY, write_png  # noqa: E402

FAST = dict(backbones=[TINY], weights="none", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    # address="local": a cluster of its own, never one another process started on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "local.h5"
    s = extract(BREAST_NPZ, path, **FAST)
    assert s.ok == 780
    return path, s.sets


def _same_cache(a: Path, b: Path, sets, by_id=False, tol=1e-4):
    ta, tb = C.load_features(a, sets), C.load_features(b, sets)
    if by_id:
        order = {i: k for k, i in enumerate(tb.ids)}
        assert sorted(ta.ids) == sorted(tb.ids)
        tb_X = tb.X[[order[i] for i in ta.ids]]
        tb_y = tb.y[[order[i] for i in ta.ids]]
    else:
        assert list(ta.ids) == list(tb.ids)
        tb_X, tb_y = tb.X, tb.y
    assert ta.X.dtype == tb_X.dtype == np.float32
    assert np.abs(ta.X - tb_X).max() < tol
    assert (ta.y == tb_y).all() and ta.class_names == tb.class_names
    assert C.list_sets(a) == C.list_sets(b)          # same names, same complete configs
    sa, sb = C.read_state(a), C.read_state(b)
    assert sa.requests == sb.requests                # so a later local run reuses the Ray run's sets
    return ta, tb


def test_breastmnist_same_ids_and_features_as_local(cluster, local_cache, tmp_path):
    ref, sets = local_cache
    out = tmp_path / "ray.h5"
    s = extract(BREAST_NPZ, out, workers=1, engine=RayEngine(), **FAST)
    assert s.ok == 780 and s.failed == 0 and s.sets == sets and s.runtime.startswith("ray 1 x cpu fp32")
    ta, tb = _same_cache(ref, out, sets)
    assert len(set(tb.ids)) == 780 and set(tb.splits) == {"train", "val", "test"}
    assert not C.pending_records(out)
    # a second Ray run computes nothing; a local run on the Ray cache reuses it too
    again = extract_ray(BREAST_NPZ, out, **FAST)   # the convenience form
    assert again.ok == 0 and again.reused == 780
    assert extract(BREAST_NPZ, out, **FAST).reused == 780


@pytest.mark.slow
def test_ray_actors_run_the_compiled_model(cluster, local_cache, tmp_path):
    """--compile on with --engine ray: the actors compile (they write the graph's package), the
    set records it, the features are the local eager ones to float rounding."""
    from featx.backbones.inference import graph_package, prepare_model
    from featx.runtime import make_runtime
    ref, sets = local_cache
    package = graph_package(prepare_model(TINY, make_runtime("cpu", "fp32"), weights="none"), 32)
    start = time.time()
    out = tmp_path / "ray-compiled.h5"
    s = extract(BREAST_NPZ, out, workers=1, engine=RayEngine(), compile="on", **FAST)
    assert s.ok == 780 and s.sets == sets
    assert C.list_sets(out)[sets[0]]["compiled"] == {"backend": "aot_inductor", "freezing": True}
    assert package.is_file() and package.stat().st_mtime >= start - 1   # written by an actor's compile
    ta, tb = C.load_features(ref, sets), C.load_features(out, sets)
    assert list(ta.ids) == list(tb.ids) and np.abs(ta.X - tb.X).max() < 1e-4


def test_ray_respects_the_cache_lock(cluster, tmp_path):
    out = tmp_path / "locked.h5"
    with C.CacheLock(out):
        with pytest.raises(C.CacheLockedError):
            extract(BREAST_NPZ, out, engine=RayEngine(), **FAST)


def _embedder_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"_Embedder" in cmd and b"ray::" in cmd:
                pids.append(int(d.name))
    return pids


def _breast_on_ray_in_thread(out: Path) -> tuple[threading.Thread, dict]:
    """BreastMNIST extracted into ``out`` on Ray (one actor, batches of 16) in a started thread;
    the box gets its "summary" or the "error" it raised."""
    box: dict = {}

    def run():
        try:
            box["summary"] = extract(BREAST_NPZ, out, workers=1, batch_size=16, engine=RayEngine(), **FAST)
        except BaseException as e:  # surfaced in the tests' assertions
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_killed_worker_mid_extraction_every_sample_exactly_once(cluster, local_cache, tmp_path):
    ref, sets = local_cache
    out = tmp_path / "killed.h5"
    t, box = _breast_on_ray_in_thread(out)
    killed = None
    deadline = time.time() + 120
    while t.is_alive() and time.time() < deadline:
        pids = _embedder_pids()
        if pids and len(C.pending_records(out)) >= 3:   # the actor has delivered batches: mid-run
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    t.join(timeout=180)
    assert not t.is_alive()
    assert "error" not in box, box.get("error")
    s = box["summary"]
    assert killed is not None, "the model actor was never seen running"
    assert s.ok == 780 and s.failed == 0
    assert killed in s.worker_pids and len(s.worker_pids) >= 2   # the batch finished on a new actor
    ta, tb = _same_cache(ref, out, sets, by_id=True)
    assert len(tb.ids) == len(set(tb.ids)) == 780


def test_actor_killed_inside_its_journal_write_leaves_nothing_the_cache_uses(cluster, local_cache, tmp_path):
    """The model actors write their own journal records; one is SIGKILLed while it writes one
    (its ``.tmp`` file exists and outlives it). The driver only commits: every sample ends up in
    the cache exactly once with the local path's features, and the torn record is never read."""
    ref, sets = local_cache
    out = tmp_path / "torn.h5"
    journal = C.journal_dir(out)
    t, box = _breast_on_ray_in_thread(out)
    torn = []           # .tmp records whose writer was killed before it could rename them
    deadline = time.time() + 150
    while t.is_alive() and time.time() < deadline and not torn:
        for tmp in journal.glob("*.tmp") if journal.is_dir() else ():
            parts = tmp.stem.split("-")                 # a worker's: <owner>-<run>-<order>-<writer pid>.tmp
            if len(parts) != 4:
                continue
            writer = int(parts[3])
            try:
                if b"ray::" not in Path(f"/proc/{writer}/cmdline").read_bytes():
                    continue                            # only ever a Ray worker process
                os.kill(writer, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue
            time.sleep(0.2)
            if tmp.exists():                            # the writer is dead and its record was not renamed
                torn.append(tmp.name)
            break
    t.join(timeout=240)
    assert not t.is_alive()
    assert "error" not in box, box.get("error")
    assert torn, "no actor was caught inside a journal write"
    s = box["summary"]
    assert s.ok == 780 and s.failed == 0
    ta, tb = _same_cache(ref, out, sets, by_id=True)
    assert len(tb.ids) == len(set(tb.ids)) == 780
    assert not journal.exists() or not list(journal.iterdir())   # the torn .tmp was cleared, not committed


def test_handcrafted_only_tasks_write_their_records_same_cache_as_local(cluster, image_folder, tmp_path):
    good = sorted(image_folder.rglob("*.png"))[0]
    (image_folder / "benign" / "torn.png").write_bytes(good.read_bytes()[:120])   # decodes to an error
    hand = dict(backbones=[], handcrafted="firstorder", progress=False)
    local = extract([image_folder], tmp_path / "local.h5", workers=0, **hand)
    on_ray = extract([image_folder], tmp_path / "ray.h5", engine=RayEngine(), **hand)
    assert local.ok == on_ray.ok == 12 and local.failed == on_ray.failed == 1
    _same_cache(tmp_path / "local.h5", tmp_path / "ray.h5", ["firstorder"], tol=1e-6)   # same rows, same order
    assert C.read_state(tmp_path / "ray.h5").failures == C.read_state(tmp_path / "local.h5").failures
    assert [f[0] for f in C.read_state(tmp_path / "ray.h5").failures] == [str(image_folder / "benign" / "torn.png")]
    assert not C.pending_records(tmp_path / "ray.h5")


def test_real_weights_subset_via_cli_and_skips_cached(cluster, tmp_path):
    z = np.load(BREAST_NPZ)
    imgs, labels = z["test_images"][:60], z["test_labels"].reshape(-1)[:60]
    root = tmp_path / "imgs"
    for k, (im, lab) in enumerate(zip(imgs, labels)):
        write_png(root / ("malignant" if lab == 0 else "benign") / f"{k:03d}.png", im)
    opts = dict(backbones=["efficientnet_lite0"], precision="fp32", progress=False)
    ref = tmp_path / "local.h5"
    s_ref = extract(root, ref, **opts)
    assert s_ref.ok == 60
    # part of the images cached locally first: the Ray run must compute only the others
    mixed = tmp_path / "mixed.h5"
    n_benign = extract(root / "benign", mixed, **opts).ok
    assert 0 < n_benign < 60
    from featx.cli.main import main
    res = CliRunner().invoke(main, ["extract", str(root), "-o", str(mixed), "--engine", "ray",
                                    "--backbone", "efficientnet_lite0", "--precision", "fp32", "-q"])
    assert res.exit_code == 0, res.output
    assert f"{60 - n_benign} extracted, {n_benign} reused, 0 failed" in res.output
    ta, tb = _same_cache(ref, mixed, s_ref.sets, by_id=True)
    assert ta.X.shape == (60, 1280)


def test_fit_engine_ray_joblib_matches_local(cluster, local_cache, tmp_path):
    from featx.engines.ray_fit import fit_ray
    from featx.fit import fit
    ref, sets = local_cache
    kw = dict(n_boot=0, search="grid", seed=0)
    a = fit(ref, sets, "logreg", n_jobs=1, **kw)
    b = fit_ray(ref, sets, "logreg", **kw)
    assert a.best_params == b.best_params
    assert a.primary["auc"] == pytest.approx(b.primary["auc"], abs=1e-9)
    assert np.array_equal(a.evaluation.y_pred, b.evaluation.y_pred)


def test_fit_cli_xgboost_through_ray_train(cluster, local_cache, tmp_path, monkeypatch):
    import featx.engines.ray_fit as RF
    from featx.cli.main import main
    from featx.bundle import load_bundle
    ref, sets = local_cache
    monkeypatch.setattr(RF, "XGB_MIN_ROWS", 100)   # this cache counts as large
    calls = []
    real_fit = RF.RayXGBoostHead.fit
    monkeypatch.setattr(RF.RayXGBoostHead, "fit", lambda self, X, y, sample_weight=None:
                        calls.append(X.shape) or real_fit(self, X, y, sample_weight))
    model = tmp_path / "xgb.joblib"
    res = CliRunner().invoke(main, ["fit", str(ref), "--features", sets[0], "--head", "xgboost", "--engine", "ray",
                                    "--bootstrap", "0", "--param", "n_estimators=30", "-o", str(model)])
    assert res.exit_code == 0, res.output
    assert calls and calls[0][0] == 624          # one Ray Train run on train+val, BreastMNIST's split
    bundle = load_bundle(model)
    head = bundle.pipeline.steps[-1][1]
    assert isinstance(head, RF.RayXGBoostHead) and head.bst_.num_boosted_rounds() == 30
    auc = bundle.metrics["test"]["auc"]
    assert auc > 0.6, auc
    t = C.load_features(ref, sets)
    proba = bundle.pipeline.predict_proba(t.X[t.splits == "test"])
    assert proba.shape == (156, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_missing_ray_is_a_one_line_featx_error(monkeypatch, tmp_path):
    from featx.cli.main import main
    from featx.engines import EngineUnavailableError, require_ray
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` now raises ImportError
    with pytest.raises(EngineUnavailableError, match=r"pip install 'featx\[ray\]'"):
        require_ray()
    with pytest.raises(EngineUnavailableError):
        extract(BREAST_NPZ, tmp_path / "x.h5", engine=RayEngine(), **FAST)
    with pytest.raises(EngineUnavailableError):
        extract_ray(BREAST_NPZ, tmp_path / "x.h5", **FAST)
    sets, y = toy_data(60)
    toy = write_cache(tmp_path / "toy.h5", sets, y)
    for args in (["extract", str(BREAST_NPZ), "-o", str(tmp_path / "x.h5"), "--engine", "ray"],
                 ["fit", str(toy), "--features", "a", "--head", "svm", "-o", str(tmp_path / "m.joblib"), "--engine", "ray"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("featx: error: ") and "pip install 'featx[ray]'" in lines[0]
    assert not (tmp_path / "x.h5").exists()
