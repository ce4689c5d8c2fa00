"""Out-of-distribution flags: how far a sample's features lie from the training data.

A model answers for any input, even one unlike anything it was trained on (a chest X-ray given to a
breast-ultrasound model). :class:`OODDetector` scores that distance in the feature space the head
sees (the pipeline's steps before the head: per-set scaling, block weights, selection/PCA) and
flags samples whose score exceeds a threshold calibrated out-of-fold on the training rows, so that
about ``false_flag_rate`` of new in-distribution samples are flagged.

Scores (``method``):

* ``"knn"`` (default): mean Euclidean distance to the ``n_neighbors`` nearest training rows
  (kept: at most ``max_reference`` rows, a random subset beyond that).
* ``"mahalanobis"``: Mahalanobis distance to the training mean under a Ledoit-Wolf shrunk covariance.

Measured on BreastMNIST through efficientnet_lite0 (logreg head, threshold at 5%): both flag all
140 chest X-rays, 40 blood-cell-like crops and 12 CT slices; on the BreastMNIST test split kNN
flags 12/156 (7.7%), Mahalanobis 10/156 (6.4%), a difference of two images. kNN is the default: it
stores the reference rows (n x d float32) rather than a d x d float64 precision matrix (13 MB for
1280 features) and assumes no Gaussian shape of the classes.

``ood_score`` is the distance divided by the threshold, so a sample is flagged when it is above 1.
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils._param_validation import Interval, StrOptions  # sklearn's own constraint types
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

_CHUNK = 1024


class OODDetector(OutlierMixin, BaseEstimator):
    """Distance-to-training-data scorer with a threshold calibrated out-of-fold.

    ``fit(X, y=None, groups=None)``: ``X`` holds training rows in the head's feature space; the
    threshold is the ``1 - false_flag_rate`` quantile of out-of-fold scores (each fold scored
    against a detector fitted on the other folds; ``groups``, e.g. patients, keep a group in one
    fold). Fitted attributes: ``threshold_`` (raw distance), ``reference_`` (knn rows) or
    ``location_``/``precision_`` (mahalanobis), ``oof_scores_`` (raw out-of-fold distances).
    ``predict`` follows scikit-learn's outlier convention: -1 flagged, +1 not.
    """

    _parameter_constraints: dict = {
        "method": [StrOptions({"knn", "mahalanobis"})],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "false_flag_rate": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "max_reference": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, method: str = "knn", n_neighbors: int = 5, false_flag_rate: float = 0.05, cv: int = 5,
                 max_reference: int = 5000, random_state=0):
        self.method = method
        self.n_neighbors = n_neighbors
        self.false_flag_rate = false_flag_rate
        self.cv = cv
        self.max_reference = max_reference
        self.random_state = random_state

    def _fit_scorer(self, X: np.ndarray) -> dict:
        if self.method == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            lw = LedoitWolf().fit(X)
            return {"location": lw.location_, "precision": lw.precision_}
        if X.shape[0] > self.max_reference:
            keep = check_random_state(self.random_state).choice(X.shape[0], self.max_reference, replace=False)
            X = X[np.sort(keep)]
        return {"reference": np.asarray(X, np.float32)}

    def _distances(self, state: dict, X: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], _CHUNK):
            block = np.asarray(X[start:start + _CHUNK], np.float64)
            if "precision" in state:
                d = block - state["location"]
                out[start:start + len(block)] = np.sqrt(np.maximum(((d @ state["precision"]) * d).sum(1), 0))
                continue
            ref = state["reference"].astype(np.float64)
            sq = (block ** 2).sum(1)[:, None] - 2 * block @ ref.T + (ref ** 2).sum(1)[None, :]
            k = min(int(self.n_neighbors), ref.shape[0])
            nearest = np.partition(np.maximum(sq, 0), k - 1, axis=1)[:, :k]
            out[start:start + len(block)] = np.sqrt(nearest).mean(axis=1)
        return out

    def fit(self, X, y=None, groups=None):
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n_splits = min(int(self.cv), X.shape[0])
        seed = check_random_state(self.random_state).randint(2**31 - 1)
        if groups is not None and len(set(np.asarray(groups).tolist())) >= n_splits:
            splits = GroupKFold(n_splits, shuffle=True, random_state=seed).split(X, groups=np.asarray(groups))
        else:
            splits = KFold(n_splits, shuffle=True, random_state=seed).split(X)
        oof = np.empty(X.shape[0])
        for train, held in splits:
            oof[held] = self._distances(self._fit_scorer(X[train]), X[held])
        self.oof_scores_ = oof
        self.threshold_ = float(np.quantile(oof, 1 - float(self.false_flag_rate), method="higher"))
        self.offset_ = -self.threshold_  # scikit-learn's outlier convention: decision = score_samples - offset_
        state = self._fit_scorer(X)
        for key, value in state.items():
            setattr(self, f"{key}_", value)
        return self

    def _state(self) -> dict:
        check_is_fitted(self, "threshold_")
        if self.method == "mahalanobis":
            return {"location": self.location_, "precision": self.precision_}
        return {"reference": self.reference_}

    def distance(self, X) -> np.ndarray:
        """Raw distance of each row to the training data (larger: less like it)."""
        state = self._state()
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._distances(state, X)

    def ood_score(self, X) -> np.ndarray:
        """Distance relative to the threshold: above 1 means flagged."""
        distance = self.distance(X)
        return distance / max(self.threshold_, np.finfo(float).tiny)

    def score_samples(self, X) -> np.ndarray:
        """scikit-learn convention: higher is more normal (the negated distance)."""
        return -self.distance(X)

    def decision_function(self, X) -> np.ndarray:
        """Negative for flagged rows (threshold minus distance)."""
        distance = self.distance(X)
        return self.threshold_ - distance

    def predict(self, X) -> np.ndarray:
        return np.where(self.decision_function(X) < 0, -1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


def head_features(pipeline, X) -> np.ndarray:
    """``X`` through every step of ``pipeline`` before its last (the head): the space the head sees.
    A weighted ensemble of pipelines (``estimators_`` with ``weights_``): its heaviest member's
    space. A bare estimator (not a Pipeline) sees ``X`` itself."""
    if not hasattr(pipeline, "steps") and hasattr(pipeline, "weights_") and hasattr(pipeline, "estimators_"):
        pipeline = pipeline.estimators_[int(np.argmax(pipeline.weights_))]
    steps = getattr(pipeline, "steps", None)
    if not steps or len(steps) < 2:
        return np.asarray(X)
    return np.asarray(pipeline[:-1].transform(X))


def fit_bundle_ood(pipeline, table, plan, seed: int = 0, **detector_params) -> OODDetector | None:
    """The detector a bundle stores: fitted on the rows the final ``pipeline`` was refitted on
    (``plan.refit_idx`` for a split protocol, every labelled row otherwise), in the head's feature
    space, with groups (patients) kept within a calibration fold. None when the rows are too few."""
    y = np.asarray(table.y)
    rows = np.asarray(plan.refit_idx) if plan.kind == "split" else np.flatnonzero(y >= 0)
    if rows.size < 4:
        return None
    Z = head_features(pipeline, table.X[rows])
    groups = np.asarray(table.effective_groups(), dtype=object)[rows]
    if not any(groups):
        groups = None
    else:  # an ungrouped row is its own group
        groups = np.array([g if g else f"row:{i}" for i, g in zip(rows, groups)], dtype=object)
    return OODDetector(random_state=seed, **detector_params).fit(Z, groups=groups)


def ood_columns(bundle, X) -> tuple[np.ndarray, np.ndarray]:
    """``(ood_score, ood)`` for feature rows ``X`` (the bundle's sets concatenated); NaN and False
    for a bundle without a detector (made before featx stored one)."""
    detector = getattr(bundle, "ood", None)
    if detector is None or not len(X):
        return np.full(len(X), np.nan), np.zeros(len(X), bool)
    score = detector.ood_score(head_features(bundle.pipeline, X))
    return score, score > 1.0


def ood_summary(flags, n: int | None = None) -> str:
    """"12 of 400 images look unlike the training data"."""
    flags = np.asarray(flags, bool)
    n = len(flags) if n is None else n
    return f"{int(flags.sum())} of {n} images look unlike the training data"
