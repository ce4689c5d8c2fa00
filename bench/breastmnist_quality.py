"""BreastMNIST (28 px, official split) quality run: one cache, the ensemble, and compare --ensemble.

    .venv/bin/python bench/breastmnist_quality.py [OUTDIR]     (default out/)

Extracts the embedded BreastMNIST with efficientnet_lite0/1/2 and taps head,blocks.4,blocks.5 once
(OUTDIR/breast.h5, reused when present), then runs ``featx compare --ensemble`` (4 heads x 3 choices)
and ``featx fit`` (the ensemble; selected on out-of-fold predictions over train+val, never test),
timing each and printing their summary lines. Not a test: minutes on a 2-core machine.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from featx.demo import demo_data_path

L0, L1, L2 = "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"
TAPS0 = f"{L0}+{L0}.blocks.4+{L0}.blocks.5"
CHOICES = f"{L0},{TAPS0},{TAPS0}+{L2}"


def featx(*args: str) -> str:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "featx.cli", *args], check=True, capture_output=True, text=True)
    print(f"$ featx {' '.join(args)}\n{out.stdout.strip()}\n({time.perf_counter() - t:.1f} s)", flush=True)
    return out.stdout


def main(outdir: str = "out") -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "breast.h5"
    if not cache.exists():
        featx("extract", str(demo_data_path()), "-o", str(cache), "--backbone", f"{L0},{L1},{L2}",
              "--layers", "head,blocks.4,blocks.5", "-q")
    featx("compare", str(cache), "--features", CHOICES, "--heads", "svm,logreg,xgboost,elm", "--ensemble",
          "-o", str(out / "board.csv"), "-q")
    featx("fit", str(cache), "--features", f"{L0},{L0}.blocks.4,{L0}.blocks.5,{L2}",
          "--choices", CHOICES.replace(",", ";"), "--select-on", "oof", "-o", str(out / "ensemble.joblib"),
          "--report", str(out / "ensemble_report"), "-q")


if __name__ == "__main__":
    main(*sys.argv[1:2])
