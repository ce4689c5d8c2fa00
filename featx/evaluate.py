"""Evaluation: splits (predefined or grouped CV), scores, metrics and bootstrap confidence intervals.

Everything here works on plain numpy arrays, so it can be used without a cache:

* :func:`plan_evaluation` decides the protocol from the samples' ``split`` and ``group`` columns:
  a predefined train/(val)/test split when the data carry one, otherwise stratified k-fold CV,
  grouped (``StratifiedGroupKFold``) whenever any sample has a group, so no group (patient) is
  ever on both sides of a fold.
* :func:`score_matrix` turns a fitted classifier's output into an ``(n, K)`` matrix of
  per-class scores (decision scores where the head has them, else probabilities).
* :func:`classification_metrics` and :func:`bootstrap_ci` compute accuracy, balanced accuracy,
  AUC (binary, or one-vs-rest macro for multi-class), macro F1, per-class sensitivity,
  specificity, precision and F1, the confusion matrix, and percentile bootstrap 95% CIs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.model_selection import PredefinedSplit, StratifiedGroupKFold, StratifiedKFold

from featx.errors import FeatxError

# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def score_matrix(model, X, prefer: str = "decision") -> np.ndarray:
    """Per-class scores of a fitted classifier as an ``(n, K)`` array aligned with ``model.classes_``.

    Higher means more likely that class. ``prefer="decision"`` uses ``decision_function`` when the
    model has one (SVM margins, logits), else ``predict_proba``; ``prefer="proba"`` the reverse.
    A binary decision function (shape ``(n,)``, positive = ``classes_[1]``) becomes ``[-d, d]``.
    """
    order = ("decision_function", "predict_proba") if prefer == "decision" else (
        "predict_proba", "decision_function")
    for attr in order:
        if hasattr(model, attr):
            s = np.asarray(getattr(model, attr)(X), dtype=float)
            break
    else:
        raise FeatxError(f"{type(model).__name__} has neither decision_function nor predict_proba")
    if s.ndim == 1:
        s = np.column_stack([-s, s])
    return s


def expand_scores(scores: np.ndarray, model_classes: Sequence[int], n_classes: int) -> np.ndarray:
    """Place ``scores`` (columns = ``model_classes``) into an ``(n, n_classes)`` matrix; classes the
    model never saw get ``-inf`` (never predicted, excluded from AUC)."""
    out = np.full((scores.shape[0], n_classes), -np.inf)
    out[:, np.asarray(model_classes, dtype=int)] = scores
    return out


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _binary_auc(pos: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUC of scores ``s`` for boolean labels ``pos`` (ties count half)."""
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_score(y_true: np.ndarray, scores: np.ndarray, labels: Sequence[int]) -> float:
    """AUC: binary (column of ``labels[1]``) or one-vs-rest macro over classes that have both
    positives and negatives in ``y_true``. ``scores`` columns are aligned with ``labels``."""
    y_true = np.asarray(y_true)
    labels = list(labels)
    if len(labels) == 2:
        return _binary_auc(y_true == labels[1], scores[:, 1])
    aucs = []
    for k, lab in enumerate(labels):
        col = scores[:, k]
        if not np.all(np.isfinite(col)):
            continue
        a = _binary_auc(y_true == lab, col)
        if np.isfinite(a):
            aucs.append(a)
    return float(np.mean(aucs)) if aucs else float("nan")


def _from_confusion(cm: np.ndarray) -> dict[str, Any]:
    """Metrics from confusion matrices ``cm[..., true, pred]`` (vectorised over leading axes)."""
    cm = cm.astype(float)
    total = cm.sum(axis=(-1, -2))
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    fn = support - tp
    fp = predicted - tp
    tn = total[..., None] - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / support
        spec = tn / (tn + fp)
        prec = tp / predicted
        f1 = 2 * tp / (2 * tp + fp + fn)
        present = support > 0
        acc = tp.sum(axis=-1) / total
        bal = np.where(present, np.nan_to_num(sens), 0).sum(axis=-1) / present.sum(axis=-1)
        f1_macro = np.where(present, np.nan_to_num(f1), 0).sum(axis=-1) / present.sum(axis=-1)
    return dict(accuracy=acc, balanced_accuracy=bal, f1=f1_macro, sensitivity=sens,
                specificity=spec, precision=prec, f1_class=f1, support=support)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    t = np.array([index[v] for v in y_true])
    p = np.array([index.get(v, -1) for v in y_pred])
    if (p < 0).any():
        raise FeatxError("predicted labels outside the known classes")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _num(x) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else round(x, 6)


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    labels: Sequence[int],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUC, macro F1, per-class sensitivity/specificity/precision/F1
    and the confusion matrix (rows = true, columns = predicted, in ``labels`` order).

    ``scores`` is ``(n, len(labels))`` with columns aligned to ``labels`` (see
    :func:`score_matrix`); AUC is None without it. Undefined values are None in the output.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = [int(v) for v in labels]
    names = [str(class_names[v]) if class_names is not None else str(v) for v in labels]
    cm = _confusion(y_true, y_pred, labels)
    m = _from_confusion(cm)
    out: dict[str, Any] = {
        "n": int(y_true.size),
        "accuracy": _num(m["accuracy"]),
        "balanced_accuracy": _num(m["balanced_accuracy"]),
        "auc": _num(auc_score(y_true, scores, labels)) if scores is not None else None,
        "f1": _num(m["f1"]),
        "per_class": {
            name: {
                "sensitivity": _num(m["sensitivity"][i]),
                "specificity": _num(m["specificity"][i]),
                "precision": _num(m["precision"][i]),
                "f1": _num(m["f1_class"][i]),
                "support": int(m["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }
    return out


def ordinal_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int], n_boot: int = 0,
                    seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Metrics of graded labels (grade = position in ``labels``, which are in grade order):
    ``qwk`` (quadratic weighted Cohen's kappa) and ``mae_grade`` (mean absolute grade error), with
    percentile bootstrap CIs in ``ci95`` when ``n_boot`` > 0 (same resampling as :func:`bootstrap_ci`)."""
    index = {int(lab): i for i, lab in enumerate(labels)}
    t = np.array([index[int(v)] for v in np.asarray(y_true)], dtype=np.int64)
    p = np.array([index.get(int(v), -1) for v in np.asarray(y_pred)], dtype=np.int64)
    if (p < 0).any():
        raise FeatxError("ordinal metrics: a prediction is not among the graded labels")
    k = len(labels)

    def qwk(tt: np.ndarray, pp: np.ndarray) -> float:
        n = tt.size
        observed = np.bincount(tt * k + pp, minlength=k * k).reshape(k, k) / n
        expected = np.outer(np.bincount(tt, minlength=k), np.bincount(pp, minlength=k)) / n / n
        w = (np.subtract.outer(np.arange(k), np.arange(k)) ** 2) / max((k - 1) ** 2, 1)
        denom = (w * expected).sum()
        return float(1 - (w * observed).sum() / denom) if denom > 0 else float("nan")

    out: dict[str, Any] = {"qwk": _num(qwk(t, p)), "mae_grade": _num(np.abs(t - p).mean())}
    if n_boot:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, t.size, size=(n_boot, t.size))
        kappas = np.array([qwk(t[i], p[i]) for i in idx])
        errors = np.abs(t[idx] - p[idx]).mean(axis=1)
        lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
        out["ci95"] = {name: [_num(np.percentile(v[np.isfinite(v)], lo_q)), _num(np.percentile(v[np.isfinite(v)], hi_q))]
                       for name, v in (("qwk", kappas), ("mae_grade", errors))}
    return out


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray | None,
    labels: Sequence[int],
    class_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap CIs (resampling samples with replacement, seeded) of accuracy,
    balanced accuracy, AUC, macro F1 and per-class sensitivity/specificity.

    Returns ``{"accuracy": [lo, hi], ..., "per_class": {name: {"sensitivity": [lo, hi], ...}},
    "n_boot": n_boot, "level": level}``. Resamples where a metric is undefined are skipped.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = [int(v) for v in labels]
    names = [str(class_names[v]) if class_names is not None else str(v) for v in labels]
    n, k = y_true.size, len(labels)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    index = {lab: i for i, lab in enumerate(labels)}
    t = np.array([index[v] for v in y_true])
    p = np.array([index[v] for v in y_pred])
    flat = (np.arange(n_boot)[:, None] * k * k + t[idx] * k + p[idx]).ravel()
    cms = np.bincount(flat, minlength=n_boot * k * k).reshape(n_boot, k, k)
    m = _from_confusion(cms)
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def ci(values: np.ndarray) -> list[float | None]:
        v = values[np.isfinite(values)]
        if v.size == 0:
            return [None, None]
        return [_num(np.percentile(v, lo_q)), _num(np.percentile(v, hi_q))]

    out: dict[str, Any] = {
        "accuracy": ci(m["accuracy"]),
        "balanced_accuracy": ci(m["balanced_accuracy"]),
        "f1": ci(m["f1"]),
    }
    if scores is not None:
        out["auc"] = ci(_bootstrap_auc(t, scores, idx, k))
    out["per_class"] = {
        name: {"sensitivity": ci(m["sensitivity"][:, i]), "specificity": ci(m["specificity"][:, i])}
        for i, name in enumerate(names)
    }
    out["n_boot"] = int(n_boot)
    out["level"] = float(level)
    return out


def _bootstrap_auc(t: np.ndarray, scores: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """AUC of every resample in ``idx`` (rank formula, vectorised over resamples)."""

    def one_vs_rest(cls: int, col: np.ndarray) -> np.ndarray:
        pos = t[idx] == cls
        n_pos = pos.sum(axis=1)
        n_neg = pos.shape[1] - n_pos
        ranks = rankdata(col[idx], axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        return auc

    if k == 2:
        return one_vs_rest(1, scores[:, 1])
    per_class = [one_vs_rest(c, scores[:, c]) for c in range(k) if np.all(np.isfinite(scores[:, c]))]
    if not per_class:
        return np.full(idx.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.vstack(per_class), axis=0)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def normalise_groups(groups: Sequence[Any] | None, n: int) -> np.ndarray | None:
    """Group labels as strings, or None when no sample has one. Samples without a group
    ("" / None) when others have one each become their own group."""
    if groups is None:
        return None
    g = np.array(["" if v is None else str(v) for v in groups], dtype=object)
    if g.size != n:
        raise FeatxError(f"groups has {g.size} entries for {n} samples")
    missing = g == ""
    if missing.all():
        return None
    g[missing] = [f"__row{i}" for i in np.flatnonzero(missing)]
    return g


def make_cv(y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int = 0):
    """A stratified k-fold splitter for ``y`` (grouped if ``groups`` is not None), with the fold
    count lowered when the data cannot fill ``n_splits`` folds. Returns ``(splitter, n_splits, note)``.
    """
    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    if counts.size < 2:
        raise FeatxError("cross-validation needs at least two classes with labelled samples")
    limit = int(counts.min())
    if groups is not None:
        limit = min(limit, *(len(np.unique(groups[y == c])) for c in np.unique(y)))
    k = int(min(n_splits, limit))
    note = None
    if k < 2:
        raise FeatxError(f"too few samples (or groups) in the smallest class for {n_splits}-fold CV")
    if k < n_splits:
        note = f"{n_splits}-fold CV lowered to {k} folds: the smallest class has only {limit} " + (
            "groups" if groups is not None else "samples")
    if groups is not None:
        return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), k, note
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), k, note


def leaked_groups(groups: np.ndarray | None, train_idx: np.ndarray, test_idx: np.ndarray) -> set:
    """Groups present on both sides of a split (empty set when there are no groups)."""
    if groups is None:
        return set()
    return set(groups[train_idx]) & set(groups[test_idx])


@dataclass
class EvalPlan:
    """How a model is evaluated. Indices refer to the rows of the arrays given to
    :func:`plan_evaluation` and cover labelled rows only.

    kind "split": tune on ``val_idx`` (PredefinedSplit) when it is non-empty, otherwise by CV
    inside ``train_idx``; refit on ``refit_idx``; report on ``test_idx``.
    kind "cv": ``folds`` are the outer (train, test) folds; scores are out-of-fold.
    """

    kind: str
    groups: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    test_idx: np.ndarray | None = None
    refit_idx: np.ndarray | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    n_splits: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "grouped": self.groups is not None}
        if self.kind == "split":
            d.update(n_train=int(self.train_idx.size), n_val=int(self.val_idx.size),
                     n_test=int(self.test_idx.size), n_refit=int(self.refit_idx.size),
                     tuning="val (PredefinedSplit)" if self.val_idx.size else f"{self.n_splits}-fold CV on train",
                     refit_on="train+val" if self.refit_idx.size > self.train_idx.size else "train")
        else:
            d.update(n_splits=self.n_splits, n=int(sum(te.size for _, te in self.folds)))
        if self.notes:
            d["notes"] = list(self.notes)
        return d


def plan_evaluation(
    y: np.ndarray,
    splits: Sequence[str] | None = None,
    groups: Sequence[Any] | None = None,
    protocol: str = "auto",
    cv: int = 5,
    seed: int = 0,
    refit_on: str = "train+val",
) -> EvalPlan:
    """Choose and build the evaluation protocol.

    ``protocol="auto"`` uses the data's own split when some labelled rows are marked "test" and
    some "train", else CV; "split" insists on the split, "cv" ignores it. Rows with label -1
    are left out. ``refit_on`` ("train+val" or "train") says which rows the final model of the
    split protocol is refitted on after tuning.
    """
    y = np.asarray(y)
    n = y.size
    labelled = y >= 0
    g = normalise_groups(groups, n)
    s = np.array(["" if v is None else str(v) for v in splits], dtype=object) if splits is not None else np.full(n, "", dtype=object)
    has_split = bool(((s == "test") & labelled).any() and ((s == "train") & labelled).any())
    if protocol not in ("auto", "split", "cv"):
        raise FeatxError(f"unknown protocol {protocol!r}; choose auto, split or cv")
    if protocol == "split" and not has_split:
        raise FeatxError("the data have no train/test split; use protocol 'cv'")
    if refit_on not in ("train+val", "train"):
        raise FeatxError(f"refit_on must be 'train+val' or 'train', not {refit_on!r}")
    notes = []
    if int((~labelled).sum()):
        notes.append(f"{int((~labelled).sum())} rows without a label were left out")
    if protocol in ("auto", "split") and has_split:
        train = np.flatnonzero((s == "train") & labelled)
        val = np.flatnonzero((s == "val") & labelled)
        test = np.flatnonzero((s == "test") & labelled)
        other = int(((s != "train") & (s != "val") & (s != "test") & labelled).sum())
        if other:
            notes.append(f"{other} labelled rows outside train/val/test were left out")
        refit = np.sort(np.concatenate([train, val])) if refit_on == "train+val" else train
        leak = leaked_groups(g, refit, test)
        if leak:
            notes.append(f"WARNING: {len(leak)} groups appear in both the training rows and the "
                         "test split of the data's own split (the split came with the data)")
        n_splits = 0
        if val.size == 0:
            _, n_splits, note = make_cv(y[train], None if g is None else g[train], cv, seed)
            if note:
                notes.append(note)
        return EvalPlan("split", g, train, val, test, refit, [], n_splits, notes)
    idx = np.flatnonzero(labelled)
    splitter, k, note = make_cv(y[idx], None if g is None else g[idx], cv, seed)
    if note:
        notes.append(note)
    folds = [(idx[tr], idx[te]) for tr, te in splitter.split(np.zeros(idx.size), y[idx],
                                                                None if g is None else g[idx])]
    for tr, te in folds:
        leak = leaked_groups(g, tr, te)
        if leak:  # StratifiedGroupKFold guarantees this never happens; check anyway
            raise FeatxError(f"internal error: groups {sorted(leak)[:3]} on both sides of a fold")
    return EvalPlan("cv", g, folds=folds, n_splits=k, notes=notes)


def tuning_cv(plan: EvalPlan, y: np.ndarray, train_idx: np.ndarray, cv: int, seed: int,
              val_idx: np.ndarray | None = None):
    """The CV object (and groups) used to tune hyper-parameters on rows ``train_idx`` (+ ``val_idx``).

    With a validation set: a PredefinedSplit over ``concat(train_idx, val_idx)`` (-1 = always
    train, 0 = the validation fold). Otherwise a (grouped) stratified k-fold inside ``train_idx``.
    Returns ``(rows, cv_object, groups_for_rows_or_None)``.
    """
    if val_idx is not None and val_idx.size:
        rows = np.concatenate([train_idx, val_idx])
        fold = np.r_[np.full(train_idx.size, -1), np.zeros(val_idx.size, int)]
        return rows, PredefinedSplit(fold), None
    g = None if plan.groups is None else plan.groups[train_idx]
    splitter, _, _ = make_cv(y[train_idx], g, cv, seed)
    return train_idx, splitter, g
