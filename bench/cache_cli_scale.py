"""Cache scale through the real CLI: adding 10 images to a cache of 30k and of 300k images.

Builds two caches with ``featx extract BIG.npz -o CACHE --backbone none --handcrafted firstorder``
(MedMNIST-sized 28x28 images in one npz, a cheap set: a backbone at 300k images is too slow here),
then times two ways of adding 10 new images, each run ADDS times at both sizes, interleaved:

* ``add10``: ``featx extract NEW10.npz -o CACHE ...`` (only the new images named);
* ``rerun_add10``: ``featx extract BIG.npz NEW10.npz -o CACHE ...`` (the whole, grown source named
  again: every old image is found in the cache and reused, the 10 new ones computed).

Each time is the whole CLI process (start-up and imports included, which cost the same at any
size). After each add the cache is checked: 10 more rows, each added image's id present once,
its firstorder row computed.

    python bench/cache_cli_scale.py [--quick] [--work DIR] [--keep]

Prints ``RESULT add10_small_s= add10_large_s= growth= rerun_add10_small_s= rerun_add10_large_s=
rerun_growth=`` (growth = large / small; the issue asks that adding 10 costs about the same).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ADDS = 2
SET = ["--backbone", "none", "--handcrafted", "firstorder", "-q"]


def make_npz(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, train_images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
             train_labels=rng.integers(0, 2, (n, 1)))
    return path


def featx(*args: str) -> float:
    """Seconds one ``featx extract`` CLI process takes (it must succeed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "featx.cli", "extract", *args, *SET], env=env,
                       capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"featx extract {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return took


def cache_rows(cache: Path) -> tuple[list[str], np.ndarray]:
    import h5py
    with h5py.File(cache, "r") as f:
        return list(f["samples/id"].asstr()[()]), f["features/firstorder_ok"][()].astype(bool)


def check_added(cache: Path, before: int, new: Path) -> None:
    """The cache holds ``before`` + 10 rows and each image of ``new`` exactly once, computed."""
    ids, ok = cache_rows(cache)
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    want = {f"{digest}#train/{i}" for i in range(10)}
    got = [k for k, i in enumerate(ids) if i in want]
    assert len(ids) == before + 10, (cache, len(ids), before)
    assert len(got) == 10 and ok[got].all() and len(set(ids)) == len(ids), cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3k and 30k images (a smoke run)")
    ap.add_argument("--work", default="/work/bench-cache-cli-scale")
    ap.add_argument("--keep", action="store_true", help="keep the built caches for the next run")
    a = ap.parse_args()
    sizes = (3_000, 30_000) if a.quick else (30_000, 300_000)
    work = Path(a.work) / ("quick" if a.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    build = {}
    for n in sizes:
        big, cache = work / f"big{n}.npz", work / f"c{n}.h5"
        if not cache.exists():
            make_npz(big, n, seed=n)
            build[n] = round(featx(str(big), "-o", str(cache)), 1)
    times = {(kind, n): [] for kind in ("add10", "rerun_add10") for n in sizes}
    for k in range(ADDS):
        for kind in ("add10", "rerun_add10"):
            for n in sizes:
                big, cache = work / f"big{n}.npz", work / f"c{n}.h5"
                new = make_npz(work / f"new-{time.time_ns()}.npz", 10, seed=time.time_ns() % (1 << 32))
                before = len(cache_rows(cache)[0])
                args = [str(new)] if kind == "add10" else [str(big), str(new)]
                times[(kind, n)].append(featx(*args, "-o", str(cache)))
                check_added(cache, before, new)
    med = {key: float(np.median(v)) for key, v in times.items()}
    small, large = sizes
    print(json.dumps({"sizes": sizes, "build_s": build, "runs_s": {f"{kind}_{n}": [round(v, 2) for v in vals]
                                                                   for (kind, n), vals in times.items()}}))
    print(f"RESULT add10_small_s={med[('add10', small)]:.2f} add10_large_s={med[('add10', large)]:.2f} "
          f"growth={med[('add10', large)] / med[('add10', small)]:.2f} "
          f"rerun_add10_small_s={med[('rerun_add10', small)]:.2f} rerun_add10_large_s={med[('rerun_add10', large)]:.2f} "
          f"rerun_growth={med[('rerun_add10', large)] / med[('rerun_add10', small)]:.2f}")
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
