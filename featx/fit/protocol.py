"""The two evaluation protocols over one fold routine (:func:`train_fold`: tune, then fit).

* split: tune on val (or CV inside train), refit on train+val (or train), report on test;
* cv: per outer fold, tune inside the training rows and predict the held-out rows; metrics on
  the pooled out-of-fold predictions; the saved model is tuned and refitted on all labelled rows.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from featx.evaluate import EvalPlan, expand_scores, score_matrix, tuning_cv
from featx.fit.results import SUMMARY_KEYS, Evaluation, fold_summary, mean_of, metrics_block, std_of
from featx.fit.search import HeadPlan, Tuner, head_params
from featx.heads.zoo import CalibratedHead
from featx.progress import Progress
from featx.table import FeatureTable


@dataclass
class FitJob:
    """One head on one table: the unfitted pipeline, how to tune it, and how to evaluate it."""

    pipeline: Pipeline
    spec: HeadPlan
    tuner: Tuner
    table: FeatureTable
    plan: EvalPlan
    cv: int
    seed: int
    n_boot: int
    final: bool
    progress: Progress


@dataclass
class Fold:
    """A fitted fold: the model, the chosen ``head__`` params, their tuning score, timings."""

    model: Pipeline
    best: dict[str, Any]
    best_score: float | None
    n_candidates: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a protocol produced: the held-out predictions and their metrics, the final model
    (None without one), the final model's ``head__`` params, the tuning record and timings."""

    evaluation: Evaluation
    metrics: dict[str, Any]
    model: Pipeline | None
    best: dict[str, Any]
    tuning: dict[str, Any]
    timings: dict[str, float]


def train_fold(job: FitJob, tune_rows, cv_obj, groups, fit_rows, *, calibrate: bool, label: str) -> Fold:
    """Tune on ``tune_rows`` (folds ``cv_obj``), then fit the chosen candidate on ``fit_rows``
    (its head wrapped in CalibratedHead when ``calibrate``)."""
    X, y = np.asarray(job.table.X), np.asarray(job.table.y)
    t = time.perf_counter()
    best, best_score, n_cand = job.tuner.tune(job.pipeline, job.spec.space, X[tune_rows], y[tune_rows], cv_obj,
                                              groups, job.progress, label)
    searched = time.perf_counter() - t
    model = clone(job.pipeline).set_params(**best)
    if calibrate:
        model.steps[-1] = ("head", CalibratedHead(model.steps[-1][1]))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(X[fit_rows], y[fit_rows])
    return Fold(model, best, best_score, n_cand, {"search": searched, "fit": time.perf_counter() - t})


def predict_rows(model, X, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted label indices, (n, n_classes) scores; -inf for classes the model never saw)."""
    y_pred = np.asarray(model.predict(X)).astype(np.int64)
    return y_pred, expand_scores(score_matrix(model, X), model.classes_, n_classes)


def run_split(job: FitJob) -> Outcome:
    plan, table = job.plan, job.table
    y = np.asarray(table.y)
    rows, cv_obj, groups = tuning_cv(plan, y, plan.train_idx, job.cv, job.seed, plan.val_idx)
    fold = train_fold(job, rows, cv_obj, groups, plan.refit_idx, calibrate=job.final and job.spec.calibrate,
                      label=f"search {job.spec.name}")
    te = plan.test_idx
    y_pred, scores = predict_rows(fold.model, np.asarray(table.X)[te], len(table.class_names))
    ev = Evaluation("test", y[te], y_pred, scores, table.class_names, table.ids[te], table.paths[te],
                    splits=table.splits[te])
    tuning = {"search": job.tuner.search, "scoring": job.tuner.scoring, "candidates": fold.n_candidates,
              "best_score": fold.best_score,
              "on": "val" if plan.val_idx.size else f"{plan.n_splits}-fold CV on train"}
    return Outcome(ev, {"test": metrics_block(ev, job.n_boot, job.seed)}, fold.model if job.final else None,
                   fold.best, tuning, {"search": fold.seconds["search"], "refit": fold.seconds["fit"]})


def run_cv(job: FitJob) -> Outcome:
    plan, table, progress = job.plan, job.table, job.progress
    X, y = np.asarray(table.X), np.asarray(table.y)
    n, n_classes, name = X.shape[0], len(table.class_names), job.spec.name
    oof_pred = np.full(n, -1, np.int64)
    oof_scores = np.full((n, n_classes), np.nan)
    fold_of = np.full(n, -1, np.int64)
    fold_metrics, fold_params = [], []
    searching = job.tuner.n_candidates(job.spec.space) > 1
    if not searching:
        progress.start(len(plan.folds), f"cv {name}")
    t = time.perf_counter()
    for k, (tr, te) in enumerate(plan.folds):
        rows, cv_obj, groups = tuning_cv(plan, y, tr, job.cv, job.seed + k + 1)
        fold = train_fold(job, rows, cv_obj, groups, tr, calibrate=False,
                          label=f"search {name}, outer fold {k + 1}/{len(plan.folds)}")
        oof_pred[te], oof_scores[te] = predict_rows(fold.model, X[te], n_classes)
        fold_of[te] = k
        fold_metrics.append(fold_summary(y[te], oof_pred[te], oof_scores[te], fold.model.classes_,
                                         table.class_names))
        fold_params.append(head_params(fold.best))
        if not searching:
            progress.advance(1, f"fold {k + 1}/{len(plan.folds)}")
    if not searching:
        progress.close()
    timings = {"cv": time.perf_counter() - t}
    idx = np.concatenate([te for _, te in plan.folds])
    ev = Evaluation("cv", y[idx], oof_pred[idx], oof_scores[idx], table.class_names, table.ids[idx],
                    table.paths[idx], fold_of[idx], table.splits[idx])
    block = metrics_block(ev, job.n_boot, job.seed)
    block["n_splits"] = plan.n_splits
    block["folds"] = fold_metrics
    block["fold_params"] = fold_params
    block["mean"] = {key: mean_of([f[key] for f in fold_metrics]) for key in SUMMARY_KEYS}
    block["std"] = {key: std_of([f[key] for f in fold_metrics]) for key in SUMMARY_KEYS}
    block["pooled"] = "metrics and ci95 are computed on the pooled out-of-fold predictions"
    tuning = {"search": job.tuner.search, "scoring": job.tuner.scoring, "nested": bool(job.spec.space),
              "candidates": job.tuner.n_candidates(job.spec.space)}
    model, best = None, {}
    if job.final:
        labelled = np.flatnonzero(y >= 0)
        rows, cv_obj, groups = tuning_cv(plan, y, labelled, job.cv, job.seed)
        t = time.perf_counter()
        fold = train_fold(job, rows, cv_obj, groups, labelled, calibrate=job.spec.calibrate,
                          label=f"search {name}, final model")
        timings["final"] = time.perf_counter() - t
        model, best = fold.model, fold.best
        tuning.update(best_score=fold.best_score, on="CV on all labelled rows (final model)")
    return Outcome(ev, {"cv": block}, model, best, tuning, timings)
