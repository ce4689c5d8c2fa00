"""BreastMNIST end to end with the library API: extract -> fit (one set, then a fusion) -> report -> predict.

    python examples/breastmnist_fit.py [--npz BREASTMNIST.npz] [--work /tmp/featx-example]

By default it runs on the BreastMNIST copy shipped in the package (featx/data/breastmnist.npz), so it
works in a fresh clone.

Extraction is cached: a second run reuses the features. The same steps on the command line:

    featx extract breastmnist.npz -o breast.h5 --layers head,blocks.4,blocks.5
    featx fit breast.h5 --features efficientnet_lite0 --head svm -o svm.joblib --report svm_report
    featx fit breast.h5 --features efficientnet_lite0,efficientnet_lite0.blocks.4,efficientnet_lite0.blocks.5 \
        --head logreg -o fused.joblib --report fused_report
    featx predict svm.joblib breastmnist.npz --cache breast.h5 -o preds.csv
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", default=str(ROOT / "featx" / "data" / "breastmnist.npz"))
    ap.add_argument("--work", default="/tmp/featx-example")
    args = ap.parse_args()

    from featx.extraction import extract
    from featx.fit import fit, predict

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "breast.h5"
    print(extract([args.npz], cache, layers=["head", "blocks.4", "blocks.5"], progress=False).line())

    single = "efficientnet_lite0"
    fused = [single, f"{single}.blocks.4", f"{single}.blocks.5"]
    for sets, head in [([single], "svm"), (fused, "svm"), (fused, "logreg")]:
        res = fit(cache, sets, head, n_jobs=-1)
        m = res.metrics["test"]
        name = f"{head}_{'fused' if len(sets) > 1 else 'lite0'}"
        res.save(work / f"{name}.joblib")
        res.write_report(work / f"{name}_report")
        lo, hi = m["ci95"]["auc"]
        print(f"{head:7s} on {'+'.join(sets)}: test ACC {m['accuracy']:.3f}, AUC {m['auc']:.3f} "
              f"(95% CI {lo:.3f}-{hi:.3f}), params {res.best_params} -> {work / name}_report/report.html")

    # predict from the raw npz; the images are found in the cache, so nothing is recomputed
    df = predict(work / "svm_lite0.joblib", [args.npz], cache=cache, out=work / "preds.csv")
    print(f"predict: {len(df)} rows -> {work / 'preds.csv'}")
    print(df.head(3).to_string(index=False))


if __name__ == "__main__":
    main()
