"""Ensemble selection over (feature choice x head) candidates (Caruana et al. 2004, as auto-sklearn).

Every candidate is tuned as :func:`featx.fit.fit` tunes one head (val rows, or CV inside train),
predicts probabilities on the selection rows (by default out-of-fold over train+val; the val split
with ``select_on="val"``), and a weighted ensemble is built by greedy forward selection
with replacement on those predictions: start from the best ``n_init`` candidates, then for a fixed
number of ``rounds`` add the candidate (possibly again) that most improves the selection score of the
averaged probabilities. The test rows are never seen before the final evaluation. The chosen members
are refitted (train+val, like ``fit``) inside one :class:`EnsembleClassifier`, saved as any bundle.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils._param_validation import Interval, StrOptions  # sklearn's own constraint types
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.bundle import ModelBundle
from featx.errors import FeatxError
from featx.evaluate import auc_score, make_cv, plan_evaluation, tuning_cv
from featx.fit.fitting import add_ordinal_metrics, ordinal_plan, validate_fit_options
from featx.fit.pipeline import build_pipeline, parse_pca
from featx.fit.protocol import predict_rows
from featx.fit.results import Evaluation, FitResult, metrics_block
from featx.fit.search import PREFIX, SCORINGS, Tuner, head_name, head_params, head_plan, run_parallel
from featx.fit.tables import imbalance_note, load_table, parse_choices, parse_sets
from featx.heads.ordinal import graded_class_names
from featx.heads.zoo import CalibratedHead
from featx.jsonutil import to_jsonable
from featx.ood import fit_bundle_ood
from featx.progress import as_progress

ENSEMBLE_HEADS = ("svm", "logreg", "xgboost", "elm")
SELECT_ON = ("auto", "val", "oof")
DECISIONS = ("argmax", "accuracy", "balanced_accuracy")
ORDINAL_PREFIX = "ordinal-"


class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Weighted mean of the ``predict_proba`` of classifiers fitted on the same rows.

    ``estimators``: list of ``(name, classifier)``; each is cloned and fitted on all of ``X``
    (featx's members are pipelines that select their own columns of the concatenated sets).
    ``weights``: one non-negative number per estimator (default equal); normalized to sum 1, and
    estimators of weight 0 are not fitted. ``predict`` is the class of highest mean probability;
    with ``threshold`` (two classes only) it is the second class when its mean probability is
    >= ``threshold`` (a decision threshold chosen on selection rows, see :func:`best_threshold`).
    Default (``estimators=None``): one logistic regression.
    """

    _parameter_constraints: dict = {
        "estimators": [list, None],
        "weights": ["array-like", None],
        "threshold": [Interval(Real, 0, 1, closed="neither"), None],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimators=None, weights=None, threshold=None, n_jobs=None):
        self.estimators = estimators
        self.weights = weights
        self.threshold = threshold
        self.n_jobs = n_jobs

    def _members(self):
        if self.estimators is None:
            from sklearn.linear_model import LogisticRegression
            return [("logreg", LogisticRegression())]
        if not self.estimators:
            raise ValueError("estimators: give at least one (name, classifier) pair")
        for item in self.estimators:
            if not (isinstance(item, tuple) and len(item) == 2 and hasattr(item[1], "predict_proba")):
                raise ValueError(f"estimators: each item must be a (name, classifier with predict_proba) "
                                 f"pair, not {item!r}")
        return list(self.estimators)

    def fit(self, X, y):
        self._validate_params()
        members = self._members()
        w = np.ones(len(members)) if self.weights is None else np.asarray(self.weights, dtype=float)
        if w.shape != (len(members),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: need {len(members)} finite non-negative numbers with a positive sum")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError("EnsembleClassifier needs samples of at least two classes; got one class")
        if self.threshold is not None and self.classes_.size != 2:
            raise ValueError(f"threshold applies to two classes only; y has {self.classes_.size}")
        from joblib import delayed

        keep = np.flatnonzero(w > 0)
        fitted = run_parallel((delayed(_fit_member)(clone(members[i][1]), X, y) for i in keep), self.n_jobs)
        self.estimators_ = list(fitted)
        self.names_ = [members[i][0] for i in keep]
        self.weights_ = w[keep] / w[keep].sum()
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        out = np.zeros((X.shape[0], self.classes_.size))
        for weight, est in zip(self.weights_, self.estimators_):
            cols = np.searchsorted(self.classes_, est.classes_)
            out[:, cols] += weight * np.asarray(est.predict_proba(X), dtype=float)
        return out

    def predict(self, X):
        proba = self.predict_proba(X)
        if self.threshold is not None:
            return self.classes_[(proba[:, 1] >= self.threshold).astype(np.int64)]
        return self.classes_[np.argmax(proba, axis=1)]


def _fit_member(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return est.fit(X, y)


def selection_score(y, proba: np.ndarray, labels: Sequence[int], scoring: str) -> float:
    """The score greedy selection maximizes: AUC of the probabilities, or (balanced) accuracy of
    their argmax. ``proba`` columns are aligned with ``labels``."""
    if scoring == "auc":
        return auc_score(y, proba, labels)
    pred = np.asarray(labels)[np.argmax(proba, axis=1)]
    if scoring == "accuracy":
        return float(np.mean(pred == y))
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls))


def greedy_selection(y, probas: Sequence[np.ndarray], labels: Sequence[int], *, rounds: int = 50,
                     n_init: int = 3, scoring: str = "auc") -> tuple[np.ndarray, list[float]]:
    """Caruana's forward selection with replacement: (counts per candidate, score after each pick).

    Starts from the ``n_init`` best single candidates, then adds, ``rounds - n_init`` times, the
    candidate whose addition gives the best score of the averaged probabilities (ties: the first)."""
    y = np.asarray(y)
    probas = [np.asarray(p, dtype=float) for p in probas]
    singles = np.array([selection_score(y, p, labels, scoring) for p in probas])
    singles = np.where(np.isfinite(singles), singles, -np.inf)
    counts = np.zeros(len(probas), np.int64)
    total = np.zeros_like(probas[0])
    trace: list[float] = []
    for j in np.argsort(-singles, kind="stable")[:max(1, min(n_init, rounds, len(probas)))]:
        counts[j] += 1
        total += probas[j]
        trace.append(selection_score(y, total / counts.sum(), labels, scoring))
    while counts.sum() < rounds:
        m = counts.sum() + 1
        scores = np.array([selection_score(y, (total + p) / m, labels, scoring) for p in probas])
        j = int(np.argmax(np.where(np.isfinite(scores), scores, -np.inf)))
        counts[j] += 1
        total += probas[j]
        trace.append(float(scores[j]))
    return counts, trace


def best_threshold(y, p_second, metric: str = "accuracy") -> float:
    """The decision threshold on the second class's probability that maximizes ``metric``
    ("accuracy" or "balanced_accuracy") of ``y`` (0/1) on these rows: candidates are 0.5 and the
    midpoints between consecutive distinct probabilities; of the best ones, the nearest to 0.5."""
    y = np.asarray(y)
    p = np.asarray(p_second, dtype=float)
    levels = np.unique(p)
    cuts = np.unique(np.r_[0.5, (levels[:-1] + levels[1:]) / 2])
    cuts = cuts[(cuts > 0) & (cuts < 1)]
    pred = p[None, :] >= cuts[:, None]
    pos = y == 1
    if metric == "accuracy":
        scores = (pred == pos[None, :]).mean(axis=1)
    elif metric == "balanced_accuracy":
        tpr = pred[:, pos].mean(axis=1) if pos.any() else np.zeros(len(cuts))
        tnr = (~pred[:, ~pos]).mean(axis=1) if (~pos).any() else np.zeros(len(cuts))
        scores = (tpr + tnr) / 2
    else:
        raise ValueError(f"metric: accuracy or balanced_accuracy, not {metric!r}")
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


@dataclass
class Candidate:
    """One (feature choice, head) and its tuning: the chosen ``head__`` params and their score."""

    sets: list[str]
    head: str
    best: dict[str, Any]
    best_score: float | None = None

    @property
    def name(self) -> str:
        return f"{'+'.join(self.sets)}/{self.head}"


@dataclass
class EnsembleSettings:
    """How candidates are built and selected (one object handed to the worker processes)."""

    pca: Any
    select_k: int | None
    variance_threshold: float | None
    fusion_weights: str
    class_weight: Any
    search: str
    seed: int
    cv: int
    tuner: Tuner
    rounds: int
    n_init: int
    scoring: str
    decision: str = "argmax"


def candidate_model(table, cand: Candidate, s: EnsembleSettings):
    """The unfitted, tuned, calibrated pipeline of ``cand`` over all columns of ``table``
    (head "ordinal-NAME": head NAME inside a Frank & Hall :class:`OrdinalClassifier`)."""
    ordinal = cand.head.startswith(ORDINAL_PREFIX)
    spec = head_plan(cand.head[len(ORDINAL_PREFIX):] if ordinal else cand.head, class_weight=s.class_weight,
                     seed=s.seed, search=s.search)
    if ordinal:
        spec = ordinal_plan(spec)
    slices = {name: table.set_slices[name] for name in cand.sets}
    pipe = build_pipeline(slices, spec.estimator, pca=s.pca, select_k=s.select_k,
                          variance_threshold=s.variance_threshold, fusion_weights=s.fusion_weights, seed=s.seed)
    pipe = clone(pipe).set_params(**cand.best)
    if spec.calibrate:
        pipe.steps[-1] = ("head", CalibratedHead(pipe.steps[-1][1]))
    return pipe, spec


def _tune_and_predict(table, plan, cand: Candidate, s: EnsembleSettings, train_idx, val_idx, sel_rows,
                      oof_folds):
    """In a worker: tune ``cand`` (unless already tuned), then its probabilities on ``sel_rows``
    (fitted on ``train_idx`` when selecting on val, else out-of-fold over ``oof_folds``)."""
    X, y = np.asarray(table.X), np.asarray(table.y)
    n_classes = len(table.class_names)
    try:
        if cand.best is None:
            pipe, spec = candidate_model(table, Candidate(cand.sets, cand.head, {}), s)
            if isinstance(pipe.steps[-1][1], CalibratedHead):
                pipe.steps[-1] = ("head", pipe.steps[-1][1].estimator)
            rows, cv_obj, groups = tuning_cv(plan, y, train_idx, s.cv, s.seed, val_idx)
            best, score, _ = s.tuner.tune(pipe, spec.space, X[rows], y[rows], cv_obj, groups)
            cand = Candidate(cand.sets, cand.head, best, score)
        model, _ = candidate_model(table, cand, s)
        proba = np.zeros((len(sel_rows), n_classes))
        if oof_folds is None:
            fitted = _fit_member(clone(model), X[train_idx], y[train_idx])
            proba[:] = _expand_proba(fitted, X[sel_rows], n_classes)
        else:
            for tr, te in oof_folds:
                fitted = _fit_member(clone(model), X[sel_rows[tr]], y[sel_rows[tr]])
                proba[te] = _expand_proba(fitted, X[sel_rows[te]], n_classes)
    except Exception as exc:  # a failing candidate is left out of the selection, and listed
        return cand, None, f"{cand.name}: {type(exc).__name__}: {exc}"
    return cand, proba, None


def _expand_proba(model, X, n_classes: int) -> np.ndarray:
    out = np.zeros((X.shape[0], n_classes))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(X)
    return out


def candidate_probas(table, plan, candidates: list[Candidate], s: EnsembleSettings, train_idx, val_idx,
                     *, select_on: str, n_jobs=None, progress=None, label: str = "ensemble"):
    """Tune every candidate and predict its probabilities on the selection rows, as
    :func:`build_ensemble` does before selecting: ``(sel_rows, n_folds, tuned, probas, failures)``.
    Selection rows are ``val_idx`` (select_on "val") or out-of-fold predictions over ``train_idx``
    (+ ``val_idx``) in ``n_folds`` folds from :func:`featx.evaluate.make_cv` (``s.cv``, ``s.seed``;
    0 on val); ``probas[i]`` (rows of ``sel_rows``, one column per class) belongs to ``tuned[i]``;
    a failing candidate is left out and described in ``failures``."""
    from joblib import delayed

    y = np.asarray(table.y)
    if select_on == "val":
        sel_rows, oof_folds = np.asarray(val_idx), None
    else:
        sel_rows = np.concatenate([train_idx, val_idx]) if val_idx is not None and val_idx.size else train_idx
        g = None if plan.groups is None else plan.groups[sel_rows]
        splitter, _, _ = make_cv(y[sel_rows], g, s.cv, s.seed)
        oof_folds = list(splitter.split(np.zeros(len(sel_rows)), y[sel_rows], g))
    progress = as_progress(progress)
    progress.start(len(candidates), label)
    tuned, probas, failures = [], [], []
    try:
        for cand, proba, err in run_parallel(
                (delayed(_tune_and_predict)(table, plan, c, s, train_idx, val_idx, sel_rows, oof_folds)
                 for c in candidates), n_jobs, prefer="processes"):
            if err:
                failures.append(err)
            else:
                tuned.append(cand)
                probas.append(proba)
            progress.advance(1, cand.name)
    finally:
        progress.close()
    return sel_rows, 0 if oof_folds is None else len(oof_folds), tuned, probas, failures


def build_ensemble(table, plan, candidates: list[Candidate], s: EnsembleSettings, train_idx, val_idx, fit_rows,
                   *, select_on: str, n_jobs=None, progress=None, label: str = "ensemble"):
    """Tune, select and fit: (fitted EnsembleClassifier, selection record). Selection rows are
    ``val_idx`` (select_on "val") or out-of-fold predictions over ``train_idx`` (+ ``val_idx``)."""
    y = np.asarray(table.y)
    sel_rows, n_folds, tuned, probas, failures = candidate_probas(
        table, plan, candidates, s, train_idx, val_idx, select_on=select_on, n_jobs=n_jobs, progress=progress,
        label=label)
    if not tuned:
        raise FeatxError("every ensemble candidate failed: " + "; ".join(failures), path=table.source)
    labels = list(range(len(table.class_names)))
    present = sorted(set(np.unique(y[sel_rows]).tolist()))
    cols = [labels.index(c) for c in present] if len(present) > 2 else labels
    counts, trace = greedy_selection(y[sel_rows], [p[:, cols] for p in probas], [labels[c] for c in cols],
                                     rounds=s.rounds, n_init=s.n_init, scoring=s.scoring)
    members = [(c.name, candidate_model(table, c, s)[0]) for c, k in zip(tuned, counts) if k]
    weights = [int(k) for k in counts if k]
    threshold = None
    if s.decision != "argmax" and len(labels) == 2 and len(present) == 2:
        mean = sum(k * p for k, p in zip(counts, probas)) / counts.sum()
        threshold = best_threshold(y[sel_rows], mean[:, 1], s.decision)
    model = EnsembleClassifier(members, weights, threshold=threshold, n_jobs=n_jobs).fit(
        np.asarray(table.X)[fit_rows], y[fit_rows])
    singles = [selection_score(y[sel_rows], p[:, cols], [labels[c] for c in cols], s.scoring) for p in probas]
    record = {
        "select_on": "val" if select_on == "val" else f"{n_folds}-fold out-of-fold",
        "n_selection_rows": int(len(sel_rows)), "scoring": s.scoring, "rounds": s.rounds, "n_init": s.n_init,
        "score": trace[-1], "trace": [round(t, 6) for t in trace],
        "decision": s.decision, "threshold": threshold,
        "candidates": [{"features": "+".join(c.sets), "head": c.head, "params": head_params(c.best),
                        "tuning_score": c.best_score, "selection_score": round(float(sc), 6), "weight": int(k)}
                       for c, sc, k in zip(tuned, singles, counts)],
        "failures": failures,
    }
    return model, record, tuned


def parse_ensemble_choices(features, choices) -> tuple[list[str], list[list[str]]]:
    """(all sets, feature choices). Without ``choices``: each set alone, plus all fused when there
    are several. ``choices``: "A;A+B" (or a list); every set must be among ``features``."""
    sets = parse_sets(features)
    if choices is None:
        out = [[name] for name in sets] + ([list(sets)] if len(sets) > 1 else [])
        return sets, out
    out = parse_choices(choices.replace(";", ",") if isinstance(choices, str) else choices)
    unknown = sorted({name for c in out for name in c} - set(sets))
    if unknown:
        raise FeatxError(f"--choices uses {', '.join(unknown)}, which --features does not list "
                         f"({','.join(sets)})")
    used = [name for name in sets if any(name in c for c in out)]
    return used, out


def fit_ensemble(
    cache,
    features: str | Sequence[str],
    *,
    heads: str | Sequence[str] = ENSEMBLE_HEADS,
    choices: str | Sequence | None = None,
    rounds: int = 50,
    n_init: int = 3,
    select_on: str = "auto",
    decision: str = "argmax",
    ordinal: bool | None = None,
    tuned: dict[tuple[str, str], dict] | None = None,
    search: str = "grid",
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
    plan=None,
    progress=None,
) -> FitResult:
    """Ensemble selection over every (choice in ``choices``) x (head in ``heads``), evaluated like
    :func:`featx.fit.fit` (test split, or outer CV with the whole selection nested in each fold).

    ``select_on``: "val" (the val split), "oof" (out-of-fold predictions over train+val), "auto"
    (the default: "oof"; more rows than a small val split, so fewer chance picks). ``decision``: how the ensemble turns probabilities into a class:
    "argmax", or (two classes) the threshold maximizing "accuracy" / "balanced_accuracy" of the
    selection rows' ensemble probabilities, stored in the model. ``ordinal``: True wraps every head
    in Frank & Hall (``ordinal-svm``, ...), False keeps them nominal, None (default) adds the
    ordinal copies beside the nominal heads when the class names are graded (ordered integers, 3 or
    more), said in a note, and selection picks among both. ``tuned`` maps ("A+B", head) to already-chosen head params (compare
    hands over its own), skipping their search. Returns a :class:`FitResult` with head "ensemble",
    the members and weights in ``best_params`` and the selection record in ``metrics["ensemble"]``.
    """
    t0 = time.perf_counter()
    progress = as_progress(progress)
    validate_fit_options(select_k=select_k, variance_threshold=variance_threshold, n_iter=n_iter, cv=cv,
                         n_boot=n_boot, seed=seed)
    for name, value, low in (("rounds", rounds, 1), ("n_init", n_init, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise FeatxError(f"{name} must be a whole number >= {low}, not {value!r}")
    if select_on not in SELECT_ON:
        raise FeatxError(f"unknown select_on {select_on!r}; choose {', '.join(SELECT_ON)}")
    if scoring not in SCORINGS:
        raise FeatxError(f"unknown scoring {scoring!r}; choose {', '.join(SCORINGS)}")
    if decision not in DECISIONS:
        raise FeatxError(f"unknown decision {decision!r}; choose {', '.join(DECISIONS)}")
    head_list = [head_name(h) for h in (heads.split(",") if isinstance(heads, str) else heads)]
    head_list = list(dict.fromkeys(head_list))
    all_sets, choice_list = parse_ensemble_choices(features, choices)
    table, dropped = load_table(cache, all_sets).check_finite(drop_nonfinite)
    y = np.asarray(table.y)
    if len(table.class_names) < 2 or len(np.unique(y[y >= 0])) < 2:
        raise FeatxError("fitting needs labelled samples of at least two classes", path=table.source)
    notes = [f"{dropped} rows with NaN/Inf features were dropped"] if dropped else []
    graded = graded_class_names(table.class_names)
    if ordinal or (ordinal is None and graded):
        ordinal_heads = [ORDINAL_PREFIX + h for h in head_list]
        head_list = ordinal_heads if ordinal else head_list + ordinal_heads
        if ordinal is None:
            notes.append(f"class names {' < '.join(table.class_names)} look like grades: ordinal (Frank & Hall) "
                         f"copies of the heads are candidates too; --nominal (ordinal=False) for nominal heads only")
    imbalance = imbalance_note(y, table.class_names)
    if imbalance and not (class_weight is not None and scoring == "balanced_accuracy"):
        notes.append(imbalance)
    if plan is None:
        plan = plan_evaluation(y, table.splits, table.effective_groups(), protocol, cv, seed, refit_on)
    notes += plan.notes
    s = EnsembleSettings(parse_pca(pca), select_k, variance_threshold, fusion_weights, class_weight, search, seed,
                         cv, Tuner(search=search, scoring=scoring, n_iter=n_iter, seed=seed, n_jobs=None),
                         rounds, n_init, scoring, decision)
    tuned = tuned or {}
    candidates = [Candidate(c, h, {PREFIX + k: v for k, v in tuned[("+".join(c), h)].items()}
                            if ("+".join(c), h) in tuned else None) for c in choice_list for h in head_list]
    n_classes = len(table.class_names)
    X = np.asarray(table.X)
    if plan.kind == "split":
        has_val = plan.val_idx.size > 0
        how = "oof" if select_on == "auto" else select_on
        if how == "val" and not has_val:
            raise FeatxError("select_on='val' needs val rows; this data has none (use 'oof')",
                             path=table.source)
        model, record, tuned_cands = build_ensemble(
            table, plan, candidates, s, plan.train_idx, plan.val_idx, plan.refit_idx, select_on=how,
            n_jobs=n_jobs, progress=progress)
        te = plan.test_idx
        y_pred, scores = predict_rows(model, X[te], n_classes)
        ev = Evaluation("test", y[te], y_pred, scores, table.class_names, table.ids[te], table.paths[te],
                        splits=table.splits[te])
        metrics = {"test": metrics_block(ev, n_boot, seed)}
        if graded or ordinal:
            add_ordinal_metrics(metrics["test"], ev, n_boot, seed)
        n_fit = int(plan.refit_idx.size)
    else:
        oof_pred = np.full(len(y), -1, np.int64)
        oof_scores = np.full((len(y), n_classes), np.nan)
        fold_of = np.full(len(y), -1, np.int64)
        empty = np.zeros(0, np.int64)
        for k, (tr, te) in enumerate(plan.folds):
            fold_model, _, _ = build_ensemble(table, plan, candidates, s, tr, empty, tr, select_on="oof",
                                              n_jobs=n_jobs, progress=progress,
                                              label=f"ensemble, outer fold {k + 1}/{len(plan.folds)}")
            oof_pred[te], oof_scores[te] = predict_rows(fold_model, X[te], n_classes)
            fold_of[te] = k
        idx = np.concatenate([te for _, te in plan.folds])
        ev = Evaluation("cv", y[idx], oof_pred[idx], oof_scores[idx], table.class_names, table.ids[idx],
                        table.paths[idx], fold_of[idx], table.splits[idx])
        block = metrics_block(ev, n_boot, seed)
        if graded or ordinal:
            add_ordinal_metrics(block, ev, n_boot, seed)
        block["n_splits"] = plan.n_splits
        block["pooled"] = "metrics and ci95 are computed on the pooled out-of-fold predictions"
        metrics = {"cv": block}
        model = record = tuned_cands = None
        labelled = np.flatnonzero(y >= 0)
        n_fit = int(labelled.size)
        if final:
            model, record, tuned_cands = build_ensemble(table, plan, candidates, s, labelled, empty, labelled,
                                                        select_on="oof", n_jobs=n_jobs, progress=progress,
                                                        label="ensemble, final model")
    members = []
    if record is not None:
        members = [{"features": c["features"], "head": c["head"], "params": c["params"],
                    "weight": round(c["weight"] / rounds, 6)} for c in record["candidates"] if c["weight"]]
        if record["failures"]:
            notes.append(f"{len(record['failures'])} ensemble candidates failed: " + "; ".join(record["failures"]))
    best_params = {"members": members}
    options = dict(search=search, scoring=scoring, cv=cv, protocol=plan.kind, refit_on=refit_on, pca=s.pca,
                   select_k=select_k, variance_threshold=variance_threshold, fusion_weights=fusion_weights,
                   class_weight=class_weight, seed=seed, heads=head_list,
                   choices=["+".join(c) for c in choice_list], rounds=rounds, n_init=n_init, select_on=select_on,
                   decision=decision, ordinal=ordinal)
    metrics["tuning"] = {"search": search, "scoring": scoring, "candidates": len(candidates),
                         "on": (record or {}).get("select_on", "nested in each outer fold")}
    if record is not None:
        metrics["ensemble"] = record
    metrics["protocol"] = plan.describe()
    metrics["model"] = {"head": "ensemble", "feature_sets": all_sets, "params": best_params,
                        "n_features": int(X.shape[1]), "options": options}
    if notes:
        metrics["notes"] = notes
    timings = {"total": time.perf_counter() - t0}
    result = FitResult("ensemble", all_sets, metrics, ev, best_params, plan, None, notes, timings)
    if final and model is not None:
        import featx

        result.bundle = ModelBundle(
            pipeline=model, class_names=list(table.class_names), classes=[int(c) for c in model.classes_],
            feature_sets=all_sets, set_configs={name: dict(table.configs.get(name, {})) for name in all_sets},
            set_dims=table.set_dims(), head="ensemble", params=best_params, options=options,
            metrics=to_jsonable(metrics),
            training={"cache": table.source, "n_rows": int(X.shape[0]), "n_fit": n_fit},
            featx_version=featx.__version__, ood=fit_bundle_ood(model, table, plan, seed))
    return result
