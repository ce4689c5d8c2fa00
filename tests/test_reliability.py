"""Reliability and security of `featx extract` under real faults: kill -9 at chosen points (inside
the atomic commit too), Ctrl-C, a second writer, a full disk; untrusted bundles, weights and
manifests. Every run goes through the CLI in a subprocess, the way a user meets these faults."""
from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from featx import cache as C
from tests.support import (ROOT, TINY_ARGS, TINY_SET, error_lines, extract_argv, journal_cache, run_cli, wait_for,
                           write_png)
from tests.support import faults as F  # the same fault injection bench/faults.py runs

SET = TINY_SET


# ----------------------------------------------------------------------------------------------
# kill -9


@pytest.fixture(scope="module")
def killbed(tmp_path_factory):
    """40 chest X-rays + 3 bad files, a cache already holding a large filler set (so the commit that
    rewrites it lasts long enough to be hit), and an uninterrupted run's result to compare with."""
    work = tmp_path_factory.mktemp("kill")
    src = work / "src"
    F.make_chest_folder(src, 40, offset=0)
    base = work / "base.h5"
    F.make_filler_cache(base, rows=3000, dim=512)
    filler = F.read_set(base, F.FILLER_SET)
    ref_cache = work / "ref.h5"
    C.copy_cache(base, ref_cache)
    r = subprocess.run(extract_argv(src, ref_cache), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = F.read_set(ref_cache, SET)
    ref = {"ids": [i for i, o in zip(got["ids"], got["ok"]) if o], "X": got["X"][got["ok"]],
           "failures": len(got["failures"])}
    assert len(ref["ids"]) == 40 and ref["failures"] == 3
    return work, src, base, filler, ref


@pytest.mark.parametrize("point", F.KILL_POINTS)
def test_kill_9_inside_a_shard_write_or_the_index_swap_then_rerun(killbed, point):
    """SIGKILL at exact points of the layout-2 commit: the cache opens and is healthy after the
    kill (old index, or the complete new one), and the re-run gives every row exactly once."""
    from featx.check import check_cache
    work, src, base, filler, ref = killbed
    cache = work / f"point-{point}.h5"
    C.copy_cache(base, cache)
    argv = extract_argv(src, cache)
    r = subprocess.run(F.killing_argv(argv, point), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert F.opens_with_h5py(cache) and check_cache(cache) == []
    assert F.compare(cache, {"ids": [], "X": ref["X"][:0]}, filler=filler)["filler_equal"]
    assert C.pending_records(cache)
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    c = F.compare(cache, ref, filler=filler)
    assert c == dict(c, missing=0, duplicated=0, unexpected=0, filler_missing=0, filler_equal=True, failures=3), c
    assert c["max_diff"] < 1e-5 and c["rows"] == 40 and not C.pending_records(cache)
    assert check_cache(cache) == [] and not list(work.glob(f"point-{point}.h5.tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["shard-write", "index-write"])
def test_kill_9_then_rerun_equals_uninterrupted(killbed, point):
    """SIGKILL once the journal holds some records, then again inside the next run's recovery
    commit (at an exact point: tests/support/faults.arm): the cache opens with h5py after every
    kill, and the re-run gives every row exactly once with the uninterrupted run's features (< 1e-5)."""
    work, src, base, filler, ref = killbed
    kind = f"recovery-{point}"
    cache = work / f"{kind}.h5"
    C.copy_cache(base, cache)
    argv = extract_argv(src, cache)
    hit = F.kill_during(argv, cache, "records", random.Random(kind))
    assert hit["killed"] and hit["returncode"] == -signal.SIGKILL, hit
    assert C.pending_records(cache), "the first kill left no journal record to recover"
    r = subprocess.run(F.killing_argv(argv, point), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr          # killed inside the recovery commit
    assert F.opens_with_h5py(cache)                       # the old file was never touched in place
    assert F.compare(cache, {"ids": [], "X": ref["X"][:0]}, filler=filler)["filler_equal"]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    c = F.compare(cache, ref, filler=filler)
    assert c == dict(c, missing=0, duplicated=0, unexpected=0, filler_missing=0, filler_equal=True,
                     failures=3), c
    assert c["max_diff"] < 1e-5 and c["rows"] == 40
    assert not list(work.glob(f"{kind}.h5.tmp-*"))        # the dead commit's temporary file is gone
    assert not C.pending_records(cache)


@pytest.mark.slow
def test_issue_check_600_xrays_and_3_bad_files_killed_then_rerun(tmp_path, chest_full_dir):
    """The issue's scenario (tiny network here; bench/faults.py runs it with efficientnet_lite0):
    kill -9 once the journal holds records, re-run: 600 rows, each exactly once, 3 failures."""
    src = tmp_path / "src"
    good, bad = F.make_chest_folder(src, 600, chest=chest_full_dir)
    cache = tmp_path / "c.h5"
    argv = extract_argv(src, cache, "--batch-size", "32")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len(C.pending_records(cache)) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    n_records = len(C.pending_records(cache))
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert n_records >= 3 and "rows from an interrupted run" in r.stderr
    with h5py.File(cache, "r") as f:
        ids = [s.decode() for s in f["samples/id"][()]]
        paths = sorted(s.decode() for s in f["samples/path"][()])
        ok = f["features"][SET + "_ok"][()]
        X = f["features"][SET][()]
        failed = {s.decode(): w.decode() for s, w in zip(f["failures/path"][()], f["failures/reason"][()])}
    assert len(ids) == 600 and len(set(ids)) == 600 and ok.all() and np.isfinite(X).all()
    assert paths == sorted(good)
    assert set(failed) == set(bad)
    assert "empty" in failed[bad[0]] and "truncated" in failed[bad[1]] and "not an image" in failed[bad[2]]


# ----------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.fixture(scope="module")
def small_src(tmp_path_factory):
    src = tmp_path_factory.mktemp("sigint") / "src"
    F.make_chest_folder(src, 48, bad=False, offset=20)
    return src


@pytest.mark.slow
def test_ctrl_c_mid_run_stops_gracefully_with_summary_and_usable_cache(tmp_path, small_src):
    # --workers 0: with decoding workers, a worker sometimes prints a ConnectionResetError traceback
    # from multiprocessing's resource_sharer thread when the main process stops mid-batch (the
    # tensors cross by fd passing). The fix belongs in featx/extract.py; bench/faults.py counts it.
    cache = tmp_path / "c.h5"
    argv = extract_argv(small_src, cache, "--workers", "0")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=F.sigint_default)
    wait_for(lambda: len(C.pending_records(cache)) >= 2, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err, err
    (line,) = out.strip().splitlines()
    assert line.startswith("interrupted: ") and line.endswith(f"-> {cache} [{SET}]")
    n = int(line.split()[1])
    assert 16 <= n < 48 and "interrupted: saving what was computed" in err
    t = C.load_features(cache, SET)                   # committed, usable as is
    assert len(t) == n and len(set(t.ids)) == n and not C.pending_records(cache)
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(f"{48 - n} extracted, {n} reused, 0 failed")
    assert len(C.load_features(cache, SET)) == 48


def test_ctrl_c_before_the_first_batch_exits_130_without_traceback(tmp_path, small_src):
    """Ctrl-C while the model is being built (the lock is held, no batch done yet) used to end in
    click's 'Aborted!' with exit code 1."""
    cache = tmp_path / "c.h5"
    proc = subprocess.Popen(extract_argv(small_src, cache), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=F.sigint_default)
    wait_for(lambda: C.lock_path(cache).exists(), proc, step=0.001)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Aborted" not in err
    assert out.startswith(f"interrupted: stopped before the run's summary -> {cache}")
    assert F.opens_with_h5py(cache) and not list(tmp_path.glob("c.h5.tmp-*"))


@pytest.mark.slow  # with the killbed fixture (a filler cache and a reference run) > 15 s
@pytest.mark.skip(reason="layout 2: the commit's temporary index exists for milliseconds, too short to aim "
                         "a SIGINT at from outside; needs an arm()-style hook (tests/support/faults.py)")
def test_ctrl_c_during_the_final_commit_lets_the_commit_finish(killbed):
    """Ctrl-C while the cache file is being rewritten used to abort the commit: the run ended with
    nothing committed (rows left in the journal). Now the commit completes, then the run stops."""
    work, src, base, filler, ref = killbed
    cache = work / "sigint-commit.h5"
    C.copy_cache(base, cache)
    proc = subprocess.Popen(extract_argv(src, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=F.sigint_default)
    wait_for(lambda: bool(list(work.glob("sigint-commit.h5.tmp-*"))), proc, step=0.0005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert out.startswith("interrupted: ")
    assert not C.pending_records(cache) and not list(work.glob("sigint-commit.h5.tmp-*"))
    c = F.compare(cache, ref, filler=filler)
    assert (c["rows"], c["missing"], c["duplicated"], c["filler_equal"]) == (40, 0, 0, True)


# ----------------------------------------------------------------------------------------------
# Two writers


def test_second_writer_is_refused_in_one_line_and_first_finishes(tmp_path, small_src):
    cache = tmp_path / "c.h5"
    first = subprocess.Popen(extract_argv(small_src, cache), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(C.pending_records(cache)) >= 1, first)
    os.kill(first.pid, signal.SIGSTOP)   # the first writer holds the lock mid-run, however fast it is
    try:
        second = subprocess.run(extract_argv(small_src, cache), cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert second.returncode == 2 and "Traceback" not in second.stderr and second.stdout == ""
    assert error_lines(second.stderr) == [
        f"featx: error: {cache}: cache is in use by another featx process (its lock c.h5.lock is held); "
        "wait for it to finish"]
    assert first.returncode == 0, err
    t = C.load_features(cache, SET)
    assert len(t) == 48 and len(set(t.ids)) == 48 and F.opens_with_h5py(cache)


# ----------------------------------------------------------------------------------------------
# Disk full


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    p = mnt / "filler.bin"
    p.unlink(missing_ok=True)
    p.write_bytes(b"\0" * max(0, shutil.disk_usage(mnt).free - leave))
    return p


def test_disk_full_during_commit_is_one_line_and_cache_stays_valid(tmpfs, tmp_path):
    """No room for the new cache file: this used to end in an h5py RuntimeError traceback, then a
    segfault (libhdf5 objects left broken by ENOSPC), and a CACHE.h5.tmp-<pid> file left behind."""
    src = tmp_path / "src"
    F.make_chest_folder(src, 24, bad=False, offset=44)
    cache = tmpfs / "c.h5"
    F.make_filler_cache(tmp_path / "filler.h5", rows=700, dim=512)   # 1.4 MB: a rewrite does not fit below
    C.copy_cache(tmp_path / "filler.h5", cache)
    filler = F.read_set(cache, F.FILLER_SET)
    fill(tmpfs, leave=600_000)     # room for the journal, not for a rewrite of the cache (layout 1 failed here)
    r = subprocess.run(extract_argv(src, cache), cwd=ROOT, capture_output=True, text=True, timeout=300)
    # layout 2 writes only what the run adds: the commit fits, the filler set is untouched
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert [p.name for p in tmpfs.glob("c.h5.tmp-*")] == [] and not C.pending_records(cache)
    assert F.opens_with_h5py(cache)
    assert F.compare(cache, {"ids": [], "X": np.zeros((0, 256), np.float32)}, filler=filler)["filler_equal"]
    assert len(C.load_features(cache, SET)) == 24


def test_disk_full_in_the_journal_is_one_line_and_cache_unchanged(tmpfs, tmp_path):
    src1, src2 = tmp_path / "s1", tmp_path / "s2"
    F.make_chest_folder(src1, 16, bad=False, offset=0)
    F.make_chest_folder(src2, 16, bad=False, offset=8)
    cache = tmpfs / "c.h5"
    assert subprocess.run(extract_argv(src1, cache), cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    before = F.read_set(cache, SET)
    fill(tmpfs, leave=2048)
    r = subprocess.run(extract_argv(src2, cache), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert error_lines(r.stderr) == [
        f"featx: error: {cache}.journal: cannot write the journal (No space left on device); rows computed so "
        "far are kept and the cache is unchanged"]
    after = F.read_set(cache, SET)
    assert after["ids"] == before["ids"] and np.array_equal(after["X"], before["X"])


# ----------------------------------------------------------------------------------------------
# Untrusted files


class _Payload:
    """Unpickling this runs ``touch <marker>``: what a hostile model or weights file can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def h5cache(tmp_path):
    cache = tmp_path / "feat.h5"
    ids = [f"s{i}" for i in range(6)]
    return journal_cache(cache, np.ones((6, 4), np.float32), ["a", "b"] * 3, config={"kind": "t"}, ids=ids, paths=ids)


def test_weights_file_with_code_payload_is_refused(tmp_path, image_folder):
    import torch
    marker = tmp_path / "pwned"
    evil_torch = tmp_path / "evil.pt"
    torch.save({"conv_stem.weight": torch.zeros(1), "x": _Payload(marker)}, evil_torch)
    evil_pickle = tmp_path / "evil.pkl"
    evil_pickle.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    r = run_cli("extract", image_folder, "-o", tmp_path / "c.h5", "--backbone", TINY_ARGS[1], "--weights",
            evil_torch, "--precision", "fp32", "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = error_lines(r.stderr)
    assert line.startswith(f"featx: error: {evil_torch}: cannot load as a weights-only state dict")
    assert not marker.exists(), "the weights file's code ran"
    assert not (tmp_path / "c.h5").exists()
    from featx.backbones.weights import read_state_dict
    from featx.errors import WeightsError
    with pytest.raises(WeightsError, match="cannot load as a weights-only state dict"):
        read_state_dict(evil_pickle)                      # a plain (non-zip) pickle too
    assert not marker.exists()
    # the very same payload does run through a plain unpickler: the test's bait is live
    pickle.loads(evil_pickle.read_bytes())
    assert marker.exists()


def test_bundles_load_only_with_matching_sidecar_or_trust(tmp_path, h5cache):
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    from featx.bundle import ModelBundle, load_bundle, save_bundle, sidecar_path
    from featx.errors import ModelError
    pipe = Pipeline([("head", DummyClassifier())]).fit(np.zeros((4, 4)), [0, 1, 0, 1])
    path = save_bundle(ModelBundle(pipe, ["a", "b"], [0, 1], ["deep"], {"deep": {"kind": "t"}}, {"deep": 4},
                                   "dummy"), tmp_path / "m.joblib")
    assert load_bundle(path).head == "dummy"
    # edited after saving: refused, even though the file is still a valid bundle
    data = path.read_bytes()
    sidecar = sidecar_path(path).read_text()
    sidecar_path(path).write_text("0" * 64 + "  m.joblib\n")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_bundle(path)
    assert load_bundle(path, trust=True).head == "dummy"
    sidecar_path(path).unlink()
    with pytest.raises(ModelError, match="no m.joblib.sha256 sidecar"):
        load_bundle(path)
    sidecar_path(path).write_text(sidecar)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_bundle(path)


def test_hostile_bundle_is_refused_by_predict_before_unpickling(tmp_path, h5cache):
    import joblib
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.joblib"
    joblib.dump(_Payload(marker), evil)
    for sidecar in (None, "f" * 64):
        side = Path(str(evil) + ".sha256")
        side.unlink(missing_ok=True)
        if sidecar:
            side.write_text(f"{sidecar}  evil.joblib\n")
        r = run_cli("predict", evil, h5cache, "-o", tmp_path / "p.csv")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (line,) = error_lines(r.stderr)
        # a pickle is refused for what it is, whatever its sidecar says
        assert line.startswith(f"featx: error: {evil}: pickle-based") and "--trust" in line
        assert not marker.exists(), "the bundle's code ran"
        assert not (tmp_path / "p.csv").exists()
    # even with --trust, a sidecar that does not match refuses the file before unpickling
    r = run_cli("predict", evil, h5cache, "-o", tmp_path / "p.csv", "--trust")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    (line,) = error_lines(r.stderr)
    assert line.startswith(f"featx: error: {evil}: ") and "sha256" in line, line
    assert not marker.exists(), "the bundle's code ran"


def test_manifest_paths_outside_its_folder_are_refused_unless_allowed(tmp_path):
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    rng = np.random.default_rng(5)
    img = lambda p: write_png(p, (rng.random((20, 20)) * 255).astype(np.uint8))  # noqa: E731
    img(inside / "ok.png")
    img(outside / "secret.png")
    img(outside / "abs.png")
    (inside / "sub").mkdir()
    (inside / "sub" / "link.png").symlink_to(img(outside / "linked.png"))
    csv = inside / "m.csv"
    csv.write_text(f"path,label\nok.png,a\n../outside/secret.png,a\n{outside / 'abs.png'},b\nsub/link.png,b\n")
    r = run_cli("extract", csv, "-o", tmp_path / "c.h5", *TINY_ARGS, "--workers", "0", "-q")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout.startswith("1 extracted, 0 reused, 3 failed")
    refused = [ln for ln in r.stderr.splitlines() if "is outside the manifest's folder (use --allow-outside)" in ln]
    assert [ln.split(": ")[2] for ln in refused] == [f"{csv}:3", f"{csv}:4", f"{csv}:5"]
    assert [Path(p).name for p in C.load_features(tmp_path / "c.h5", SET).paths] == ["ok.png"]
    from featx.sources import scan_sources
    allowed = scan_sources([csv], allow_outside=True)     # what --allow-outside passes on
    assert not allowed.failures and len(allowed.samples) == 4
