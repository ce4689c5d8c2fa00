"""Fit, evaluate, compare and apply classical heads on cached features.

The library side of ``featx fit``, ``featx compare`` and ``featx predict``: plain functions taking
plain values (a cache path or a table of arrays, names, numbers) and returning plain results.

Pipeline (one per model, fitted on training rows only; :mod:`featx.fit.pipeline`)::

    ColumnTransformer(one StandardScaler per feature set, equal-share block weights)
      -> VarianceThreshold -> [SelectKBest(f_classif)] -> [PCA] -> head

Evaluation protocol (:mod:`featx.fit.protocol`, see :func:`featx.evaluate.plan_evaluation`):

* the data's own split when labelled rows are marked train and test: hyper-parameters are tuned on
  the val rows (``PredefinedSplit``) when there are some, else by (grouped) stratified CV inside
  train; the chosen model is refitted on train+val (default; ``refit_on="train"`` to keep val out)
  and reported on test with seeded bootstrap 95% CIs;
* otherwise stratified k-fold CV (``StratifiedGroupKFold`` whenever samples carry groups, so no
  patient is on both sides of a fold), with the search nested inside each outer training fold;
  the saved model is tuned and refitted on all labelled rows.

Modules: ``tables`` (set names, loading, checks), ``pipeline``, ``search`` (heads, tuning),
``results``, ``protocol``, ``fitting`` (:func:`fit`), ``comparing`` (:func:`compare`),
``prediction`` (:func:`predict`), ``ensemble`` (:func:`fit_ensemble`: greedy ensemble selection
over feature choices x heads, one :class:`EnsembleClassifier` bundle).
"""
from __future__ import annotations

from featx.fit.comparing import compare, leader_row, run_line
from featx.fit.ensemble import ENSEMBLE_HEADS, EnsembleClassifier, fit_ensemble, greedy_selection
from featx.fit.fitting import fit, ordinal_plan, validate_fit_options
from featx.fit.pipeline import Reduce, block_weights, build_pipeline, parse_pca
from featx.fit.prediction import (
    match_sets,
    model_table,
    predict,
    predict_table,
    prediction_summary,
)
from featx.fit.protocol import predict_rows, train_fold
from featx.fit.results import SUMMARY_KEYS, CompareResult, Evaluation, FitResult, metrics_block, prediction_frame
from featx.fit.search import SCORINGS, SEARCHES, HeadPlan, Tuner, auc_scorer, head_plan, make_scorer, search_space
from featx.fit.tables import (
    check_finite,
    effective_groups,
    imbalance_note,
    load_table,
    parse_choices,
    parse_sets,
    subset_table,
    table_from_arrays,
)
from featx.table import FeatureTable

__all__ = [
    "ENSEMBLE_HEADS", "EnsembleClassifier", "fit_ensemble", "greedy_selection", "ordinal_plan",
    "CompareResult", "Evaluation", "FeatureTable", "FitResult", "HeadPlan", "Reduce",
    "SCORINGS", "SEARCHES", "SUMMARY_KEYS", "Tuner", "auc_scorer", "block_weights", "build_pipeline",
    "check_finite", "compare", "effective_groups",
    "fit", "head_plan", "imbalance_note", "leader_row", "load_table", "make_scorer", "match_sets",
    "metrics_block", "model_table", "parse_choices", "parse_pca", "parse_sets", "predict", "predict_rows",
    "predict_table", "prediction_frame", "prediction_summary", "run_line", "search_space", "subset_table",
    "table_from_arrays", "train_fold", "validate_fit_options",
]
