"""``fit``: one head on feature sets of a cache, evaluated, with the bundle to save."""
from __future__ import annotations

import math
import time
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np

from featx.bundle import ModelBundle
from featx.errors import FeatxError
from featx.evaluate import EvalPlan, plan_evaluation
from featx.fit.pipeline import build_pipeline, parse_pca
from featx.fit.protocol import FitJob, run_cv, run_split
from featx.fit.results import FitResult
from featx.fit.search import PREFIX, HeadPlan, Tuner, head_params, head_plan
from featx.fit.tables import imbalance_note, load_table, parse_sets
from featx.heads.ordinal import OrdinalClassifier, graded_class_names
from featx.jsonutil import to_jsonable
from featx.ood import fit_bundle_ood
from featx.progress import as_progress


def _whole(name: str, value, low: int, what: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (Integral, Real)) \
            or not math.isfinite(value) or value != int(value) or value < low:
        raise FeatxError(f"{name} must be {what}, not {value!r}")


def validate_fit_options(*, select_k=None, variance_threshold=0.0, n_iter=20, cv=5, n_boot=1000, seed=0) -> None:
    """Raise FeatxError naming the parameter and its accepted range for a value fit cannot use
    (``pca`` is checked by :func:`featx.fit.parse_pca`)."""
    if select_k is not None:
        _whole("select_k", select_k, 1, "a whole number >= 1 (features kept by ANOVA F), or None")
    if variance_threshold is not None and (
            isinstance(variance_threshold, bool) or not isinstance(variance_threshold, Real)
            or not math.isfinite(variance_threshold) or variance_threshold < 0):
        raise FeatxError(f"variance_threshold must be a finite number >= 0 (0 drops constant columns), "
                         f"or None, not {variance_threshold!r}")
    _whole("n_iter", n_iter, 1, "a whole number >= 1 (random-search candidates)")
    _whole("cv", cv, 2, "a whole number >= 2 (folds)")
    _whole("n_boot", n_boot, 0, "a whole number >= 0 (bootstrap resamples; 0: no CIs)")
    _whole("seed", seed, 0, "a whole number >= 0")


def fit(
    cache,
    features: str | Sequence[str],
    head: str | HeadPlan = "svm",
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
    tuner: Tuner | None = None,
    progress=None,
    ordinal: bool | None = False,
    heads: str | Sequence[str] | None = None,
    choices: str | Sequence | None = None,
    rounds: int = 50,
    select_on: str = "auto",
    decision: str = "argmax",
) -> FitResult:
    """Fit head ``head`` on feature sets ``features`` of ``cache``, evaluate it, build the bundle.

    ``cache`` is a cache path or a table (:func:`featx.fit.table_from_arrays`, or
    ``featx.load_features``'s result). ``head`` is a zoo name ("svm") or a :class:`HeadPlan`
    (an estimator with its own search space; ``params``, ``class_weight``, ``search`` and
    ``grid`` then do not apply to it). ``params`` fixes head parameters (its own names); ``grid``
    replaces the default search space. ``pca`` is an int, a variance fraction or a string
    ("128", "0.95"). ``class_weight="balanced"`` reweights classes in every head that supports it
    (all but knn). ``tuner`` replaces the search built from ``search``/``scoring``/``n_iter``/
    ``n_jobs``. ``final=False`` skips the final refit in the CV protocol (compare uses it);
    ``plan`` fixes the folds (compare shares them). ``progress``: a
    :class:`featx.progress.Progress` told candidate k of n and the fold while searching.
    ``ordinal=True`` wraps the head in :class:`featx.heads.ordinal.OrdinalClassifier` (classes in
    sorted order are grades); None decides from the class names (ordered integers, 3 or more:
    graded, said in a note). Graded tasks also get ``qwk`` and ``mae_grade`` in the metrics.
    ``head="ensemble"``: :func:`featx.fit.fit_ensemble` over ``heads`` x ``choices`` (``rounds``,
    ``select_on``, ``decision``, ``ordinal``); ``params``, ``grid`` and ``tuner`` do not apply to it.
    """
    if head == "ensemble":
        from featx.fit.ensemble import ENSEMBLE_HEADS, fit_ensemble

        if params or grid is not None or tuner is not None:
            raise FeatxError("params, grid and tuner do not apply to head='ensemble' (pick one head)")
        return fit_ensemble(cache, features, heads=heads or ENSEMBLE_HEADS, choices=choices, rounds=rounds,
                            select_on=select_on, decision=decision, ordinal=ordinal, search=search, n_iter=n_iter, cv=cv, protocol=protocol,
                            refit_on=refit_on, pca=pca, select_k=select_k, variance_threshold=variance_threshold,
                            fusion_weights=fusion_weights, class_weight=class_weight, scoring=scoring, seed=seed,
                            n_jobs=n_jobs, n_boot=n_boot, drop_nonfinite=drop_nonfinite, final=final, plan=plan,
                            progress=progress)
    t0 = time.perf_counter()
    progress = as_progress(progress)
    pca = parse_pca(pca)
    validate_fit_options(select_k=select_k, variance_threshold=variance_threshold, n_iter=n_iter, cv=cv,
                         n_boot=n_boot, seed=seed)
    spec = head if isinstance(head, HeadPlan) else head_plan(head, params=params, class_weight=class_weight,
                                                             seed=seed, search=search, grid=grid)
    tuner = tuner or Tuner(search=search, scoring=scoring, n_iter=n_iter, seed=seed, n_jobs=n_jobs)
    sets = parse_sets(features)
    table, dropped = load_table(cache, sets).check_finite(drop_nonfinite)
    notes = [f"{dropped} rows with NaN/Inf features were dropped"] if dropped else []
    notes += spec.notes
    y = np.asarray(table.y)
    if len(table.class_names) < 2 or len(np.unique(y[y >= 0])) < 2:
        raise FeatxError("fitting needs labelled samples of at least two classes", path=table.source)
    graded = graded_class_names(table.class_names)
    if ordinal is None:
        ordinal = graded
        if graded:
            notes.append(f"class names {' < '.join(table.class_names)} look like grades: ordinal "
                         f"{spec.name} head (Frank & Hall); --nominal (ordinal=False) for a nominal one")
    if ordinal:
        spec = ordinal_plan(spec)
    imbalance = imbalance_note(y, table.class_names)
    if imbalance and not (class_weight is not None and tuner.scoring == "balanced_accuracy"):
        notes.append(imbalance)
    if plan is None:
        plan = plan_evaluation(y, table.splits, table.effective_groups(), protocol, cv, seed, refit_on)
    notes += plan.notes
    pipe = build_pipeline(table.set_slices, spec.estimator, pca=pca, select_k=select_k,
                          variance_threshold=variance_threshold, fusion_weights=fusion_weights, seed=seed)
    job = FitJob(pipe, spec, tuner, table, plan, cv, seed, n_boot, final, progress)
    outcome = run_split(job) if plan.kind == "split" else run_cv(job)
    if spec.trained_on and not spec.space:
        outcome.tuning["on"] = spec.trained_on

    best_params = {**spec.params, **head_params(outcome.best)}
    timings = dict(outcome.timings, total=time.perf_counter() - t0)
    options = dict(search=tuner.search, scoring=tuner.scoring, cv=cv, protocol=plan.kind, refit_on=refit_on,
                   pca=pca, select_k=select_k, variance_threshold=variance_threshold,
                   fusion_weights=fusion_weights, class_weight=class_weight, seed=seed, **spec.options)
    metrics = dict(outcome.metrics)
    if graded or ordinal:
        add_ordinal_metrics(metrics[outcome.evaluation.name], outcome.evaluation, n_boot, seed)
    metrics["tuning"] = outcome.tuning
    metrics["protocol"] = plan.describe()
    metrics["model"] = {"head": spec.name, "feature_sets": sets, "params": best_params,
                        "n_features": int(table.X.shape[1]), "options": options}
    if notes:
        metrics["notes"] = notes
    result = FitResult(spec.name, sets, metrics, outcome.evaluation, best_params, plan, None, notes, timings)
    if outcome.model is not None:
        import featx

        result.bundle = ModelBundle(
            pipeline=outcome.model,
            class_names=list(table.class_names),
            classes=[int(c) for c in outcome.model.classes_],
            feature_sets=sets,
            set_configs={s: dict(table.configs.get(s, {})) for s in sets},
            set_dims=table.set_dims(),
            head=spec.name,
            params=best_params,
            options=options,
            metrics=to_jsonable(metrics),
            training={"cache": table.source, "n_rows": int(table.X.shape[0]),
                      "n_fit": int(plan.refit_idx.size if plan.kind == "split" else (y >= 0).sum())},
            featx_version=featx.__version__,
            ood=fit_bundle_ood(outcome.model, table, plan, seed),
        )
    return result


def ordinal_plan(spec: HeadPlan) -> HeadPlan:
    """``spec``'s head inside an :class:`OrdinalClassifier` (its search space moved to ``base``)."""
    base = spec.estimator
    if spec.calibrate and not hasattr(base, "predict_proba"):
        from featx.heads.wrappers import CalibratedHead
        base = CalibratedHead(base)
        inner = PREFIX + "base__estimator__"
    else:
        inner = PREFIX + "base__"
    space = {inner + k[len(PREFIX):]: v for k, v in spec.space.items()}
    return HeadPlan(f"ordinal-{spec.name}", OrdinalClassifier(base), dict(spec.params), space, False,
                    dict(spec.options), spec.trained_on, list(spec.notes))


def add_ordinal_metrics(block: dict, ev, n_boot: int, seed: int) -> None:
    """Add quadratic weighted kappa and mean absolute grade error (with their CIs) to ``block``."""
    from featx.evaluate import ordinal_metrics

    om = ordinal_metrics(ev.y_true, ev.y_pred, list(range(len(ev.class_names))), n_boot=n_boot, seed=seed)
    ci = om.pop("ci95", None)
    block.update(om)
    if ci and "ci95" in block:
        block["ci95"].update(ci)
