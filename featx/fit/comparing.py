"""``compare``: every (feature choice x head) on the same rows and folds, as a leaderboard."""
from __future__ import annotations

import inspect
import json
import os
import time
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featx.errors import FeatxError
from featx.evaluate import plan_evaluation
from featx.fit.fitting import fit
from featx.fit.results import SUMMARY_KEYS, CompareResult, FitResult
from featx.fit.search import head_name, run_parallel
from featx.fit.tables import imbalance_note, load_table, parse_choices
from featx.progress import as_progress


def _run(index: int, table, sets: list[str], head: str, kwargs: dict):
    """One run in a worker: (index, result or None, error line or None, seconds)."""
    t = time.perf_counter()
    try:
        res = fit(table.select_sets(sets), sets, head, final=False, **kwargs)
    except Exception as exc:  # one failed run must not sink the others; it is listed, not hidden
        return index, None, f"{'+'.join(sets)} / {head}: {type(exc).__name__}: {exc}", time.perf_counter() - t
    return index, res, None, time.perf_counter() - t


def run_line(res: FitResult, seconds: float) -> str:
    """One line for a finished run: features, head, AUC, seconds."""
    auc = res.primary.get("auc")
    return (f"{'+'.join(res.feature_sets)} / {res.head}: AUC "
            f"{'n/a' if auc is None else f'{auc:.3f}'} ({seconds:.1f} s)")


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
    progress=None,
    ensemble: bool = False,
    ensemble_options: dict | None = None,
    **fit_kwargs,
) -> CompareResult:
    """Evaluate every (feature choice x head) on the same rows and folds; return a leaderboard
    sorted by the primary metric (AUC, then balanced accuracy).

    ``features``: "A,B,A+B" or [["A"], ["B"], ["A", "B"]]. All sets are loaded once, and only rows
    computed in every set are used, so all runs share rows and folds. Runs go in parallel over
    ``n_jobs`` processes (each run's own search is then sequential). Other keyword arguments
    go to :func:`featx.fit.fit` (search, pca, class_weight, scoring, n_boot, ...). With ``out``
    the leaderboard is written as CSV, Markdown (``.md``) and a plot (``.png``). ``progress``
    (a :class:`featx.progress.Progress`) gets a message line and a step per finished run.
    ``ensemble=True`` adds a row "ensemble": :func:`featx.fit.fit_ensemble` over all these choices
    and heads on the same rows, reusing each run's tuned parameters (``ensemble_options``: its
    ``rounds``, ``n_init``, ``select_on``; default selection on the val split when there is one).
    """
    from joblib import delayed

    t0 = time.perf_counter()
    progress = as_progress(progress)
    choices = parse_choices(features)
    head_list = [head_name(h) for h in (heads.split(",") if isinstance(heads, str) else heads)]
    all_sets = list(dict.fromkeys(s for c in choices for s in c))
    table, dropped = load_table(cache, all_sets).check_finite(drop_nonfinite)
    y = np.asarray(table.y)
    plan = plan_evaluation(y, table.splits, table.effective_groups(), protocol, cv, seed, refit_on)
    notes = [f"{dropped} rows with NaN/Inf features were dropped"] if dropped else []
    imbalance = imbalance_note(y, table.class_names)
    if imbalance and not (fit_kwargs.get("class_weight") is not None
                          and fit_kwargs.get("scoring") == "balanced_accuracy"):
        notes.append(imbalance)
    notes += plan.notes
    kwargs = dict(fit_kwargs, cv=cv, seed=seed, plan=plan, refit_on=refit_on)
    kwargs.setdefault("n_jobs", None)
    jobs = [(c, h) for c in choices for h in head_list]
    outputs: list[Any] = [None] * len(jobs)
    progress.start(len(jobs), "compare")
    try:
        for index, res, err, secs in run_parallel((delayed(_run)(i, table, c, h, kwargs)
                                                   for i, (c, h) in enumerate(jobs)),
                                                  n_jobs, unordered=True, prefer="processes"):
            outputs[index] = (res, err, secs)
            progress.message(err if err else run_line(res, secs))
            progress.advance(1, f"{'+'.join(jobs[index][0])} / {jobs[index][1]}")
    finally:
        progress.close()
    rows, results, failures = [], [], []
    for res, err, secs in outputs:  # in the order asked for, whatever order they finished in
        if err:
            failures.append(err)
            continue
        results.append(res)
        rows.append(leader_row(res, secs))
    if ensemble and results:
        from featx.fit.ensemble import fit_ensemble

        t = time.perf_counter()
        tuned = {("+".join(r.feature_sets), r.head): r.best_params for r in results}
        ok_choices = [c for c in choices if any(("+".join(c), h) in tuned for h in head_list)]
        accepted = set(inspect.signature(fit_ensemble).parameters) - {"plan", "refit_on", "cv", "seed", "n_jobs"}
        ens_kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        # selected on the val predictions the runs already tuned on (quick); out-of-fold without val rows
        ens_kwargs.setdefault("select_on", "val" if plan.kind == "split" and plan.val_idx.size else "oof")
        ens = fit_ensemble(table, all_sets, heads=[h for h in head_list if any((("+".join(c), h) in tuned)
                                                                               for c in ok_choices)],
                           choices=ok_choices, tuned=tuned, plan=plan, cv=cv, seed=seed, refit_on=refit_on,
                           final=False, n_jobs=n_jobs, **{**ens_kwargs, **(ensemble_options or {})})
        secs = time.perf_counter() - t
        progress.message(run_line(ens, secs))
        results.append(ens)
        row = leader_row(ens, secs)
        row["features"] = ";".join("+".join(c) for c in ok_choices)
        row["params"] = json.dumps(ens.best_params["members"], default=str)
        rows.append(row)
    if not rows:
        raise FeatxError("every run failed: " + "; ".join(failures), path=table.source)
    board = pd.DataFrame(rows)
    board = board.sort_values(["auc", "balanced_accuracy", "accuracy"], ascending=False,
                              na_position="last", kind="stable").reset_index(drop=True)
    board.insert(0, "rank", np.arange(1, len(board) + 1))
    board.attrs["failures"] = failures
    board.attrs["dropped_rows"] = dropped
    result = CompareResult(board, results, plan, time.perf_counter() - t0, notes)
    if out is not None:
        result.write(out)
    return result


def leader_row(res: FitResult, secs: float) -> dict[str, Any]:
    """One leaderboard row: features, head, headline metrics with CIs, params, seconds."""
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
