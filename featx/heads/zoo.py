"""The classical heads featx trains on cached features, and their default search spaces.

``make_head(name, **params)`` returns an unfitted scikit-learn classifier; ``default_grid(name)``
returns the grid ``featx fit --search grid`` explores for it, ``default_distributions(name)`` the
distributions for ``--search random``. Parameter names are the head's own (no ``head__`` prefix).

Heads:
    svm      sklearn SVC, RBF kernel. No ``probability=True`` (deprecated in sklearn 1.9): scores
             come from ``decision_function``; wrap with :class:`CalibratedHead` for probabilities.
    rf       RandomForestClassifier.
    xgboost  :class:`XGBoostHead`, a thin sklearn wrapper over ``xgboost.XGBClassifier`` that
             accepts ``class_weight`` (turned into sample weights) and any label values.
    elm      :class:`ELMHead`: ``featx.heads.elm.ELMClassifier`` (extreme learning machine) with
             ``class_weight``.
    logreg   LogisticRegression (lbfgs, L2).
    knn      KNeighborsClassifier (ignores ``class_weight``: it has no notion of one).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import loguniform, randint, uniform
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted

from featx.errors import FeatxError
from featx.heads.elm import ELMClassifier

HEADS: tuple[str, ...] = ("svm", "rf", "xgboost", "elm", "logreg", "knn")


class XGBoostHead(ClassifierMixin, BaseEstimator):
    """``xgboost.XGBClassifier`` behind a plain sklearn interface.

    Adds ``class_weight`` (None, "balanced" or a dict, as in sklearn) by passing per-sample
    weights, encodes arbitrary labels to 0..K-1 and picks the binary or multi-class objective
    from the data. ``n_jobs`` defaults to 1 because featx parallelises over search candidates.
    """

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

        self._le = LabelEncoder().fit(y)
        self.classes_ = self._le.classes_
        y_enc = self._le.transform(y)
        weights = None
        if self.class_weight is not None:
            weights = compute_sample_weight(self.class_weight, y)
        if sample_weight is not None:
            weights = np.asarray(sample_weight, float) * (1.0 if weights is None else weights)
        n_classes = len(self.classes_)
        objective = "binary:logistic" if n_classes <= 2 else "multi:softprob"
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
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X):
        check_is_fitted(self, "booster_")
        proba = self.booster_.predict_proba(X)
        if proba.ndim == 1:  # pragma: no cover - xgboost always returns 2-D for classifiers
            proba = np.column_stack([1 - proba, proba])
        return proba

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class CalibratedHead(ClassifierMixin, BaseEstimator):
    """A head fitted on all the data, plus calibrated probabilities for heads that lack them.

    ``predict`` and ``decision_function`` are those of ``estimator`` fitted on all of ``X``
    (so accuracy and AUC are exactly the uncalibrated head's); ``predict_proba`` comes from
    ``CalibratedClassifierCV(estimator, ensemble=False)``, whose calibrator is fitted on
    out-of-fold decision scores: the replacement sklearn 1.9 recommends for
    ``SVC(probability=True)``.
    """

    def __init__(self, estimator=None, method: str = "sigmoid", cv: int = 5):
        self.estimator = estimator
        self.method = method
        self.cv = cv

    def fit(self, X, y, **fit_params):
        y = np.asarray(y)
        _, counts = np.unique(y, return_counts=True)
        cv = int(max(2, min(self.cv, counts.min())))
        self.calibrated_ = CalibratedClassifierCV(
            clone(self.estimator), method=self.method, cv=cv, ensemble=False
        ).fit(X, y, **fit_params)
        self.estimator_ = self.calibrated_.calibrated_classifiers_[0].estimator
        self.classes_ = self.calibrated_.classes_
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def decision_function(self, X):
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)

    def predict_proba(self, X):
        check_is_fitted(self, "calibrated_")
        return self.calibrated_.predict_proba(X)


class ELMHead(ELMClassifier):
    """:class:`featx.heads.elm.ELMClassifier` plus sklearn's ``class_weight`` (given to the ridge
    read-out as per-sample weights)."""

    def __init__(self, n_hidden=1000, *, activation="tanh", alpha=1.0, weight_scale=1.0,
                 input_scaling="standard", chunk_size=2048, device="cpu", random_state=None,
                 class_weight=None):
        super().__init__(n_hidden, activation=activation, alpha=alpha, weight_scale=weight_scale,
                         input_scaling=input_scaling, chunk_size=chunk_size, device=device,
                         random_state=random_state)
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None):
        if self.class_weight is not None:
            w = compute_sample_weight(self.class_weight, y)
            sample_weight = w if sample_weight is None else np.asarray(sample_weight, float) * w
        return super().fit(X, y, sample_weight=sample_weight)


def _check_name(name: str) -> str:
    key = str(name).strip().lower()
    aliases = {"xgb": "xgboost", "lr": "logreg", "logistic": "logreg", "randomforest": "rf", "svc": "svm"}
    key = aliases.get(key, key)
    if key not in HEADS:
        raise FeatxError(f"unknown head {name!r}; choose from {', '.join(HEADS)}")
    return key


def make_head(name: str, *, class_weight: Any = None, seed: int | None = 0, **params):
    """An unfitted classifier for head ``name`` with featx's defaults, overridden by ``params``.

    ``class_weight`` ("balanced", a dict or None) and ``seed`` are passed to heads that take them.
    Unknown parameter names raise :class:`featx.errors.FeatxError`.
    """
    key = _check_name(name)
    if key == "svm":
        from sklearn.svm import SVC

        cls, base = SVC, dict(kernel="rbf", C=1.0, gamma="scale", class_weight=class_weight,
                              random_state=seed, cache_size=500)
    elif key == "rf":
        from sklearn.ensemble import RandomForestClassifier

        cls, base = RandomForestClassifier, dict(
            n_estimators=200, max_features="sqrt", min_samples_leaf=1,
            class_weight=("balanced_subsample" if class_weight == "balanced" else class_weight),
            random_state=seed, n_jobs=1)
    elif key == "xgboost":
        cls, base = XGBoostHead, dict(class_weight=class_weight, random_state=seed)
    elif key == "logreg":
        from sklearn.linear_model import LogisticRegression

        cls, base = LogisticRegression, dict(C=0.1, max_iter=3000, class_weight=class_weight,
                                             random_state=seed)
    elif key == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        cls, base = KNeighborsClassifier, dict(n_neighbors=11, weights="distance")
    else:  # elm
        # The head sees per-feature standardized inputs, and deep features are strongly
        # correlated, so unit-scale random projections saturate tanh; weight_scale 0.25 keeps the
        # hidden layer in its useful range (BreastMNIST Lite0 test AUC 0.852 -> 0.885).
        cls, base = ELMHead, dict(n_hidden=1000, alpha=100.0, weight_scale=0.25, class_weight=class_weight,
                                  random_state=seed)
    base.update(params)
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(base) - valid)
    if unknown:
        raise FeatxError(f"head {key!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(valid))}")
    return cls(**base)


def default_grid(name: str) -> dict[str, list]:
    """The parameter grid ``--search grid`` explores for head ``name``.

    Sized to stay cheap on two CPU cores (≤ 16 candidates): the aim is a sensible default, not
    an exhaustive search. Keys are the head's own parameter names.
    """
    key = _check_name(name)
    if key == "svm":
        return {"C": [0.3, 1.0, 3.0, 10.0, 30.0], "gamma": ["scale"]}
    if key == "rf":
        return {"max_features": ["sqrt", 0.05], "min_samples_leaf": [1, 3]}
    if key == "xgboost":
        return {"max_depth": [2, 4], "colsample_bytree": [0.1, 0.3]}
    if key == "logreg":
        return {"C": [0.001, 0.01, 0.1, 1.0]}
    if key == "knn":
        return {"n_neighbors": [5, 11, 21], "weights": ["uniform", "distance"]}
    return {"n_hidden": [1000, 2000], "alpha": [1.0, 10.0, 100.0, 1000.0]}


def default_distributions(name: str) -> dict[str, Any]:
    """scipy.stats distributions (or lists) for ``--search random`` on head ``name``."""
    key = _check_name(name)
    if key == "svm":
        return {"C": loguniform(0.1, 100.0)}
    if key == "rf":
        return {"max_features": uniform(0.01, 0.3), "min_samples_leaf": randint(1, 6)}
    if key == "xgboost":
        return {"max_depth": randint(2, 7), "learning_rate": loguniform(0.02, 0.3),
                "colsample_bytree": uniform(0.1, 0.7), "min_child_weight": loguniform(0.5, 10)}
    if key == "logreg":
        return {"C": loguniform(1e-4, 10.0)}
    if key == "knn":
        return {"n_neighbors": randint(3, 41), "weights": ["uniform", "distance"]}
    return {"n_hidden": randint(256, 3001), "alpha": loguniform(1e-2, 1e3)}


def has_scores(estimator) -> bool:
    """True if ``estimator`` (fitted or not) offers ``decision_function`` or ``predict_proba``."""
    return hasattr(estimator, "decision_function") or hasattr(estimator, "predict_proba")


CALIBRATED_HEADS = ("svm", "elm")


def needs_calibration(name: str) -> bool:
    """True for heads whose outputs are margins, not probabilities: SVC (no ``predict_proba``
    without the deprecated ``probability=True``) and the ELM (a softmax of least-squares
    outputs). featx wraps them in :class:`CalibratedHead` in saved models, so ``predict``
    reports calibrated per-class probabilities."""
    return _check_name(name) in CALIBRATED_HEADS
