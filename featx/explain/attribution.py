"""How much of a fused model's decision each feature set carries (drop-set attribution).

For each set, its columns are replaced by their training mean (the per-set StandardScaler's
``mean_``, so the set's scaled values become 0, "no information"), and the change of the target
class's score is recorded. No gradients: it works for every head and for handcrafted sets, and
costs one ``predict_proba`` per set.
"""
from __future__ import annotations

import numpy as np


def training_means(pipeline, set_slices: dict[str, slice], X: np.ndarray) -> tuple[np.ndarray, str]:
    """(one row of column values meaning "this set absent", where they came from): the per-set
    scalers' training means when the pipeline has featx's ColumnTransformer, else the mean of ``X``."""
    base = X.mean(axis=0)
    fuse = getattr(pipeline, "named_steps", {}).get("fuse")
    if fuse is None or not hasattr(fuse, "named_transformers_"):
        return base, "mean of the rows explained"
    for name, sl in set_slices.items():
        block = fuse.named_transformers_.get(name)
        steps = dict(getattr(block, "named_steps", {}))
        scaler = steps.get("scale")
        if scaler is None or getattr(scaler, "mean_", None) is None:
            return X.mean(axis=0), "mean of the rows explained"
        cols = np.arange(sl.start, sl.stop)
        if "variance" in steps:
            cols = cols[steps["variance"].get_support()]
        base[cols] = scaler.mean_
    return base, "training mean"


def _scores(pipeline, X: np.ndarray) -> np.ndarray:
    if hasattr(pipeline, "predict_proba"):
        return pipeline.predict_proba(X)
    d = pipeline.decision_function(X)
    return np.column_stack([-d, d]) if d.ndim == 1 else d


def drop_set_attribution(pipeline, X: np.ndarray, set_slices: dict[str, slice],
                         targets: np.ndarray | None = None) -> dict:
    """Per set: mean change of the target score when the set is replaced by its training mean.

    ``targets``: score column per row (default: the predicted column). Returns ``{"sets": {name:
    {"mean_drop", "mean_abs_drop", "share"}}, "baseline", "n_rows", "score"}``; ``share`` is each
    set's mean absolute drop over the sum of them (how the decision divides among the sets).
    """
    X = np.asarray(X, dtype=np.float64)
    full = _scores(pipeline, X)
    if targets is None:
        targets = full.argmax(1)
    rows = np.arange(X.shape[0])
    base, source = training_means(pipeline, set_slices, X)
    out = {}
    for name, sl in set_slices.items():
        Xd = X.copy()
        Xd[:, sl] = base[sl]
        drop = full[rows, targets] - _scores(pipeline, Xd)[rows, targets]
        out[name] = {"mean_drop": float(drop.mean()), "mean_abs_drop": float(np.abs(drop).mean())}
    total = sum(v["mean_abs_drop"] for v in out.values())
    for v in out.values():
        v["share"] = v["mean_abs_drop"] / total if total > 0 else None
    return {"sets": out, "baseline": source, "n_rows": int(X.shape[0]),
            "score": "probability" if hasattr(pipeline, "predict_proba") else "decision"}
