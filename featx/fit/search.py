"""Heads and hyper-parameter search.

A :class:`HeadPlan` is what ``fit`` trains: an unfitted estimator, its fixed parameters and its
search space (empty: no search, e.g. the Ray Train XGBoost head). A :class:`Tuner` picks the
candidate with the best mean score over the tuning folds, exactly as ``GridSearchCV`` /
``RandomizedSearchCV`` would (same candidates, same folds, same scorer, ties to the first
candidate), but drives the loop itself so it can report progress (candidate k of n, fold f).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import get_scorer
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv

from featx.errors import FeatxError
from featx.evaluate import auc_score, score_matrix
from featx.heads import zoo
from featx.jsonutil import plain
from featx.progress import NullProgress

SCORINGS = ("auc", "balanced_accuracy", "accuracy")
SEARCHES = ("grid", "random", "none")
PREFIX = "head__"


def head_name(name: str) -> str:
    """The canonical name of a zoo head ("SVC" -> "svm"); FeatxError for unknown names."""
    return zoo.check_head_name(name)


def auc_scorer(estimator, X, y) -> float:
    """Scorer for searches: AUC from decision scores (binary, or one-vs-rest macro)."""
    return auc_score(np.asarray(y), score_matrix(estimator, X), list(estimator.classes_))


def make_scorer(scoring: str):
    """The scorer callable ``(estimator, X, y) -> float`` for ``scoring`` (one of SCORINGS)."""
    if scoring not in SCORINGS:
        raise FeatxError(f"unknown scoring {scoring!r}; choose {', '.join(SCORINGS)}")
    return auc_scorer if scoring == "auc" else get_scorer(scoring)


def search_space(head: str, search: str, grid: dict | None = None) -> dict:
    """The ``head__``-prefixed search space for ``search`` ("grid", "random", "none")."""
    if search not in SEARCHES:
        raise FeatxError(f"unknown search {search!r}; choose {', '.join(SEARCHES)}")
    if search == "none":
        return {}
    space = grid if grid is not None else (
        zoo.default_grid(head) if search == "grid" else zoo.default_distributions(head))
    return {PREFIX + k: (v if isinstance(v, (list, tuple)) or hasattr(v, "rvs") else [v])
            for k, v in space.items()}


def head_params(prefixed: dict[str, Any]) -> dict[str, Any]:
    """{"head__C": 3} -> {"C": 3}."""
    return {k[len(PREFIX):]: v for k, v in prefixed.items()}


@dataclass
class HeadPlan:
    """What :func:`featx.fit.fit` trains.

    name      the head's name, recorded in the bundle and reports ("svm")
    estimator the unfitted classifier with its fixed parameters set
    params    those fixed parameters (recorded with the tuned ones)
    space     ``head__``-prefixed search space; empty = no search
    calibrate wrap the saved model's head in :class:`featx.heads.zoo.CalibratedHead`
    options   extra entries for the model's recorded options (e.g. the engine)
    trained_on  where training runs, recorded as the tuning's "on" when nothing is searched
    notes     notes for the result
    """

    name: str
    estimator: Any
    params: dict[str, Any] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    calibrate: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    trained_on: str | None = None
    notes: list[str] = field(default_factory=list)


def head_plan(name: str, *, params: dict[str, Any] | None = None, class_weight=None, seed: int = 0,
              search: str = "grid", grid: dict | None = None) -> HeadPlan:
    """The zoo head ``name`` with fixed ``params`` (left out of the search) and the space of ``search``."""
    name = head_name(name)
    fixed = dict(params or {})
    weighted = zoo.head_spec(name).supports_class_weight
    notes = [f"class_weight is ignored by the {name} head"] if class_weight is not None and not weighted else []
    estimator = zoo.make_head(name, class_weight=class_weight if weighted else None, seed=seed, **fixed)
    space = {k: v for k, v in search_space(name, search, grid).items() if k[len(PREFIX):] not in fixed}
    return HeadPlan(name, estimator, fixed, space, zoo.needs_calibration(name), notes=notes)


def run_parallel(tasks, n_jobs=None, *, unordered: bool = False, **parallel_options):
    """joblib ``Parallel`` over ``tasks`` (``delayed`` calls), yielding results as they finish:
    in order, or in finishing order with ``unordered``. Backends that cannot stream results
    (Ray's joblib backend) return them all at the end, in order."""
    from joblib import Parallel
    from joblib.parallel import get_active_backend

    streams = getattr(get_active_backend()[0], "supports_return_generator", False)
    return_as = ("generator_unordered" if unordered else "generator") if streams else "list"
    return Parallel(n_jobs=n_jobs, return_as=return_as, **parallel_options)(tasks)


def _fit_and_score(pipe, params: dict, X, y, train, test, scorer) -> tuple[float, str | None]:
    """One candidate on one tuning fold: (score, error message or None)."""
    try:
        model = clone(pipe).set_params(**clone(params, safe=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            model.fit(X[train], y[train])
            return float(scorer(model, X[test], y[test])), None
    except Exception as exc:  # a failing candidate scores NaN, as with error_score=np.nan
        return float("nan"), f"{type(exc).__name__}: {exc}"


@dataclass
class Tuner:
    """Hyper-parameter search: ``search`` "grid" (every candidate), "random" (``n_iter`` draws,
    seeded) or "none"; candidates scored by ``scoring`` over the tuning folds, ``n_jobs`` fits
    at a time (joblib, so ``joblib.parallel_backend("ray")`` spreads them over a cluster)."""

    search: str = "grid"
    scoring: str = "auc"
    n_iter: int = 20
    seed: int = 0
    n_jobs: int | None = None

    def candidates(self, space: dict) -> list[dict]:
        """The candidates GridSearchCV / RandomizedSearchCV would try, in their order."""
        if not space:
            return [{}]
        if self.search == "random":
            return list(ParameterSampler(space, n_iter=self.n_candidates(space), random_state=self.seed))
        return list(ParameterGrid(space))

    def n_candidates(self, space: dict) -> int:
        if not space:
            return 1
        if self.search == "random" and any(hasattr(v, "rvs") for v in space.values()):
            return self.n_iter
        n = len(ParameterGrid(space))
        return min(n, self.n_iter) if self.search == "random" else n

    def tune(self, pipe, space: dict, X, y, cv, groups=None, progress=None,
             label: str = "search") -> tuple[dict, float | None, int]:
        """(best ``head__`` params, their mean score or None, number of candidates). With one
        candidate nothing is fitted. ``progress`` gets a stage of candidates x folds."""
        n_cand = self.n_candidates(space)
        if n_cand <= 1:
            params = {k: (v[0] if isinstance(v, (list, tuple)) else v.rvs(random_state=self.seed))
                      for k, v in space.items()}
            return params, None, 1
        from joblib import delayed

        cands = self.candidates(space)
        splits = list(check_cv(cv, y, classifier=True).split(X, y, groups))
        scorer = make_scorer(self.scoring)
        progress = progress or NullProgress()
        progress.start(len(cands) * len(splits), label)
        scores = np.full((len(cands), len(splits)), np.nan)
        errors = []
        jobs = ((c, f, params, tr, te) for c, params in enumerate(cands) for f, (tr, te) in enumerate(splits))
        try:
            outputs = run_parallel((delayed(_fit_and_score)(pipe, params, X, y, tr, te, scorer)
                                    for _, _, params, tr, te in jobs), self.n_jobs)
            order = [(c, f) for c in range(len(cands)) for f in range(len(splits))]
            for (c, f), (score, err) in zip(order, outputs):
                scores[c, f] = score
                if err:
                    errors.append(err)
                progress.advance(1, f"candidate {c + 1}/{len(cands)}, fold {f + 1}/{len(splits)}")
        finally:
            progress.close()
        means = scores.mean(axis=1)
        if not np.isfinite(means).any():
            raise FeatxError("every hyper-parameter candidate failed during the search"
                             + (f" (first: {errors[0]})" if errors else ""))
        best = int(np.nanargmax(means))
        return {k: plain(v) for k, v in cands[best].items()}, float(means[best]), n_cand
