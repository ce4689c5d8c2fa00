"""scikit-learn wrappers featx adds around heads: XGBoost behind the sklearn API, calibration of
margin heads, and the ELM with ``class_weight``. Each declares ``_parameter_constraints`` and
passes sklearn's estimator checks (see tests/test_estimator_checks.py for the listed exceptions).
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.heads.elm import ELMClassifier, check_sample_weight

_CLASS_WEIGHT = [StrOptions({"balanced"}), dict, None]


def class_sample_weight(class_weight, y, sample_weight=None) -> np.ndarray | None:
    """Per-sample weights combining ``class_weight`` (None, "balanced" or a dict) and ``sample_weight``.

    "balanced" counts each class by its total sample weight (not its rows), so integer weights
    give the same fit as repeated rows; None and None give None.
    """
    if sample_weight is None:
        return None if class_weight is None else compute_sample_weight(class_weight, y)
    sw = check_sample_weight(sample_weight, len(y))
    if class_weight is None:
        return sw
    if class_weight != "balanced":
        return sw * compute_sample_weight(class_weight, y)
    classes, idx = np.unique(y, return_inverse=True)
    totals = np.bincount(idx, weights=sw, minlength=len(classes))
    per_class = np.divide(sw.sum(), len(classes) * totals, out=np.zeros_like(totals), where=totals > 0)
    return sw * per_class[idx]


class XGBoostHead(ClassifierMixin, BaseEstimator):
    """``xgboost.XGBClassifier`` behind a plain sklearn interface.

    Adds ``class_weight`` (None, "balanced" or a dict, as in sklearn) by passing per-sample
    weights, encodes arbitrary labels to 0..K-1 and picks the binary or multi-class objective
    from the data. ``n_jobs`` defaults to 1 because featx parallelises over search candidates.
    Inputs are validated as sklearn's own estimators do (finite values, dense or sparse).
    """

    _parameter_constraints: dict = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_depth": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "subsample": [Interval(Real, 0, 1, closed="right")],
        "colsample_bytree": [Interval(Real, 0, 1, closed="right")],
        "min_child_weight": [Interval(Real, 0, None, closed="left")],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "class_weight": _CLASS_WEIGHT,
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "tree_method": [StrOptions({"hist", "approx", "exact", "auto"})],
    }

    def __init__(
        self,
        n_estimators: int = 200,
        max_depth: int = 3,
        learning_rate: float = 0.1,
        subsample: float = 0.8,
        colsample_bytree: float = 0.3,
        min_child_weight: float = 1.0,
        reg_lambda: float = 1.0,
        class_weight: Any = None,
        random_state: int | None = 0,
        n_jobs: int = 1,
        tree_method: str = "hist",
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.tree_method = tree_method

    def fit(self, X, y, sample_weight=None):
        from xgboost import XGBClassifier

        self._validate_params()
        X, y = validate_data(self, X, y, accept_sparse=("csr", "csc"), dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self._le = LabelEncoder().fit(y)
        self.classes_ = self._le.classes_
        y_enc = self._le.transform(y)
        weights = class_sample_weight(self.class_weight, y, sample_weight)
        objective = "binary:logistic" if len(self.classes_) <= 2 else "multi:softprob"
        self.booster_ = XGBClassifier(
            objective=objective,
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            tree_method=self.tree_method,
            verbosity=0,
        )
        self.booster_.fit(X, y_enc, sample_weight=weights)
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "booster_")
        X = validate_data(self, X, reset=False, accept_sparse=("csr", "csc"), dtype=(np.float64, np.float32))
        proba = self.booster_.predict_proba(X)
        if proba.ndim == 1:  # pragma: no cover - xgboost always returns 2-D for classifiers
            proba = np.column_stack([1 - proba, proba])
        return proba

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class CalibratedHead(ClassifierMixin, BaseEstimator):
    """A head fitted on all the data, plus calibrated probabilities for heads that lack them.

    ``predict`` and ``decision_function`` are those of ``estimator`` fitted on all of ``X``
    (so accuracy and AUC are exactly the uncalibrated head's); ``predict_proba`` comes from
    ``CalibratedClassifierCV(estimator, ensemble=False)``, whose calibrator is fitted on
    out-of-fold decision scores: the replacement sklearn 1.9 recommends for
    ``SVC(probability=True)``.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "decision_function"]), HasMethods(["fit", "predict_proba"])],
        "method": [StrOptions({"sigmoid", "isotonic", "temperature"})],
        "cv": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, estimator=None, method: str = "sigmoid", cv: int = 5):
        self.estimator = estimator
        self.method = method
        self.cv = cv

    def fit(self, X, y, **fit_params):
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        weights = fit_params.get("sample_weight")
        if weights is not None and np.unique(y[np.asarray(weights) > 0]).size < 2:
            raise ValueError("sample_weight: the samples with positive weight are all of one class; "
                             "a classifier needs two")
        _, counts = np.unique(y, return_counts=True)
        cv = int(max(2, min(self.cv, counts.min())))
        self.calibrated_ = CalibratedClassifierCV(
            clone(self.estimator), method=self.method, cv=cv, ensemble=False
        ).fit(X, y, **fit_params)
        self.estimator_ = self.calibrated_.calibrated_classifiers_[0].estimator
        self.classes_ = self.calibrated_.classes_
        return self

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(validate_data(self, X, reset=False, dtype=(np.float64, np.float32)))

    def decision_function(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(validate_data(self, X, reset=False, dtype=(np.float64, np.float32)))

    def predict_proba(self, X):
        check_is_fitted(self, "calibrated_")
        return self.calibrated_.predict_proba(validate_data(self, X, reset=False, dtype=(np.float64, np.float32)))


class ELMHead(ELMClassifier):
    """:class:`featx.heads.elm.ELMClassifier` plus sklearn's ``class_weight`` (given to the ridge
    read-out as per-sample weights)."""

    _parameter_constraints: dict = {**ELMClassifier._parameter_constraints, "class_weight": _CLASS_WEIGHT}

    def __init__(self, n_hidden=1000, *, activation="tanh", alpha=1.0, weight_scale=1.0,
                 input_scaling="standard", chunk_size=2048, device="cpu", random_state=None,
                 class_weight=None):
        super().__init__(n_hidden, activation=activation, alpha=alpha, weight_scale=weight_scale,
                         input_scaling=input_scaling, chunk_size=chunk_size, device=device,
                         random_state=random_state)
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None):
        if self.class_weight is not None and y is not None:
            self._validate_params()
            sample_weight = class_sample_weight(self.class_weight, np.asarray(y).ravel(), sample_weight)
        return super().fit(X, y, sample_weight=sample_weight)
