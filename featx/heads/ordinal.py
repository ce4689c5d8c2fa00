"""Ordinal classification for graded labels: the Frank & Hall (2001) decomposition over any head.

For K ordered classes c_0 < ... < c_{K-1}, K-1 binary copies of ``base`` learn P(y > c_k); the
class probabilities are their differences: P(c_0) = 1 - P(y > c_0), P(c_k) = P(y > c_{k-1}) -
P(y > c_k), P(c_{K-1}) = P(y > c_{K-2}) (negative differences from non-monotone estimates are
clipped to 0 and each row renormalized). A base without ``predict_proba`` (the SVM) is calibrated
with :class:`featx.heads.wrappers.CalibratedHead`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils._param_validation import HasMethods  # sklearn's own constraint type
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


class OrdinalClassifier(ClassifierMixin, BaseEstimator):
    """Frank & Hall ordinal classifier: ``K - 1`` copies of ``base`` on "grade above c_k".

    The order of the classes is their sorted order (``np.unique(y)``), so graded labels must sort
    as grades (0 < 1 < 2 ...). ``base`` defaults to a logistic regression. ``predict`` is the class
    of highest probability; ``expected_grade(X)`` the probability-weighted mean class index.
    """

    _parameter_constraints: dict = {
        "base": [HasMethods(["fit", "predict_proba"]), HasMethods(["fit", "decision_function"]), None],
    }

    def __init__(self, base=None):
        self.base = base

    def _make_base(self):
        if self.base is None:
            from sklearn.linear_model import LogisticRegression
            return LogisticRegression(max_iter=1000)
        est = clone(self.base)
        if not hasattr(est, "predict_proba"):
            from featx.heads.wrappers import CalibratedHead
            est = CalibratedHead(est)
        return est

    def fit(self, X, y, sample_weight=None):
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError("OrdinalClassifier needs samples of at least two classes; got one class")
        rank = np.searchsorted(self.classes_, y)
        self.estimators_ = []
        for k in range(self.classes_.size - 1):
            kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
            self.estimators_.append(self._make_base().fit(X, (rank > k).astype(np.int64), **kwargs))
        return self

    def _above(self, X) -> np.ndarray:
        """(n, K-1): P(grade > c_k) per threshold."""
        cols = []
        for est in self.estimators_:
            p = np.asarray(est.predict_proba(X), dtype=float)
            cls = list(est.classes_)
            cols.append(p[:, cls.index(1)] if 1 in cls else np.zeros(X.shape[0]))
        return np.column_stack(cols)

    def predict_proba(self, X):
        check_is_fitted(self, "estimators_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        above = self._above(X)
        n = X.shape[0]
        upper = np.column_stack([np.ones(n), above])
        lower = np.column_stack([above, np.zeros(n)])
        proba = np.clip(upper - lower, 0.0, None)
        total = proba.sum(axis=1, keepdims=True)
        flat = total[:, 0] <= 0
        proba[flat] = 1.0 / proba.shape[1]
        total[flat] = 1.0
        return proba / total

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def expected_grade(self, X) -> np.ndarray:
        """Probability-weighted mean class index (0 .. K-1) per row."""
        proba = self.predict_proba(X)
        return proba @ np.arange(proba.shape[1])


def graded_class_names(class_names: Sequence[str]) -> bool:
    """True when the class names are integers already in increasing order (e.g. "0", "1", "2",
    or grade folders "1".."4"): such labels are treated as ordinal grades."""
    try:
        values = [int(str(name).strip()) for name in class_names]
    except ValueError:
        return False
    return len(values) >= 3 and all(a < b for a, b in zip(values, values[1:]))
