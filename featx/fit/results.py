"""What fit and compare return: held-out predictions, metrics blocks, results and leaderboards."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featx.bundle import ModelBundle, save_bundle
from featx.errors import ModelError
from featx.evaluate import EvalPlan, bootstrap_ci, classification_metrics

SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1")


def prediction_frame(ids, paths, splits, true_labels: Sequence[str], predicted: np.ndarray,
                     class_names: Sequence[str], values: np.ndarray, value_kind: str,
                     fold: np.ndarray | None = None) -> pd.DataFrame:
    """The predictions table ``featx predict`` and the fit report share: id, path, split,
    true_label, predicted_label, predicted_index, [fold], then ``<value_kind>_<class>`` per class
    (``prob`` or ``score``). ``true_labels`` are names (from the data's own classes);
    ``predicted`` indexes ``class_names`` (the model's classes; -1 = no prediction)."""
    n = len(ids)
    df = pd.DataFrame({"id": np.asarray(ids, dtype=object), "path": np.asarray(paths, dtype=object),
                       "split": np.asarray(splits, dtype=object) if splits is not None else np.full(n, "", object)})
    predicted = np.asarray(predicted, dtype=np.int64)
    df["true_label"] = list(true_labels)
    df["predicted_label"] = [class_names[v] if 0 <= v < len(class_names) else "" for v in predicted]
    df["predicted_index"] = predicted
    if fold is not None:
        df["fold"] = fold
    for k, name in enumerate(class_names):
        df[f"{value_kind}_{name}"] = values[:, k]
    return df


@dataclass
class Evaluation:
    """Held-out predictions: test rows (split protocol) or out-of-fold rows (CV)."""

    name: str  # "test" or "cv"
    y_true: np.ndarray
    y_pred: np.ndarray
    scores: np.ndarray  # (n, n_classes), columns = label index; -inf for classes never trained on
    class_names: list[str]
    ids: np.ndarray
    paths: np.ndarray
    fold: np.ndarray | None = None
    splits: np.ndarray | None = None

    @property
    def labels(self) -> list[int]:
        """Label indices that occur in ``y_true`` or could be predicted (finite score columns)."""
        seen = set(np.unique(self.y_true)) | set(np.unique(self.y_pred))
        finite = {k for k in range(self.scores.shape[1]) if np.isfinite(self.scores[:, k]).all()}
        return sorted(int(k) for k in seen | finite)

    def frame(self) -> pd.DataFrame:
        """The rows as :func:`prediction_frame` (score columns: decision scores)."""
        return prediction_frame(self.ids, self.paths, self.splits, [self.class_names[v] for v in self.y_true],
                                self.y_pred, self.class_names, self.scores, "score", self.fold)


def metrics_block(ev: Evaluation, n_boot: int, seed: int) -> dict[str, Any]:
    """classification_metrics of ``ev`` plus bootstrap ``ci95`` (``n_boot`` resamples; 0: none)."""
    labels = ev.labels
    s = ev.scores[:, labels]
    m = classification_metrics(ev.y_true, ev.y_pred, s, labels, ev.class_names)
    if n_boot:
        m["ci95"] = bootstrap_ci(ev.y_true, ev.y_pred, s, labels, ev.class_names, n_boot=n_boot, seed=seed)
    return m


def fold_summary(y_true, y_pred, scores, model_classes, class_names) -> dict[str, Any]:
    """The headline metrics of one outer CV fold."""
    labels = sorted(set(np.unique(y_true)) | set(np.unique(y_pred)) | set(int(c) for c in model_classes))
    fm = classification_metrics(y_true, y_pred, scores[:, labels], labels, class_names)
    return {key: fm[key] for key in SUMMARY_KEYS} | {"n": fm["n"]}


def mean_of(values):
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 6) if v else None


def std_of(values):
    v = [x for x in values if x is not None]
    return round(float(np.std(v, ddof=1)), 6) if len(v) > 1 else None


@dataclass
class FitResult:
    """What :func:`featx.fit.fit` returns.

    bundle       the :class:`~featx.bundle.ModelBundle` to save (``save(path)``); None when fit was
                 asked not to build the final model
    metrics      ``{"test": {...}}`` (split protocol) or ``{"cv": {...}}``, plus "tuning",
                 "protocol", "model" entries; each metrics block has accuracy, balanced_accuracy,
                 auc, f1, per_class, confusion_matrix and ci95
    evaluation   the held-out predictions behind the metrics (:class:`Evaluation`)
    best_params  chosen hyper-parameters (head's own names)
    plan         the :class:`~featx.evaluate.EvalPlan` used (folds, indices into the table rows)
    """

    head: str
    feature_sets: list[str]
    metrics: dict[str, Any]
    evaluation: Evaluation
    best_params: dict[str, Any]
    plan: EvalPlan
    bundle: ModelBundle | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        if self.bundle is None:
            raise ModelError("this result has no fitted model (fit was called with final=False)")
        return save_bundle(self.bundle, path)

    def write_report(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        from featx.report import write_fit_report

        return write_fit_report(self, out_dir)

    @property
    def primary(self) -> dict[str, Any]:
        """The headline metrics block: ``metrics["test"]`` or ``metrics["cv"]``."""
        return self.metrics[self.evaluation.name]

    @property
    def predictions(self) -> pd.DataFrame:
        return self.evaluation.frame()


@dataclass
class CompareResult:
    """What :func:`featx.fit.compare` returns: the sorted leaderboard, every run's
    :class:`FitResult` (in the order of the runs asked for) and notes on the shared data."""

    leaderboard: pd.DataFrame
    results: list[FitResult]
    plan: EvalPlan
    seconds: float
    notes: list[str] = field(default_factory=list)

    def write(self, out: str | os.PathLike) -> dict[str, Path]:
        from featx.report import write_leaderboard

        return write_leaderboard(self.leaderboard, out, self.plan.describe())
