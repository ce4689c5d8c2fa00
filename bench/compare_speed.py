"""How long `featx compare` takes: 5 heads x 3 feature-set choices on BreastMNIST (EfficientNet-Lite0 and -Lite2).

Extracts the features first if the cache lacks them (not timed as part of compare), then runs
``featx.fit.compare`` with the defaults of ``featx compare`` (grid search tuned on val, refit on
train+val, test metrics with 1000 bootstrap resamples, runs in parallel on all cores) and prints
the wall-clock time and the leaderboard. The README's compare figure comes from this script.
``--ensemble`` times ``featx compare --ensemble`` instead: 4 heads (svm, logreg, xgboost, elm) x
the 3 choices plus the greedy-selected ensemble row (issue 17's check: under 5 minutes).

    python bench/compare_speed.py [--cache /tmp/featx-bench/breast.h5] [--out DIR] [--ensemble]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT / "featx" / "data" / "breastmnist.npz"
LITE0, LITE2 = "efficientnet_lite0", "efficientnet_lite2"
TAPS = ["blocks.4", "blocks.5"]
LIMIT_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "featx-bench", "breast.h5"))
    ap.add_argument("--out", default=None, help="where to write leaderboard.csv/.md/.png (default: beside the cache)")
    ap.add_argument("--heads", default=None, help="default svm,rf,xgboost,elm,logreg (svm,logreg,xgboost,elm with --ensemble)")
    ap.add_argument("--ensemble", action="store_true", help="add the ensemble row (compare --ensemble)")
    ap.add_argument("--jobs", type=int, default=-1)
    args = ap.parse_args()

    from featx.cache import list_sets
    from featx.extraction import extract
    from featx.fit import compare

    cache = Path(args.cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    have = set(list_sets(cache)) if cache.exists() else set()
    taps = [f"{LITE0}.{t}" for t in TAPS]
    t0 = time.perf_counter()
    if not {LITE0, *taps} <= have:
        extract([str(NPZ)], cache, backbones=[LITE0], layers=["head", *TAPS], progress=False)
    if LITE2 not in have:
        extract([str(NPZ)], cache, backbones=[LITE2], progress=False)
    extract_s = time.perf_counter() - t0
    choices = [[LITE0], [LITE0, *taps], [LITE0, *taps, LITE2]]
    heads = (args.heads or ("svm,logreg,xgboost,elm" if args.ensemble else "svm,rf,xgboost,elm,logreg")).split(",")
    out = Path(args.out) if args.out else cache.parent
    t0 = time.perf_counter()
    res = compare(cache, choices, heads, out=out / "leaderboard.csv", n_jobs=args.jobs, ensemble=args.ensemble)
    secs = time.perf_counter() - t0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"extraction (not timed below): {extract_s:.1f} s")
    print(f"featx compare{' --ensemble' if args.ensemble else ''}: {len(heads)} heads x {len(choices)} "
          f"feature-set choices = {len(res.leaderboard)} rows{load} "
          f"in {secs:.1f} s on {cpus} CPUs (limit {LIMIT_S:.0f} s: {'OK' if secs < LIMIT_S else 'OVER'})")
    cols = ["rank", "features", "head", "auc", "auc_lo", "auc_hi", "accuracy", "balanced_accuracy", "seconds"]
    board = res.leaderboard[cols].copy()
    board["features"] = board["features"].str.replace("efficientnet_", "")
    print(board.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"leaderboard: {out / 'leaderboard.csv'} (.md, .png)")
    return 0 if secs < LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
