"""Ray engine scaling: throughput with 1 model actor vs a full per-node plan, and Ray vs the local path,
with per-node figures.

    python bench/ray_scaling.py                          # efficientnet_lite0 (real weights, fp32), 780 BreastMNIST images, local Ray
    python bench/ray_scaling.py --nodes 2 --cpus-per-node 1   # a 2-node ray.cluster_utils cluster on 127.0.0.1
    python bench/ray_scaling.py --quick                  # tiny random-init timm/test_efficientnet, 64 images

Each run writes a fresh cache; times are wall-clock for the whole ``extract`` call (scan, model
build, decode, model, commit). The cluster is started once and warmed up with a 16-image run
before the timed runs. For each Ray run it prints the plan per node (CPUs, actors it may host,
decode room kept free) and, measured, the actors each node ran (actor processes mapped to their
node's raylet when the cluster is a local ``Cluster``) and the images/s per node that ran actors.
Prints, last::

    RESULT ray_full_v1=<throughput full plan / 1 actor> ray_vs_local=<throughput Ray 1 actor / local> nodes=<N>

(on one machine every node shares the same cores: the figures measure the engine's overhead and
placement, not more hardware).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny network, 64 images")
    ap.add_argument("--nodes", type=int, default=1, help="nodes of a local ray.cluster_utils cluster (1: plain ray.init)")
    ap.add_argument("--cpus-per-node", type=int, default=None, help="CPUs per node (default: all cores, split over the nodes)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    cpus = args.cpus_per_node or max(1, (os.cpu_count() or 2) // args.nodes)

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # every node on 127.0.0.1
    import ray

    from featx import cache as C
    from featx.engines.ray import extract_ray, plan_resources
    from featx.extraction import ExtractConfig, extract

    src_npz = ROOT / "featx" / "data" / "breastmnist.npz"
    tmp = Path(tempfile.mkdtemp(prefix="featx-ray-bench-"))
    cluster = None
    try:
        z = np.load(src_npz)
        if args.quick:
            src = tmp / "quick.npz"
            np.savez(src, train_images=z["train_images"][:64], train_labels=z["train_labels"][:64])
            opts = dict(backbones=["timm/test_efficientnet"], weights="none", precision="fp32")
        else:
            src = src_npz
            opts = dict(backbones=["efficientnet_lite0"], precision="fp32")
        opts.update(batch_size=min(args.batch_size, 8) if args.quick else args.batch_size, progress=False)

        t = time.perf_counter()
        raylets: dict[int, str] = {}
        if args.nodes > 1:
            from ray.cluster_utils import Cluster
            cluster = Cluster(initialize_head=True, connect=True,
                              head_node_args=dict(num_cpus=cpus, include_dashboard=False))
            for _ in range(args.nodes - 1):
                cluster.add_node(num_cpus=cpus)
            cluster.wait_for_nodes()
            for node in cluster.list_all_nodes():
                raylets[node.all_processes["raylet"][0].process.pid] = node.node_id
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t

        def actors_per_node(pids) -> dict[str, int]:
            out: dict[str, int] = {}
            for pid in pids:
                node = raylets.get(_parent_pid(pid), "?") if raylets else "local"
                out[node[:6]] = out.get(node[:6], 0) + 1
            return out

        def timed(fn, name, **kw):
            out = tmp / f"{name}.h5"
            t0 = time.perf_counter()
            s = fn(src, out, **opts, **kw)
            secs = time.perf_counter() - t0
            print(f"{name:8s} {s.ok:5d} images {secs:7.2f} s {s.ok / secs:7.1f} img/s  [{s.runtime}]", flush=True)
            if fn is extract_ray:
                plan = plan_resources(ExtractConfig(workers=kw.get("workers")), ray.nodes())
                print(f"  plan: {plan.describe()}")
                ran = actors_per_node(getattr(s, "worker_pids", []))
                busy = max(1, len([n for n in ran if n != "?"]))
                print("  ran: " + ", ".join(f"node [{n}] {k} actor{'s' if k != 1 else ''}" for n, k in sorted(ran.items()))
                      + f"; {s.ok / secs / busy:.1f} img/s per node that ran actors, "
                      f"{s.ok / secs / max(1, sum(ran.values())):.1f} img/s per actor process")
            return s.ok / secs, out, s

        warm = tmp / "warm.npz"   # not counted: Ray's workers import torch and featx once
        np.savez(warm, train_images=z["train_images"][:16], train_labels=z["train_labels"][:16])
        t = time.perf_counter()
        extract_ray(warm, tmp / "warm.h5", **opts)
        t_warm = time.perf_counter() - t

        r1, c1, s1 = timed(extract_ray, "ray_1", workers=1)
        rf, _, _ = timed(extract_ray, "ray_full")          # the default plan: every node that fits an actor
        rl, cl, _ = timed(extract, "local")
        a, b = C.load_features(cl, s1.sets), C.load_features(c1, s1.sets)
        diff = float(np.abs(a.X - b.X).max()) if list(a.ids) == list(b.ids) else float("nan")
        print(f"{args.nodes} nodes x {cpus} CPU; ray start-up {t_init:.1f} s and warm-up run on 16 images "
              f"{t_warm:.1f} s (not in the runs); max |ray - local| = {diff:.2e}; ray_full vs local {rf / rl:.2f}")
        print(f"RESULT ray_full_v1={rf / r1:.2f} ray_vs_local={r1 / rl:.2f} nodes={args.nodes}")
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
