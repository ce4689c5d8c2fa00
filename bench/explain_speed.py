"""Time `featx explain` on BreastMNIST's 156 test images (EfficientNet-Lite0, logreg head, --method auto).

Usage: python bench/explain_speed.py [--no-faithfulness] [--head logreg] [--method auto] [--cache breast.h5]
(--cache: reuse, or create, this feature cache instead of extracting into a temporary folder;
extraction is not timed either way.)
Prints one line: RESULT explain_seconds=<s> images=<n> method=<m> faithfulness=<bool> ...
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT / "featx" / "data" / "breastmnist.npz"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head", default="logreg")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--no-faithfulness", action="store_true")
    args = ap.parse_args()
    from featx.explain import explain
    from featx.extraction import extract
    from featx.fit import fit

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp) / "breast.h5"
        if not cache.exists():
            extract([str(NPZ)], cache, progress=False)
        bundle = fit(cache, "efficientnet_lite0", head=args.head, search="none", n_boot=0).bundle
        t0 = time.perf_counter()
        res = explain(bundle, [str(NPZ)], Path(tmp) / "out", split="test", method=args.method,
                      faithfulness=not args.no_faithfulness)
        dt = time.perf_counter() - t0
    f = res.faithfulness
    extra = "" if not f else (f" deletion_auc={f['deletion_auc']:.3f} random_deletion_auc="
                              f"{f['random_deletion_auc']:.3f} sanity_rank_corr={f['sanity_rank_corr']:.3f}")
    print(f"RESULT explain_seconds={dt:.1f} images={len(res.rows)} method={res.method} "
          f"faithfulness={not args.no_faithfulness}{extra}")


if __name__ == "__main__":
    main()
