"""The model pipeline: per-set variance filter and scaling, block weights, optional selection/PCA, head.

::

    ColumnTransformer(one [VarianceThreshold ->] StandardScaler per feature set, block weights)
      -> [Reduce: SelectKBest(f_classif) -> PCA] -> head
"""
from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import Interval, RealNotInt  # sklearn's own constraint types
from sklearn.utils.validation import check_is_fitted, validate_data

from featx.errors import FeatxError

#: the largest PCA component count accepted (counts above the data's size are clipped to it)
MAX_PCA_COMPONENTS = 2**31 - 1


class Reduce(TransformerMixin, BaseEstimator):
    """Optional univariate selection then PCA, sized to the data at fit time.

    ``select_k``: keep the k features with the highest ANOVA F (clipped to the features present;
    needs ``y``). ``pca``: an int (components, clipped to min(n_samples, n_features)) or a float
    in (0, 1) (fraction of variance to keep). Both None: the identity. Fitted on the training
    rows only, like every pipeline step.
    """

    _parameter_constraints: dict = {
        "select_k": [Interval(Integral, 1, None, closed="left"), None],
        "pca": [Interval(Integral, 1, MAX_PCA_COMPONENTS, closed="both"),
                Interval(RealNotInt, 0, 1, closed="neither"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, select_k: int | None = None, pca: float | int | None = None,
                 random_state: int | None = 0):
        self.select_k = select_k
        self.pca = pca
        self.random_state = random_state

    def fit(self, X, y=None):
        self._validate_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        self.select_ = None
        self.pca_ = None
        if self.select_k is not None:
            if y is None:
                raise ValueError("Reduce with select_k needs y (ANOVA F selection is supervised)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self.select_ = SelectKBest(f_classif, k=min(int(self.select_k), X.shape[1])).fit(X, y)
            X = self.select_.transform(X)
        if self.pca is not None:
            if isinstance(self.pca, Real) and not isinstance(self.pca, Integral):
                self.pca_ = PCA(n_components=float(self.pca), svd_solver="full",
                                random_state=self.random_state).fit(X)
            else:
                k = max(1, min(int(self.pca), X.shape[0], X.shape[1]))
                self.pca_ = PCA(n_components=k, random_state=self.random_state).fit(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "n_features_in_")
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if self.select_ is not None:
            X = self.select_.transform(X)
        if self.pca_ is not None:
            X = self.pca_.transform(X)
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags


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
        steps.append(("reduce", Reduce(select_k=select_k or None, pca=pca or None, random_state=seed)))
    steps.append(("head", head))
    return Pipeline(steps)


PCA_USAGE = ("pca takes a number of components (a whole number from 1 to "
             f"{MAX_PCA_COMPONENTS}, e.g. 128) or a variance fraction in (0, 1) (e.g. 0.95)")


def parse_pca(value) -> float | int | None:
    """ "128" -> 128, "0.95" -> 0.95, None/""/"0"/"none"/"off" -> None.

    Raises FeatxError for anything else: negative, NaN or infinite values, fractional counts,
    counts above :data:`MAX_PCA_COMPONENTS` (counts above the data's size are clipped at fit time).
    """
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        v = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("", "none", "0", "off"):
            return None
        try:
            v = float(text)
        except ValueError:
            raise FeatxError(f"--pca takes a number of components (128) or a variance fraction "
                             f"(0.95), not {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise FeatxError(f"{PCA_USAGE}; got {value!r}")
    if v == 0:
        return None
    if v < 1:
        return float(v)
    if v != int(v):
        raise FeatxError(f"--pca {value}: a component count must be a whole number")
    if v > MAX_PCA_COMPONENTS:
        raise FeatxError(f"{PCA_USAGE}; got {value!r}")
    return int(v)
