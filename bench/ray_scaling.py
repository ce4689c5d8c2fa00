"""Ray engine scaling on one machine: throughput with 1 vs 2 model actors, and Ray vs the local path.

    python bench/ray_scaling.py            # efficientnet_lite0 (real weights, fp32), all 780 BreastMNIST images
    python bench/ray_scaling.py --quick    # the tiny random-init timm/test_efficientnet, 390 images

Each run writes a fresh cache; times are wall-clock for the whole ``extract`` call (scan, model
build, decode, model, commit). The local Ray cluster is started once and warmed up with a 16-image
run before the timed runs; both are reported on their own. Prints, last::

    RESULT ray_2v1=<throughput 2 actors / 1 actor> ray_vs_local=<throughput Ray 1 actor / local>

(both Ray runs and the local run use every core of the machine; on 2 cores two actors share
them, so ray_2v1 measures the overhead of splitting, not more hardware).
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny network, half the images")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    import ray

    from featx import cache as C
    from featx.engines.ray import extract_ray
    from featx.extraction import extract

    src_npz = ROOT / "featx" / "data" / "breastmnist.npz"
    tmp = Path(tempfile.mkdtemp(prefix="featx-ray-bench-"))
    try:
        if args.quick:  # a smaller input: the first half of each split
            z = np.load(src_npz)
            sub = {}
            for k in z.files:
                sub[k] = z[k][: len(z[k]) // 2]
            src = tmp / "half.npz"
            np.savez(src, **sub)
            opts = dict(backbones=["timm/test_efficientnet"], weights="none", precision="fp32")
        else:
            src = src_npz
            opts = dict(backbones=["efficientnet_lite0"], precision="fp32")
        opts.update(batch_size=args.batch_size, progress=False)

        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t

        def timed(fn, name, **kw):
            out = tmp / f"{name}.h5"
            t0 = time.perf_counter()
            s = fn(src, out, **opts, **kw)
            secs = time.perf_counter() - t0
            print(f"{name:8s} {s.ok:5d} images {secs:7.2f} s {s.ok / secs:7.1f} img/s  [{s.runtime}]", flush=True)
            return s.ok / secs, out, s

        # warm-up (not counted): Ray's worker processes import torch and featx once per driver
        z = np.load(src)
        warm = tmp / "warm.npz"
        np.savez(warm, train_images=z["train_images"][:16], train_labels=z["train_labels"][:16])
        t = time.perf_counter()
        extract_ray(warm, tmp / "warm.h5", workers=2, **opts)
        t_warm = time.perf_counter() - t

        r1, c1, s1 = timed(extract_ray, "ray_1", workers=1)
        r2, c2, _ = timed(extract_ray, "ray_2", workers=2)
        rl, cl, _ = timed(extract, "local")
        a, b = C.load_features(cl, s1.sets), C.load_features(c1, s1.sets)
        diff = float(np.abs(a.X - b.X).max()) if list(a.ids) == list(b.ids) else float("nan")
        print(f"ray start-up {t_init:.1f} s and warm-up run on 16 images {t_warm:.1f} s (not in the runs); "
              f"max |ray - local| = {diff:.2e}; "
              f"ray_2 vs local {r2 / rl:.2f}")
        print(f"RESULT ray_2v1={r2 / r1:.2f} ray_vs_local={r1 / rl:.2f}")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
