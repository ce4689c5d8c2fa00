"""The embedded default: BreastMNIST shipped in the package, run end to end.

``run_demo(outdir)`` extracts the embedded BreastMNIST (780 ultrasound images, CC BY 4.0; see
``featx/data/BREASTMNIST.md``) with the default backbone and its real ImageNet weights into
``outdir/breastmnist.h5``, fits an SVM head on the official train/val split, and evaluates it on
the official test split, writing ``outdir/model.joblib`` and a report in ``outdir/report``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_NPZ = "breastmnist.npz"


def demo_data_path() -> Path:
    return Path(str(resources.files("featx") / "data" / DEMO_NPZ))


def run_demo(outdir: str | Path = "featx-demo", head: str = "svm", progress: bool = True):
    from featx.extraction import extract
    from featx.fit import fit
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    cache = outdir / "breastmnist.h5"
    summary = extract([str(demo_data_path())], cache, progress=progress)
    result = fit(cache, summary.sets[0], head=head)
    result.save(outdir / "model.joblib")
    result.write_report(outdir / "report")
    return summary, result
