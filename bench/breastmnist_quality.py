"""BreastMNIST (28 px, official split) quality run: the extractions, then the one ensemble command.

    .venv/bin/python bench/breastmnist_quality.py [OUTDIR]     (default out/)

Extracts the embedded BreastMNIST into OUTDIR/breast.h5 (reused when present): efficientnet_lite0 and
efficientnet_lite2 with taps head,blocks.4,blocks.5 under 7 test-time views (``--tta flip,crop5``:
identity, horizontal flip, 4 corner and 1 centre crop), and the handcrafted lbp,glcm,firstorder sets;
then runs the README's ``featx fit`` (an ensemble over 4 feature choices x svm,logreg,elm, selected on
out-of-fold predictions over train+val, never test; argmax decision), timing each step and printing
its summary line. The library was chosen by bench/breastmnist_selection.py's nested out-of-fold
scores on train+val only (README, "quality": the second pre-registered procedure; the first used
``--tta flip``). Not a test: minutes on a 2-core machine.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from featx.demo import demo_data_path

L0, L2 = "efficientnet_lite0_tta-flip-crop5", "efficientnet_lite2_tta-flip-crop5"
TAPS0 = f"{L0}+{L0}.blocks.4+{L0}.blocks.5"
TAPS2 = f"{L2}+{L2}.blocks.4+{L2}.blocks.5"
HANDCRAFTED = "lbp+glcm+firstorder"
CHOICES = f"{TAPS0};{TAPS0}+{L2};{TAPS2};{TAPS0}+{HANDCRAFTED}"
FEATURES = ",".join(dict.fromkeys(s for c in CHOICES.split(";") for s in c.split("+")))


def featx(*args: str) -> str:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "featx.cli", *args], check=True, capture_output=True, text=True)
    print(f"$ featx {' '.join(args)}\n{out.stdout.strip()}\n({time.perf_counter() - t:.1f} s)", flush=True)
    return out.stdout


def main(outdir: str = "out") -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "breast.h5"
    data = str(demo_data_path())
    featx("extract", data, "-o", str(cache), "--backbone", "efficientnet_lite0,efficientnet_lite2",
          "--layers", "head,blocks.4,blocks.5", "--tta", "flip,crop5", "-q")
    featx("extract", data, "-o", str(cache), "--backbone", "none", "--handcrafted", "lbp,glcm,firstorder", "-q")
    featx("fit", str(cache), "--head", "ensemble", "--features", FEATURES, "--choices", CHOICES, "--heads", "svm,logreg,elm",
          "--select-on", "oof", "-o", str(out / "ensemble.joblib"), "--report", str(out / "ensemble_report"), "-q")


if __name__ == "__main__":
    main(*sys.argv[1:2])
