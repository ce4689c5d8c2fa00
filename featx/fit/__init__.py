"""Fit, evaluate, compare and apply classical heads on cached features.

The library side of ``featx fit``, ``featx compare`` and ``featx predict``: plain functions taking
plain values (a cache path or a table of arrays, names, numbers) and returning plain results.

Pipeline (one per model, fitted on training rows only)::

    ColumnTransformer(one StandardScaler per feature set, equal-share block weights)
      -> VarianceThreshold -> [SelectKBest(f_classif)] -> [PCA] -> head

Evaluation protocol (see :func:`featx.evaluate.plan_evaluation`):

* the data's own split when labelled rows are marked train and test: hyper-parameters are tuned on
  the val rows (``PredefinedSplit``) when there are some, else by (grouped) stratified CV inside
  train; the chosen model is refitted on train+val (default; ``refit_on="train"`` to keep val out)
  and reported on test with seeded bootstrap 95% CIs;
* otherwise stratified k-fold CV (``StratifiedGroupKFold`` whenever samples carry groups, so no
  patient is on both sides of a fold), with the search nested inside each outer training fold;
  the saved model is tuned and refitted on all labelled rows.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.model_selection import GridSearchCV, ParameterGrid, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featx.bundle import ModelBundle, load_bundle, save_bundle
from featx.cache import FeatureTable
from featx.errors import CacheError, ConfigMismatchError, FeatxError, ModelError
from featx.evaluate import (
    EvalPlan,
    bootstrap_ci,
    classification_metrics,
    expand_scores,
    plan_evaluation,
    score_matrix,
    tuning_cv,
    auc_score,
)
from featx.heads import zoo

SCORINGS = ("auc", "balanced_accuracy", "accuracy")
SEARCHES = ("grid", "random", "none")
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "auc", "f1")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


# A feature table held in memory is the cache's own FeatureTable; the name stays for callers.
ArrayTable = FeatureTable


def table_from_arrays(X, y, *, sets: dict[str, int] | None = None, groups=None, splits=None,
                      ids=None, paths=None, class_names=None, configs=None) -> ArrayTable:
    """An :class:`ArrayTable` from arrays. ``sets`` maps set name -> number of columns, in column
    order (default: one set "features" with all columns)."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n, d = X.shape
    if y.shape != (n,):
        raise FeatxError(f"y has shape {y.shape}, expected ({n},)")
    sets = dict(sets or {"features": d})
    if sum(sets.values()) != d:
        raise FeatxError(f"sets cover {sum(sets.values())} columns but X has {d}")
    slices, start = {}, 0
    for name, width in sets.items():
        slices[name] = slice(start, start + int(width))
        start += int(width)

    def col(v, fill):
        return np.array([fill] * n if v is None else [("" if e is None else e) for e in v], dtype=object)

    if class_names is None:
        class_names = [str(i) for i in range(int(y.max()) + 1)] if (y >= 0).any() else []
    return ArrayTable(X, y, col(groups, ""), col(ids if ids is not None else [str(i) for i in range(n)], ""),
                      col(splits, ""), col(paths, ""), [str(c) for c in class_names], slices,
                      {k: dict((configs or {}).get(k, {})) for k in sets})


def parse_sets(features: str | Sequence[str]) -> list[str]:
    """ "a,b" or ["a", "b"] or "a+b" -> ["a", "b"] (the sets fused into one model)."""
    if isinstance(features, str):
        parts = features.replace("+", ",").split(",")
    else:
        parts = [p for f in features for p in str(f).replace("+", ",").split(",")]
    sets = [p.strip() for p in parts if p.strip()]
    if not sets:
        raise FeatxError("no feature set given")
    if len(set(sets)) != len(sets):
        raise FeatxError(f"feature set listed twice in {','.join(sets)}")
    return sets


def parse_choices(features: str | Sequence[str]) -> list[list[str]]:
    """Compare's choices: "A,B,A+B" -> [["A"], ["B"], ["A", "B"]]."""
    items = features.split(",") if isinstance(features, str) else list(features)
    out = []
    for item in items:
        sets = parse_sets(item) if isinstance(item, str) else parse_sets(list(item))
        if sets not in out:
            out.append(sets)
    if not out:
        raise FeatxError("no feature set given")
    return out


def _load_table(cache, sets: list[str]):
    if isinstance(cache, (str, os.PathLike)):
        from featx.cache import load_features

        table = load_features(str(cache), sets)
        source = str(cache)
    else:
        table = subset_table(cache, sets)
        source = getattr(cache, "source", None)
    return table, source


def subset_table(table, sets: list[str]) -> ArrayTable:
    """The columns of ``sets`` (in that order) of a loaded table, as an :class:`ArrayTable`."""
    missing = [s for s in sets if s not in table.set_slices]
    if missing:
        raise FeatxError(f"feature set(s) {', '.join(missing)} not in the table "
                         f"(has {', '.join(table.set_slices)})", path=getattr(table, "source", None))
    X = np.hstack([table.X[:, table.set_slices[s]] for s in sets])
    slices, start = {}, 0
    for s in sets:
        sl = table.set_slices[s]
        width = (sl.stop - sl.start)
        slices[s] = slice(start, start + width)
        start += width
    return ArrayTable(X, np.asarray(table.y), np.asarray(table.groups, dtype=object),
                      np.asarray(table.ids, dtype=object), np.asarray(table.splits, dtype=object),
                      np.asarray(table.paths, dtype=object), list(table.class_names), slices,
                      {s: dict(table.configs.get(s, {})) for s in sets},
                      getattr(table, "source", None), getattr(table, "duplicate_of", None))


def effective_groups(table) -> np.ndarray:
    """The table's groups, with byte-identical copies (``duplicate_of``) kept together: a copy
    without a group takes its cluster's group, or all copies of an ungrouped image share the
    group ``dup:<id>``, so copies never land on both sides of a split or fold."""
    groups = np.array(["" if g is None else str(g) for g in table.groups], dtype=object)
    dup = getattr(table, "duplicate_of", None)
    if dup is None:
        return groups
    orig = np.array([str(d) if d else str(i) for d, i in zip(dup, table.ids)], dtype=object)
    keys, counts = np.unique(orig, return_counts=True)
    shared = set(keys[counts > 1])
    if not shared:
        return groups
    first_group: dict[str, str] = {}
    for o, g in zip(orig, groups):
        if o in shared and g and o not in first_group:
            first_group[o] = g
    for k in range(groups.size):
        if not groups[k] and orig[k] in shared:
            groups[k] = first_group.get(orig[k], "dup:" + orig[k])
    return groups


def check_finite(table, source=None, drop: bool = False):
    """Raise (one line, naming each set and its row count) if any feature is NaN or Inf; with
    ``drop=True`` return the table without those rows instead (and the number dropped)."""
    bad_any = np.zeros(table.X.shape[0], bool)
    problems = []
    for name, sl in table.set_slices.items():
        bad = ~np.isfinite(table.X[:, sl]).all(axis=1)
        if bad.any():
            first = table.paths[np.flatnonzero(bad)[0]] or table.ids[np.flatnonzero(bad)[0]]
            problems.append(f"set '{name}' has {int(bad.sum())} of {bad.size} rows with NaN/Inf "
                            f"(first: {first})")
            bad_any |= bad
    if not problems:
        return table, 0
    if not drop:
        raise CacheError("; ".join(problems) + "; re-extract those rows or pass --drop-nonfinite",
                         path=source)
    keep = ~bad_any
    dup = getattr(table, "duplicate_of", None)
    return ArrayTable(table.X[keep], table.y[keep], table.groups[keep], table.ids[keep],
                      table.splits[keep], table.paths[keep], table.class_names, table.set_slices,
                      table.configs, source, None if dup is None else np.asarray(dup)[keep]), int(bad_any.sum())


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


class Reduce(TransformerMixin, BaseEstimator):
    """Optional univariate selection then PCA, sized to the data at fit time.

    ``select_k``: keep the k features with the highest ANOVA F (clipped to the features present).
    ``pca``: an int (components, clipped to min(n_samples, n_features)) or a float in (0, 1)
    (fraction of variance to keep). Fitted on the training rows only, like every pipeline step.
    """

    def __init__(self, select_k: int | None = None, pca: float | int | None = None,
                 random_state: int | None = 0):
        self.select_k = select_k
        self.pca = pca
        self.random_state = random_state

    def fit(self, X, y=None):
        X = np.asarray(X)
        self.n_features_in_ = X.shape[1]
        self.select_ = None
        self.pca_ = None
        if self.select_k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.select_ = SelectKBest(f_classif, k=min(int(self.select_k), X.shape[1])).fit(X, y)
            X = self.select_.transform(X)
        if self.pca:
            if isinstance(self.pca, float) and 0 < self.pca < 1:
                self.pca_ = PCA(n_components=float(self.pca), svd_solver="full",
                                random_state=self.random_state).fit(X)
            else:
                k = max(1, min(int(self.pca), X.shape[0], X.shape[1]))
                self.pca_ = PCA(n_components=k, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        if self.select_ is not None:
            X = self.select_.transform(X)
        if self.pca_ is not None:
            X = self.pca_.transform(X)
        return X


def block_weights(set_dims: dict[str, int], mode: str = "equal") -> dict[str, float] | None:
    """Per-set multipliers after standardisation. "equal": each set contributes the same total
    variance, whatever its width (weight sqrt(d_total / (n_sets * d_set)); 1 for a single set).
    "none": plain concatenation, so wide sets dominate distances and penalties."""
    if mode == "none" or len(set_dims) == 1:
        return None
    if mode != "equal":
        raise FeatxError(f"unknown fusion weighting {mode!r}; choose equal or none")
    total = sum(set_dims.values())
    return {name: math.sqrt(total / (len(set_dims) * d)) for name, d in set_dims.items()}


def build_pipeline(set_slices: dict[str, slice], head, *, pca=None, select_k=None,
                   variance_threshold: float | None = 0.0, fusion_weights: str = "equal",
                   seed: int = 0) -> Pipeline:
    """The unfitted pipeline for sets at ``set_slices`` (columns of X) and estimator ``head``.

    Per set: VarianceThreshold (on the raw values; 0 drops constant columns, None skips it) then
    StandardScaler, each fitted on the training rows only; the sets are then weighted
    (:func:`block_weights`) and concatenated, optionally reduced (:class:`Reduce`), and classified.
    """
    dims = {name: sl.stop - sl.start for name, sl in set_slices.items()}

    def per_set():
        if variance_threshold is None:
            return Pipeline([("scale", StandardScaler())])
        return Pipeline([("variance", VarianceThreshold(float(variance_threshold))), ("scale", StandardScaler())])

    fuse = ColumnTransformer(
        [(name, per_set(), np.arange(sl.start, sl.stop)) for name, sl in set_slices.items()],
        remainder="drop", transformer_weights=block_weights(dims, fusion_weights),
    )
    steps = [("fuse", fuse)]
    if select_k or pca:
        steps.append(("reduce", Reduce(select_k=select_k, pca=pca, random_state=seed)))
    steps.append(("head", head))
    return Pipeline(steps)


def parse_pca(value) -> float | int | None:
    """ "128" -> 128, "0.95" -> 0.95, None/""/"0"/"none" -> None."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = value
    else:
        text = str(value).strip().lower()
        if text in ("", "none", "0", "off"):
            return None
        try:
            v = float(text)
        except ValueError:
            raise FeatxError(f"--pca takes a number of components (128) or a variance fraction "
                             f"(0.95), not {value!r}") from None
    if v <= 0:
        return None
    if v < 1:
        return float(v)
    if float(v) != int(v):
        raise FeatxError(f"--pca {value}: a component count must be a whole number")
    return int(v)


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def _auc_scorer(estimator, X, y):
    """Scorer for searches: AUC from decision scores (binary, or one-vs-rest macro)."""
    return auc_score(np.asarray(y), score_matrix(estimator, X), list(estimator.classes_))


def _scorer(scoring: str):
    if scoring not in SCORINGS:
        raise FeatxError(f"unknown scoring {scoring!r}; choose {', '.join(SCORINGS)}")
    return _auc_scorer if scoring == "auc" else scoring


def search_space(head: str, search: str, grid: dict | None = None) -> dict:
    """The ``head__``-prefixed search space for ``search`` ("grid", "random", "none")."""
    if search not in SEARCHES:
        raise FeatxError(f"unknown search {search!r}; choose {', '.join(SEARCHES)}")
    if search == "none":
        return {}
    space = grid if grid is not None else (
        zoo.default_grid(head) if search == "grid" else zoo.default_distributions(head))
    return {f"head__{k}": (v if isinstance(v, (list, tuple)) or hasattr(v, "rvs") else [v])
            for k, v in space.items()}


def _n_candidates(space: dict, search: str, n_iter: int) -> int:
    if not space:
        return 1
    if search == "random" and any(hasattr(v, "rvs") for v in space.values()):
        return n_iter
    n = len(ParameterGrid(space))
    return min(n, n_iter) if search == "random" else n


def _tune(pipe, space, search, X, y, cv_obj, groups, scoring, n_iter, seed, n_jobs):
    """Returns (best_params, best_score, n_candidates). No search when there is one candidate."""
    n_cand = _n_candidates(space, search, n_iter)
    if n_cand <= 1:
        params = {k: (v[0] if isinstance(v, (list, tuple)) else v.rvs(random_state=seed))
                  for k, v in space.items()}
        return params, None, 1
    common = dict(scoring=_scorer(scoring), cv=cv_obj, n_jobs=n_jobs, refit=False, error_score=np.nan)
    if search == "random":
        searcher = RandomizedSearchCV(pipe, space, n_iter=n_cand, random_state=seed, **common)
    else:
        searcher = GridSearchCV(pipe, space, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        searcher.fit(X, y, groups=groups)
    scores = searcher.cv_results_["mean_test_score"]
    if not np.isfinite(scores).any():
        raise FeatxError("every hyper-parameter candidate failed during the search")
    best = {k: _plain(v) for k, v in searcher.best_params_.items()}
    return best, float(searcher.best_score_), n_cand


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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

    @property
    def labels(self) -> list[int]:
        """Label indices that occur in ``y_true`` or could be predicted (finite score columns)."""
        seen = set(np.unique(self.y_true)) | set(np.unique(self.y_pred))
        finite = {k for k in range(self.scores.shape[1]) if np.isfinite(self.scores[:, k]).all()}
        return sorted(int(k) for k in seen | finite)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"id": self.ids, "path": self.paths})
        if self.fold is not None:
            df["fold"] = self.fold
        df["true_label"] = [self.class_names[v] for v in self.y_true]
        df["predicted_label"] = [self.class_names[v] for v in self.y_pred]
        for k, name in enumerate(self.class_names):
            df[f"score_{name}"] = self.scores[:, k]
        return df


@dataclass
class FitResult:
    """What :func:`fit` returns.

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


# --------------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------------


def _final_head(pipe: Pipeline, head: str, calibrate: bool) -> Pipeline:
    if calibrate and zoo.needs_calibration(head):
        pipe = clone(pipe)
        pipe.steps[-1] = ("head", zoo.CalibratedHead(pipe.steps[-1][1]))
    return pipe


def _predict_block(model, X, n_classes):
    y_pred = np.asarray(model.predict(X)).astype(np.int64)
    scores = expand_scores(score_matrix(model, X), model.classes_, n_classes)
    return y_pred, scores


def _metrics_block(ev: Evaluation, n_boot: int, seed: int) -> dict[str, Any]:
    labels = ev.labels
    s = ev.scores[:, labels]
    m = classification_metrics(ev.y_true, ev.y_pred, s, labels, ev.class_names)
    if n_boot:
        m["ci95"] = bootstrap_ci(ev.y_true, ev.y_pred, s, labels, ev.class_names, n_boot=n_boot, seed=seed)
    return m


def fit(
    cache,
    features: str | Sequence[str],
    head: str = "svm",
    *,
    params: dict[str, Any] | None = None,
    search: str = "grid",
    grid: dict[str, Any] | None = None,
    n_iter: int = 20,
    cv: int = 5,
    protocol: str = "auto",
    refit_on: str = "train+val",
    pca=None,
    select_k: int | None = None,
    variance_threshold: float | None = 0.0,
    fusion_weights: str = "equal",
    class_weight: str | dict | None = None,
    scoring: str = "auc",
    seed: int = 0,
    n_jobs: int | None = None,
    n_boot: int = 1000,
    drop_nonfinite: bool = False,
    final: bool = True,
    plan: EvalPlan | None = None,
) -> FitResult:
    """Fit head ``head`` on feature sets ``features`` of ``cache``, evaluate it, build the bundle.

    ``cache`` is a cache path or a table (:func:`table_from_arrays`, or ``featx.load_features``'s
    result). ``params`` fixes head parameters (its own names); ``grid`` replaces the default
    search space. ``pca`` is an int, a variance fraction or a string ("128", "0.95").
    ``class_weight="balanced"`` reweights classes in every head that supports it (all but knn).
    ``n_jobs`` runs search candidates in parallel. ``final=False`` skips the final refit
    in the CV protocol (compare uses it); ``plan`` fixes the folds (compare shares them).
    """
    t0 = time.perf_counter()
    head = zoo._check_name(head)
    sets = parse_sets(features)
    pca = parse_pca(pca)
    table, source = _load_table(cache, sets)
    table, dropped = check_finite(table, source, drop_nonfinite)
    notes = [f"{dropped} rows with NaN/Inf features were dropped"] if dropped else []
    if class_weight is not None and head == "knn":
        notes.append("class_weight is ignored by the knn head")
    X, y = np.asarray(table.X), np.asarray(table.y)
    n_classes = len(table.class_names)
    if n_classes < 2 or len(np.unique(y[y >= 0])) < 2:
        raise FeatxError("fitting needs labelled samples of at least two classes", path=source)
    if plan is None:
        plan = plan_evaluation(y, table.splits, effective_groups(table), protocol, cv, seed, refit_on)
    notes += plan.notes
    head_params = dict(params or {})
    base = build_pipeline(table.set_slices,
                          zoo.make_head(head, class_weight=None if head == "knn" else class_weight,
                                        seed=seed, **head_params),
                          pca=pca, select_k=select_k, variance_threshold=variance_threshold,
                          fusion_weights=fusion_weights, seed=seed)
    space = search_space(head, search, grid)
    space = {k: v for k, v in space.items() if k[len("head__"):] not in head_params}
    timings: dict[str, float] = {}
    tuning: dict[str, Any] = {"search": search, "scoring": scoring}
    model = None

    if plan.kind == "split":
        rows, cv_obj, g = tuning_cv(plan, y, plan.train_idx, cv, seed, plan.val_idx)
        t = time.perf_counter()
        best, best_score, n_cand = _tune(base, space, search, X[rows], y[rows], cv_obj, g,
                                         scoring, n_iter, seed, n_jobs)
        timings["search"] = time.perf_counter() - t
        tuning.update(candidates=n_cand, best_score=best_score,
                      on="val" if plan.val_idx.size else f"{plan.n_splits}-fold CV on train")
        t = time.perf_counter()
        model = _final_head(clone(base).set_params(**best), head, final)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X[plan.refit_idx], y[plan.refit_idx])
        timings["refit"] = time.perf_counter() - t
        te = plan.test_idx
        y_pred, scores = _predict_block(model, X[te], n_classes)
        ev = Evaluation("test", y[te], y_pred, scores, table.class_names, table.ids[te], table.paths[te])
        metrics = {"test": _metrics_block(ev, n_boot, seed)}
        if not final:
            model = None
    else:
        n = X.shape[0]
        oof_pred = np.full(n, -1, np.int64)
        oof_scores = np.full((n, n_classes), np.nan)
        fold_of = np.full(n, -1, np.int64)
        fold_metrics, fold_params = [], []
        t = time.perf_counter()
        for k, (tr, te) in enumerate(plan.folds):
            rows, cv_obj, g = tuning_cv(plan, y, tr, cv, seed + k + 1)
            best, _, n_cand = _tune(base, space, search, X[rows], y[rows], cv_obj, g,
                                    scoring, n_iter, seed, n_jobs)
            m = clone(base).set_params(**best)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                m.fit(X[tr], y[tr])
            oof_pred[te], oof_scores[te] = _predict_block(m, X[te], n_classes)
            fold_of[te] = k
            labels = sorted(set(np.unique(y[te])) | set(np.unique(oof_pred[te])) | set(int(c) for c in m.classes_))
            fm = classification_metrics(y[te], oof_pred[te], oof_scores[te][:, labels], labels, table.class_names)
            fold_metrics.append({key: fm[key] for key in SUMMARY_KEYS} | {"n": fm["n"]})
            fold_params.append({k2[len("head__"):]: v for k2, v in best.items()})
        timings["cv"] = time.perf_counter() - t
        idx = np.concatenate([te for _, te in plan.folds])
        ev = Evaluation("cv", y[idx], oof_pred[idx], oof_scores[idx], table.class_names,
                        table.ids[idx], table.paths[idx], fold_of[idx])
        block = _metrics_block(ev, n_boot, seed)
        block["n_splits"] = plan.n_splits
        block["folds"] = fold_metrics
        block["fold_params"] = fold_params
        block["mean"] = {key: _mean([f[key] for f in fold_metrics]) for key in SUMMARY_KEYS}
        block["std"] = {key: _std([f[key] for f in fold_metrics]) for key in SUMMARY_KEYS}
        block["pooled"] = "metrics and ci95 are computed on the pooled out-of-fold predictions"
        metrics = {"cv": block}
        tuning.update(nested=bool(space), candidates=_n_candidates(space, search, n_iter))
        best = {}
        if final:
            labelled = np.flatnonzero(y >= 0)
            rows, cv_obj, g = tuning_cv(plan, y, labelled, cv, seed)
            t = time.perf_counter()
            best, best_score, _ = _tune(base, space, search, X[rows], y[rows], cv_obj, g,
                                        scoring, n_iter, seed, n_jobs)
            tuning["best_score"] = best_score
            tuning["on"] = "CV on all labelled rows (final model)"
            model = _final_head(clone(base).set_params(**best), head, True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                model.fit(X[labelled], y[labelled])
            timings["final"] = time.perf_counter() - t

    best_params = {**head_params, **{k[len("head__"):]: v for k, v in best.items()}}
    timings["total"] = time.perf_counter() - t0
    options = dict(search=search, scoring=scoring, cv=cv, protocol=plan.kind, refit_on=refit_on,
                   pca=pca, select_k=select_k, variance_threshold=variance_threshold,
                   fusion_weights=fusion_weights, class_weight=class_weight, seed=seed)
    metrics["tuning"] = tuning
    metrics["protocol"] = plan.describe()
    metrics["model"] = {"head": head, "feature_sets": sets, "params": best_params,
                        "n_features": int(X.shape[1]), "options": options}
    if notes:
        metrics["notes"] = notes
    result = FitResult(head, sets, metrics, ev, best_params, plan, None, notes, timings)
    if model is not None:
        import featx

        result.bundle = ModelBundle(
            pipeline=model,
            class_names=list(table.class_names),
            classes=[int(c) for c in model.classes_],
            feature_sets=sets,
            set_configs={s: dict(table.configs.get(s, {})) for s in sets},
            set_dims={s: int(sl.stop - sl.start) for s, sl in table.set_slices.items()},
            head=head,
            params=best_params,
            options=options,
            metrics=_jsonable(metrics),
            training={"cache": source, "n_rows": int(X.shape[0]),
                      "n_fit": int(plan.refit_idx.size if plan.kind == "split" else (y >= 0).sum())},
            featx_version=featx.__version__,
        )
    return result


def _mean(values):
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 6) if v else None


def _std(values):
    v = [x for x in values if x is not None]
    return round(float(np.std(v, ddof=1)), 6) if len(v) > 1 else None


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# --------------------------------------------------------------------------------------------
# Compare
# --------------------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """What :func:`compare` returns: the sorted leaderboard and every run's :class:`FitResult`."""

    leaderboard: pd.DataFrame
    results: list[FitResult]
    plan: EvalPlan
    seconds: float

    def write(self, out: str | os.PathLike) -> dict[str, Path]:
        from featx.report import write_leaderboard

        return write_leaderboard(self.leaderboard, out, self.plan.describe())


def _one(table, sets, head, kwargs):
    t = time.perf_counter()
    try:
        res = fit(subset_table(table, sets), sets, head, final=False, **kwargs)
    except Exception as exc:  # one failed run must not sink the others; it is listed, not hidden
        return None, f"{'+'.join(sets)} / {head}: {type(exc).__name__}: {exc}", time.perf_counter() - t
    return res, None, time.perf_counter() - t


def compare(
    cache,
    features: str | Sequence,
    heads: str | Sequence[str] = ("svm", "rf", "xgboost", "elm", "logreg"),
    *,
    out: str | os.PathLike | None = None,
    n_jobs: int | None = -1,
    protocol: str = "auto",
    cv: int = 5,
    seed: int = 0,
    refit_on: str = "train+val",
    drop_nonfinite: bool = False,
    **fit_kwargs,
) -> CompareResult:
    """Evaluate every (feature choice x head) on the same rows and folds; return a leaderboard
    sorted by the primary metric (AUC, then balanced accuracy).

    ``features``: "A,B,A+B" or [["A"], ["B"], ["A", "B"]]. All sets are loaded once, and only rows
    computed in every set are used, so all runs share rows and folds. Runs go in parallel over
    ``n_jobs`` processes (each run's own search is then sequential). Other keyword arguments
    go to :func:`fit` (search, pca, class_weight, scoring, n_boot, ...). With ``out`` the
    leaderboard is written as CSV, Markdown (``.md``) and a plot (``.png``).
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    choices = parse_choices(features)
    head_list = [zoo._check_name(h) for h in (heads.split(",") if isinstance(heads, str) else heads)]
    all_sets = list(dict.fromkeys(s for c in choices for s in c))
    table, source = _load_table(cache, all_sets)
    table, dropped = check_finite(table, source, drop_nonfinite)
    table.source = source
    plan = plan_evaluation(np.asarray(table.y), table.splits, effective_groups(table), protocol, cv, seed,
                           refit_on)
    kwargs = dict(fit_kwargs, cv=cv, seed=seed, plan=plan, refit_on=refit_on)
    kwargs.setdefault("n_jobs", None)
    jobs = [(c, h) for c in choices for h in head_list]
    outputs = Parallel(n_jobs=n_jobs, prefer="processes")(
        delayed(_one)(table, c, h, kwargs) for c, h in jobs)
    rows, results, failures = [], [], []
    for (c, h), (res, err, secs) in zip(jobs, outputs):
        if err:
            failures.append(err)
            continue
        results.append(res)
        rows.append(_leader_row(res, secs))
    if not rows:
        raise FeatxError("every run failed: " + "; ".join(failures), path=source)
    board = pd.DataFrame(rows)
    board = board.sort_values(["auc", "balanced_accuracy", "accuracy"], ascending=False,
                              na_position="last", kind="stable").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board.attrs["failures"] = failures
    board.attrs["dropped_rows"] = dropped
    result = CompareResult(board, results, plan, time.perf_counter() - t0)
    if out is not None:
        result.write(out)
    return result


def _leader_row(res: FitResult, secs: float) -> dict[str, Any]:
    m = res.primary
    ci = m.get("ci95", {})
    row = {"features": "+".join(res.feature_sets), "head": res.head, "evaluated_on": res.evaluation.name}
    for key in SUMMARY_KEYS:
        row[key] = m.get(key)
        if key in ("accuracy", "auc"):
            lo, hi = ci.get(key, [None, None])
            row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
    if len(m["class_names"]) == 2:
        pos = m["class_names"][1]
        row["sensitivity"] = m["per_class"][pos]["sensitivity"]
        row["specificity"] = m["per_class"][pos]["specificity"]
    row["n_features"] = res.metrics["model"]["n_features"]
    row["params"] = json.dumps(res.best_params, sort_keys=True, default=str)
    row["seconds"] = round(secs, 2)
    return row


# --------------------------------------------------------------------------------------------
# Predict
# --------------------------------------------------------------------------------------------


PROVENANCE_KEYS = ("versions",)


def _comparable(cfg: dict) -> str:
    """A config as canonical JSON, without provenance keys (library versions) that record how a
    set was made but are not extractor settings."""
    return json.dumps({k: v for k, v in cfg.items() if k not in PROVENANCE_KEYS},
                      sort_keys=True, default=str)


def _config_diff(expected: dict, found: dict) -> str:
    keys = sorted((set(expected) | set(found)) - set(PROVENANCE_KEYS))
    parts = []
    for k in keys:
        a, b = expected.get(k, "<absent>"), found.get(k, "<absent>")
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            parts.append(f"{k}: model {json.dumps(a, default=str)} vs features {json.dumps(b, default=str)}")
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def match_sets(bundle: ModelBundle, configs: dict[str, dict], path=None) -> tuple[dict[str, str], list[str]]:
    """Map each of the model's feature sets to a set of the cache with the same extractor config.

    The set of the same name is used when its config matches; otherwise any set whose config
    matches (the cache may hold it under another name, e.g. ``name@hash``). Configs are compared
    whole except for library versions, whose differences are returned as notes. Raises
    ConfigMismatchError, saying which settings differ, when a set has no match.
    """
    mapping, notes = {}, []
    for name in bundle.feature_sets:
        want = bundle.set_configs.get(name, {})
        key = _comparable(want)
        found = None
        if name in configs and _comparable(configs[name]) == key:
            found = name
        else:
            found = next((n for n, c in configs.items() if _comparable(c) == key), None)
        if found is None:
            if name in configs:
                raise ConfigMismatchError(
                    f"feature set '{name}' was made with a different extractor config than the model "
                    f"was trained on ({_config_diff(want, configs[name])})", path=path)
            raise ConfigMismatchError(
                f"no feature set with the extractor config of the model's set '{name}' (the "
                f"features have: {', '.join(configs) or 'none'})", path=path)
        mapping[name] = found
        got = configs[found].get("versions")
        if want.get("versions") and got and got != want["versions"]:
            diff = {k: f"{want['versions'].get(k)} -> {got.get(k)}" for k in set(want["versions"]) | set(got)
                    if want["versions"].get(k) != got.get(k)}
            notes.append(f"set '{name}': made with other library versions than the model's features ({diff})")
    return mapping, notes


def check_configs(bundle: ModelBundle, configs: dict[str, dict], path=None) -> None:
    """Raise ConfigMismatchError if a set the model needs has another extractor config."""
    match_sets(bundle, configs, path)


def _model_table(bundle: ModelBundle, cache) -> tuple[ArrayTable, list[str]]:
    """The cache's rows with the model's sets (matched by config), named as in the model."""
    from featx.cache import list_sets

    source = str(cache) if isinstance(cache, (str, os.PathLike)) else getattr(cache, "source", None)
    configs = list_sets(cache) if isinstance(cache, (str, os.PathLike)) else dict(cache.configs)
    mapping, notes = match_sets(bundle, configs, source)
    table, source = _load_table(cache, [mapping[s] for s in bundle.feature_sets])
    t = subset_table(table, [mapping[s] for s in bundle.feature_sets])
    t.set_slices = {s: t.set_slices[mapping[s]] for s in bundle.feature_sets}
    t.configs = {s: t.configs[mapping[s]] for s in bundle.feature_sets}
    t.source = source
    return t, notes


def predict_table(bundle: ModelBundle, table, notes: Sequence[str] = ()) -> pd.DataFrame:
    """Predictions for every row of ``table`` (whose sets carry the model's names): id, path,
    split, true_label (if known), predicted_label, predicted_index, then ``prob_<class>`` per class
    (calibrated for svm and elm), and a note column."""
    source = getattr(table, "source", None)
    for s in bundle.feature_sets:
        width = table.set_slices[s].stop - table.set_slices[s].start
        if bundle.set_dims.get(s, width) != width:
            raise ModelError(f"feature set '{s}' has {width} columns; the model expects "
                             f"{bundle.set_dims[s]}", path=source)
    X = np.hstack([table.X[:, table.set_slices[s]] for s in bundle.feature_sets]) if len(table.ids) else \
        np.zeros((0, sum(bundle.set_dims[s] for s in bundle.feature_sets)), np.float32)
    bad = ~np.isfinite(X).all(axis=1)
    X = np.where(np.isfinite(X), X, 0.0)
    model = bundle.pipeline
    names = bundle.class_names
    probabilistic = hasattr(model, "predict_proba")
    values = np.zeros((X.shape[0], len(names)))
    pred = np.zeros(0, np.int64)
    if X.shape[0]:
        pred = np.asarray(model.predict(X)).astype(np.int64)
        if probabilistic:
            values[:, bundle.classes] = model.predict_proba(X)
        else:  # a pipeline without probabilities (fitted by hand): report decision scores
            values = expand_scores(score_matrix(model, X), bundle.classes, len(names))
    df = pd.DataFrame({"id": np.asarray(table.ids, dtype=object), "path": np.asarray(table.paths, dtype=object),
                       "split": np.asarray(table.splits, dtype=object)})
    y = np.asarray(table.y)
    df["true_label"] = [names[v] if 0 <= v < len(names) else "" for v in y]
    df["predicted_label"] = [names[v] for v in pred]
    df["predicted_index"] = pred
    col = "prob" if probabilistic else "score"
    for k, name in enumerate(names):
        df[f"{col}_{name}"] = values[:, k]
    df["note"] = ""
    if bad.any():
        df.loc[bad, ["predicted_label", "note"]] = ["", "NaN/Inf features"]
        df.loc[bad, "predicted_index"] = -1
        df.loc[bad, [f"{col}_{n}" for n in names]] = np.nan
    df.attrs["notes"] = list(notes)
    return df


def predict(
    bundle,
    sources: Sequence[str] | str | None = None,
    cache: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    trust: bool = False,
    extract_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Predict with a saved model; one row per sample.

    ``bundle``: a model path (verified against its sha256 sidecar unless ``trust``) or a
    :class:`ModelBundle`. With ``sources`` (image folders, files, npz, DICOM, manifests) the
    images go through ``featx.extraction.extract`` into ``cache`` (a temporary file when None) with
    the extractor settings stored in the model, and the rows of those sources are returned
    (samples that failed to decode get a row with an empty prediction and the reason in
    ``note``). With only ``cache``, every row that has the model's feature sets is predicted.
    Features whose extractor config differs from the model's raise ConfigMismatchError.
    ``extract_options`` overrides extraction settings that do not change features (device,
    batch_size, workers, progress). With ``out`` the rows are also written as CSV.
    """
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle, trust=trust)
    if isinstance(sources, (str, os.PathLike)):
        sources = [str(sources)]
    if not sources and cache is None:
        raise FeatxError("predict needs image sources or a cache")
    tmpdir = None
    try:
        if sources:
            if cache is None:
                tmpdir = tempfile.TemporaryDirectory(prefix="featx-predict-")
                cache = os.path.join(tmpdir.name, "features.h5")
            df = _predict_sources(bundle, [str(s) for s in sources], str(cache), extract_options or {})
        else:
            table, notes = _model_table(bundle, cache)
            df = predict_table(bundle, table, notes)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return df


_RUN_OPTIONS = ("device", "batch_size", "workers", "progress", "allow_outside", "strict")


def extraction_calls(set_configs: dict[str, dict]) -> list[dict[str, Any]]:
    """``featx.extraction.extract`` keyword arguments that recreate feature sets with these configs:
    one call per backbone / pooling / weights / precision / reading group (taps of one backbone
    share a call), one per reading group of handcrafted sets."""
    groups: dict[str, dict[str, Any]] = {}
    for name, cfg in set_configs.items():
        read = cfg.get("read") or {}
        window = read.get("window")
        read_kw = dict(window=tuple(window) if isinstance(window, list) else window,
                       intensity=read.get("intensity", "auto"),
                       jpeg_draft=read.get("draft_size") is not None or "draft_size" not in read)
        if cfg.get("kind") == "handcrafted":
            from featx.handcrafted import spec_from_config

            key = "hand:" + json.dumps(read_kw, sort_keys=True, default=str)
            g = groups.setdefault(key, dict(backbones=[], handcrafted=[], **read_kw))
            g["handcrafted"].append(spec_from_config(cfg))
            continue
        if "backbone" not in cfg:
            raise FeatxError(f"feature set '{name}': its config names no backbone or handcrafted "
                             "descriptor, so it cannot be recomputed from images; predict from a cache")
        w = cfg.get("weights") or {}
        src = str(w.get("source", ""))
        if src == "none":
            weights = "none"
        elif src == "file":
            raise FeatxError(f"feature set '{name}' used a local weights file (sha256 "
                             f"{str(w.get('sha256'))[:12]}…); extract with `featx extract --weights FILE` "
                             "and predict from the cache")
        else:
            weights = None
        taps = list(cfg.get("taps") or ["head"])
        concat = len(taps) > 1
        precision = cfg.get("precision", "auto")
        key = json.dumps([cfg["backbone"], cfg.get("pooling", "avg"), weights, precision, read_kw, concat,
                          taps if concat else None], sort_keys=True, default=str)
        g = groups.setdefault(key, dict(backbones=[cfg["backbone"]], layers=[], pooling=cfg.get("pooling", "avg"),
                                        weights=weights, precision=precision, concat_layers=concat, **read_kw))
        for t in taps:
            if t not in g["layers"]:
                g["layers"].append(t)
    return list(groups.values())


def _predict_sources(bundle: ModelBundle, sources: list[str], cache: str, options: dict) -> pd.DataFrame:
    from featx.extraction import extract
    from featx.sources import scan_sources

    unknown = set(options) - set(_RUN_OPTIONS)
    if unknown:
        raise FeatxError(f"extract option(s) {', '.join(sorted(unknown))} would change the features; "
                         f"only {', '.join(_RUN_OPTIONS)} can be set for predict")
    run = dict(progress=False)
    run.update(options)
    failures: dict[str, str] = {}
    for call in extraction_calls(bundle.set_configs):
        summary = extract(sources, cache, **call, **run)
        for p, reason in summary.failures:
            failures.setdefault(str(p), reason)
    table, notes = _model_table(bundle, cache)
    scan = scan_sources(sources, allow_outside=bool(options.get("allow_outside", False)))
    order = {s.id: i for i, s in enumerate(scan.samples)}
    rows = np.array([i for i in np.argsort([order.get(v, -1) for v in table.ids], kind="stable")
                     if table.ids[i] in order], dtype=int)
    df = predict_table(bundle, _rows(table, rows), notes)
    done = set(df["id"])
    missing = [s for s in scan.samples if s.id not in done]
    if missing or failures:
        extra = [{"id": s.id, "path": s.path, "split": s.split, "predicted_index": -1,
                  "note": failures.get(s.path, "not extracted")} for s in missing]
        extra += [{"id": "", "path": p, "predicted_index": -1, "note": r}
                  for p, r in failures.items() if p not in {s.path for s in missing}]
        df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
        df["predicted_label"] = df["predicted_label"].fillna("")
        df["note"] = df["note"].fillna("")
    df.attrs["notes"] = list(notes)
    return df


def _rows(table, rows: np.ndarray) -> ArrayTable:
    t = subset_table(table, list(table.set_slices))
    dup = None if t.duplicate_of is None else np.asarray(t.duplicate_of)[rows]
    return ArrayTable(t.X[rows], t.y[rows], t.groups[rows], t.ids[rows], t.splits[rows],
                      t.paths[rows], t.class_names, t.set_slices, t.configs, t.source, dup)
