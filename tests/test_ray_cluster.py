"""--engine ray on a multi-node cluster (issue 18): per-node resource plans, the pre-run placement
check, node loss, the stall watchdog, fit on the same cluster.

The clusters are ``ray.cluster_utils.Cluster``: real raylets, one per node, all on 127.0.0.1 (set
before Ray is imported). The pure planner is tested first on synthetic node lists, without Ray.
"""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"    # every node binds 127.0.0.1

import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from featx import cache as C  # noqa: E402
from featx.engines.ray_plan import (NodeInfo, PlacementError, StallError, StallWatchdog,  # noqa: E402
                                    nodes_from_ray, plan_nodes)

from tests.support import BREAST_NPZ, TINY  # noqa: E402

FAST = dict(backbones=[TINY], weights="none", precision="fp32", progress=False)


def _node(i, cpus, gpus=0):
    return NodeInfo(f"{i:02d}" + "ab" * 20, "10.0.0.%d" % i, cpus, gpus)


def _fits_every_packing(plan):
    """However many actors Ray packs onto a node, the decode room stays free (the planner's rule)."""
    for s in plan.nodes:
        most = int(s.node.cpus // plan.actor_cpus + 1e-9)
        if plan.use_gpu:
            most = min(most, int(s.node.gpus))
        assert most == s.actors
        if most:
            assert s.node.cpus - most * plan.actor_cpus >= s.decode_room - 1e-9 >= plan.decode_cpus - 1e-9


# ----------------------------------------------------------------------------------------------
# The planner on synthetic nodes (no Ray)


def test_plan_two_nodes_of_two_cpus_one_actor_each_with_decode_room():
    plan = plan_nodes([_node(1, 2), _node(2, 2)])          # the cluster-wide plan asked for one 3.5-CPU actor
    assert plan.actors == 2 and plan.actor_cpus == 1.75 and plan.actor_gpus == 0 and plan.threads == 2
    assert [s.actors for s in plan.nodes] == [1, 1]
    _fits_every_packing(plan)


def test_plan_two_nodes_of_one_cpu_workers_two():
    plan = plan_nodes([_node(1, 1), _node(2, 1)], workers=2)   # was 2 x 0.75 with a 0.5 decode task: a hang
    assert (plan.actors, plan.actor_cpus, plan.decode_cpus, plan.threads) == (2, 0.75, 0.25, 1)
    _fits_every_packing(plan)


def test_plan_three_nodes_of_sixteen_cpus():
    plan = plan_nodes([_node(i, 16) for i in range(3)])       # was 12 x 3.96, 0.16 CPU left per node
    assert plan.actors == 12 and plan.actor_cpus == 3.5 and plan.threads == 4
    assert [(s.actors, s.decode_room) for s in plan.nodes] == [(4, 2.0)] * 3
    _fits_every_packing(plan)
    small = plan_nodes([_node(i, 16) for i in range(3)], workers=3)
    assert small.actors == 3 and small.actor_cpus == 3.5       # 4.0 would let Ray fill a node
    _fits_every_packing(small)


def test_plan_mixed_gpu_and_cpu_nodes():
    nodes = [_node(1, 8, 2), _node(2, 4), _node(3, 4, 1)]
    plan = plan_nodes(nodes, device="auto")
    assert plan.use_gpu and plan.actors == 3 and plan.actor_gpus == 1 and plan.actor_cpus == 1.0
    assert [s.actors for s in plan.nodes] == [2, 0, 1]          # the CPU-only node decodes only
    assert all(s.decode_room >= plan.decode_cpus for s in plan.nodes)
    _fits_every_packing(plan)
    cpu = plan_nodes(nodes, device="cpu")                       # CPU actors everywhere, GPUs unused
    assert not cpu.use_gpu and cpu.actors == 4 and all(s.actors >= 1 for s in cpu.nodes)
    _fits_every_packing(cpu)
    with pytest.raises(PlacementError, match=r"--workers 4 needs 4 actors of 1 GPU .* fit 3 "):
        plan_nodes(nodes, workers=4, device="cuda")
    with pytest.raises(PlacementError, match="--device cuda needs a node with a GPU"):
        plan_nodes([_node(1, 4)], device="cuda")


def test_plan_refusal_is_one_line_naming_every_node():
    with pytest.raises(PlacementError) as e:
        plan_nodes([_node(1, 1), _node(2, 1)], workers=8)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("--workers 8 needs 8 actors of >= 0.5 CPU plus decode room")
    assert "the cluster's nodes fit 2 (node 10.0.0.1 [01abab]: 1 CPU fits 1; node 10.0.0.2 [02abab]: 1 CPU fits 1)" in msg
    with pytest.raises(PlacementError, match="the cluster's nodes fit 0"):
        plan_nodes([_node(1, 0.5)])                            # room for decoding, not for a model
    assert plan_nodes([_node(1, 0.5)], model=False).actors == 0  # handcrafted only: decode tasks


def test_nodes_from_ray_keeps_alive_nodes():
    raw = [{"NodeID": "aa" * 20, "NodeManagerAddress": "127.0.0.1", "Alive": True, "Resources": {"CPU": 2.0}},
           {"NodeID": "bb" * 20, "NodeManagerAddress": "127.0.0.1", "Alive": False, "Resources": {"CPU": 8.0}},
           {"NodeID": "cc" * 20, "NodeManagerAddress": "127.0.0.1", "Alive": True,
            "Resources": {"CPU": 4.0, "GPU": 1.0}}]
    assert nodes_from_ray(raw) == [NodeInfo("aa" * 20, "127.0.0.1", 2.0, 0.0),
                                   NodeInfo("cc" * 20, "127.0.0.1", 4.0, 1.0)]


def test_stall_watchdog_notes_and_stops():
    now = [0.0]
    wd = StallWatchdog(30, note_after=10, clock=lambda: now[0])
    plan = plan_nodes([_node(1, 1), _node(2, 1)], workers=2)
    now[0] = 5
    assert wd.waiting_note(plan, {"CPU": 0.0}) is None
    wd.check()
    now[0] = 12
    assert wd.waiting_note(plan, {"CPU": 0.25}) == \
        "waiting for resources 12 s: 0.25 CPU free, an actor needs 0.75 CPU"
    assert wd.waiting_note(plan, {"CPU": 2.0}) == "waiting for workers 12 s: 2 CPU free"
    wd.progressed()
    now[0] = 40
    wd.check()                                  # 28 s since the last batch
    now[0] = 43
    with pytest.raises(StallError, match=r"^ray: no progress for 31 s \(x\); stopped \(--stall-timeout 30\)$"):
        wd.check("x")
    with pytest.raises(Exception, match="--stall-timeout must be a positive"):
        StallWatchdog(0)


# ----------------------------------------------------------------------------------------------
# A real two-node cluster

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args=dict(num_cpus=1, include_dashboard=False))
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        assert not _descendants(b"raylet"), "a raylet of this test outlived its cluster"


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """60 BreastMNIST images (40 train, 10 val, 10 test) and the local engine's cache of them."""
    d = tmp_path_factory.mktemp("subset")
    z = np.load(BREAST_NPZ)
    npz = d / "sub60.npz"
    np.savez(npz, **{f"{split}_{kind}": z[f"{split}_{kind}"][:n] for split, n in (("train", 40), ("val", 10), ("test", 10))
                     for kind in ("images", "labels")})
    from featx.extraction import extract
    s = extract(npz, d / "local.h5", **FAST)
    assert s.ok == 60
    return npz, d / "local.h5", s.sets


def _same_as_local(ref: Path, out: Path, sets, by_id=False):
    ta, tb = C.load_features(ref, sets), C.load_features(out, sets)
    assert len(tb.ids) == len(set(tb.ids)) == len(ta.ids)
    if by_id:
        order = {i: k for k, i in enumerate(tb.ids)}
        rows = [order[i] for i in ta.ids]
    else:
        assert list(ta.ids) == list(tb.ids)
        rows = list(range(len(tb.ids)))
    assert tb.X.dtype == np.float32 and np.abs(ta.X - tb.X[rows]).max() < 1e-4
    assert (ta.y == tb.y[rows]).all()
    assert C.list_sets(ref) == C.list_sets(out) and C.read_state(ref).requests == C.read_state(out).requests
    assert not C.pending_records(out)


def _descendants(marker: bytes) -> list[tuple[int, int]]:
    """(pid, parent pid) of this test process's descendants whose command line holds ``marker``: only
    this test's own clusters (other sessions on the machine may run Ray too)."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            procs[int(d.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    me, out = os.getpid(), []
    for pid, (ppid, cmd) in procs.items():
        if marker not in cmd:
            continue
        p = ppid
        while p > 1 and p != me:
            p = procs.get(p, (1, b""))[0]
        if p == me:
            out.append((pid, ppid))
    return out


def _extract_in_thread(*args, **kw):
    """extract_ray in a thread; the box receives its summary or its error."""
    from featx.engines.ray import extract_ray
    box: dict = {}

    def run():
        try:
            box["summary"] = extract_ray(*args, **kw)
        except BaseException as e:  # surfaced by the test's assertions
            box["error"] = e

    th = threading.Thread(target=run)
    th.start()
    return th, box


def test_nodes_are_loopback_and_cache_equals_local_via_cli(two_nodes, subset, tmp_path):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    assert two_nodes.address.startswith("127.0.0.1:")
    npz, ref, sets = subset
    out = tmp_path / "ray.h5"
    from featx.cli.main import main
    res = CliRunner().invoke(main, ["extract", str(npz), "-o", str(out), "--engine", "ray", "--address",
                                    two_nodes.address, "--backbone", TINY, "--weights", "none",
                                    "--precision", "fp32", "--workers", "2", "--batch-size", "8", "-q"])
    assert res.exit_code == 0, res.output
    assert "60 extracted, 0 reused, 0 failed" in res.output
    _same_as_local(ref, out, sets)


def test_more_workers_than_the_nodes_fit_is_refused_in_one_line(two_nodes, subset, tmp_path):
    npz, _, _ = subset
    out = tmp_path / "refused.h5"
    from featx.cli.main import main
    t = time.monotonic()
    res = CliRunner().invoke(main, ["extract", str(npz), "-o", str(out), "--engine", "ray", "--address",
                                    two_nodes.address, "--backbone", TINY, "--weights", "none", "--workers", "8"])
    assert time.monotonic() - t < 60
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith("featx: error: --workers 8 needs 8 actors of >= 0.5 CPU plus decode room")
    assert "the cluster's nodes fit 2 (node 127.0.0.1 [" in lines[0] and lines[0].count("1 CPU fits 1") == 2
    assert not C.pending_records(out)


def test_fit_engine_ray_on_the_cluster(two_nodes, subset, tmp_path, monkeypatch):
    from featx.bundle import load_bundle
    from featx.cli.main import main
    npz, ref, sets = subset
    monkeypatch.setenv("RAY_ADDRESS", two_nodes.address)
    preds = []
    for engine in ("local", "ray"):
        model = tmp_path / f"{engine}.joblib"
        res = CliRunner().invoke(main, ["fit", str(ref), "--features", sets[0], "--head", "logreg", "--engine",
                                        engine, "--bootstrap", "0", "-o", str(model)])
        assert res.exit_code == 0, res.output
        t = C.load_features(ref, sets)
        preds.append(load_bundle(model).pipeline.predict_proba(t.X))
    assert preds[0].shape == (60, 2) and np.allclose(preds[0], preds[1], atol=1e-9)


def test_stall_timeout_stops_and_commits_what_is_done(two_nodes, subset, tmp_path):
    npz, local, sets = subset
    out = tmp_path / "stalled.h5"
    th, box = _extract_in_thread(npz, out, workers=2, batch_size=4, stall_timeout=25, **FAST)
    frozen: list[int] = []
    try:
        deadline = time.time() + 120
        while th.is_alive() and time.time() < deadline:
            # once rows are delivered, freeze every model actor (and any that starts later): alive
            # but silent, so no batch comes back
            if frozen or C.pending_records(out):
                for pid, _ in _descendants(b"_Embedder"):
                    if pid not in frozen:
                        os.kill(pid, signal.SIGSTOP)
                        frozen.append(pid)
            time.sleep(0.02)
        th.join(timeout=60)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert frozen, "no model actor was seen delivering"
    assert not th.is_alive()
    err = box.get("error")
    assert isinstance(err, StallError), box
    msg = str(err)
    assert "\n" not in msg and "ray: no progress for" in msg and "--stall-timeout 25" in msg
    n_done = int(msg.split("; the ")[1].split(" rows")[0])
    assert 0 < n_done < 60
    assert not C.pending_records(out)                  # the journaled rows are in the cache now
    t, ref = C.load_features(out, sets), C.load_features(local, sets)
    assert len(t.ids) == len(set(t.ids)) == n_done               # the committed rows are the right ones
    row = {i: k for k, i in enumerate(ref.ids)}
    assert np.abs(t.X - ref.X[[row[i] for i in t.ids]]).max() < 1e-4


def test_worker_node_removed_mid_run_every_row_exactly_once(two_nodes, subset, tmp_path):
    npz, ref, sets = subset
    extra = two_nodes.add_node(num_cpus=1)
    two_nodes.wait_for_nodes()
    raylet = extra.all_processes["raylet"][0].process.pid
    out = tmp_path / "node_lost.h5"
    th, box = _extract_in_thread(npz, out, workers=3, batch_size=4, **FAST)
    removed = False
    deadline = time.time() + 150
    while th.is_alive() and time.time() < deadline:
        on_extra = [pid for pid, parent in _descendants(b"_Embedder") if parent == raylet]
        if on_extra and len(C.pending_records(out)) >= 2:
            two_nodes.remove_node(extra)                # the whole node: raylet, actor, its objects
            removed = True
            break
        time.sleep(0.05)
    th.join(timeout=180)
    assert removed, "no actor was seen running on the extra node mid-run"
    assert not th.is_alive() and "error" not in box, box.get("error")
    s = box["summary"]
    assert s.ok == 60 and s.failed == 0
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    _same_as_local(ref, out, sets, by_id=True)


@pytest.mark.slow
def test_real_efficientnet_lite0_on_the_cluster_equals_local(two_nodes, tmp_path):
    from featx.engines.ray import extract_ray
    from featx.extraction import extract
    z = np.load(BREAST_NPZ)
    npz = tmp_path / "sub24.npz"
    np.savez(npz, test_images=z["test_images"][:24], test_labels=z["test_labels"][:24])
    opts = dict(backbones=["efficientnet_lite0"], precision="fp32", progress=False, batch_size=8)
    ref = extract(npz, tmp_path / "local.h5", **opts)
    s = extract_ray(npz, tmp_path / "ray.h5", workers=2, address=two_nodes.address, **opts)
    assert s.ok == ref.ok == 24 and s.sets == ref.sets
    _same_as_local(tmp_path / "local.h5", tmp_path / "ray.h5", ref.sets)
    assert C.load_features(tmp_path / "ray.h5", ref.sets).X.shape == (24, 1280)
