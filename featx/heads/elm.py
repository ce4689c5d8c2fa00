"""Extreme learning machines: a random, frozen hidden layer and a ridge-regularized linear read-out.

An extreme learning machine (ELM) maps each input through ``n_hidden`` random, never-trained units
and fits only the output layer, in closed form, by ridge regression. On frozen CNN features it is a
fast, strong non-linear head: one pass over the data and one ``n_hidden x n_hidden`` linear solve.

The model, for an input row ``x`` (``n_features``)::

    z = (x - mean_) / scale_                                  # input scaling, see ``input_scaling``
    h = g(z @ hidden_weights_ + hidden_bias_)                  # sigmoid / tanh / relu
    h = exp(-gamma_ * ||z - centers_[j]||**2), j = 1..n_hidden  # rbf
    f = h @ coef_ + intercept_

``coef_`` minimizes ``sum_i w_i ||t_i - h_i @ coef_ - intercept_||**2 + alpha * ||coef_||_F**2``:
the intercept (the "bias column" of the read-out) is *not* penalized, as in
:class:`sklearn.linear_model.Ridge`. It is obtained by centering: with the weighted means
``m_h`` of the hidden activations and ``m_t`` of the targets::

    (H^T W H - s m_h m_h^T + alpha I) coef_ = H^T W T - s m_h m_t^T,   intercept_ = m_t - m_h @ coef_

where ``W = diag(sample_weight)`` and ``s = sum(sample_weight)``. ``H^T W H``, ``H^T W T`` and the
column sums are accumulated over row chunks of ``chunk_size`` rows, so memory is
``O(chunk_size * n_hidden + n_hidden**2)`` whatever the number of samples; ``H`` itself is never
held in full. The system is solved by Cholesky (``scipy.linalg.cho_factor``/``cho_solve``); if it
is singular to working precision (``alpha=0`` with collinear units) the solve falls back to a
symmetric eigendecomposition with tiny eigenvalues cut off (minimum-norm least squares) and warns.

All arithmetic is float64. With ``device="cuda"`` the hidden layer and the accumulation of the normal
equations run in torch on the GPU (still float64); the small final solve runs on the CPU in SciPy.
Fitted attributes are always NumPy arrays, so a model fitted on a GPU pickles and predicts anywhere
(with ``device`` "cpu" or "auto" there).
"""
from __future__ import annotations

import numbers
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from featx.heads.elm_docs import ATTRS_DOC, PARAMS_DOC

__all__ = ["ELMClassifier", "ELMRegressor", "check_sample_weight"]

_ACTIVATIONS = ("sigmoid", "tanh", "relu", "rbf")


# --------------------------------------------------------------------------------------------------
# parameter and input checks


def _resolve_device(device):
    """Map the ``device`` parameter to ``None`` (NumPy path) or a ``torch.device``.

    ``"cpu"`` -> NumPy/SciPy. ``"auto"`` -> the first CUDA device if torch sees one, else NumPy.
    ``"cuda"``/``"cuda:N"`` -> torch on that GPU. ``"torch:<dev>"`` -> torch on ``<dev>``
    (``"torch:cpu"`` runs the torch code on the CPU; useful to test it without a GPU).
    """
    if not isinstance(device, str):
        raise ValueError(f"device must be a string, got {device!r}")
    if device == "cpu":
        return None
    if device == "auto":
        try:
            import torch
        except ImportError:
            return None
        return torch.device("cuda") if torch.cuda.is_available() else None
    if device.startswith("torch:"):
        name = device[len("torch:"):]
    elif device == "cuda" or device.startswith("cuda:"):
        name = device
    else:
        raise ValueError(
            "device must be 'cpu', 'auto', 'cuda', 'cuda:N' or 'torch:<torch device>', "
            f"got {device!r}"
        )
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a featx dependency
        raise ValueError(f"device={device!r} needs torch, which is not importable") from exc
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device={device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but torch sees no CUDA device; use device='auto' or 'cpu'"
        )
    return dev


def check_sample_weight(sample_weight, n_samples):
    """Return float64 weights of shape (n_samples,): finite, >= 0, not all zero."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n_samples, sample_weight, dtype=np.float64)
    else:
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim != 1:
            raise ValueError(f"sample_weight must be 1-D, got shape {sw.shape}")
        if sw.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight.shape == {sw.shape}, expected ({n_samples},) to match X"
            )
    if not np.all(np.isfinite(sw)):
        raise ValueError("sample_weight must be finite")
    if np.any(sw < 0):
        raise ValueError("sample_weight must be non-negative")
    if not sw.sum() > 0:
        raise ValueError("sample_weight must not be all zero")
    return sw


# --------------------------------------------------------------------------------------------------
# the estimators


class _BaseELM(BaseEstimator):
    """Shared machinery of :class:`ELMClassifier` and :class:`ELMRegressor`."""

    _parameter_constraints: dict = {
        "n_hidden": [Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "alpha": [Interval(Real, 0, np.inf, closed="left")],
        "weight_scale": [Interval(Real, 0, np.inf, closed="neither")],
        "input_scaling": [StrOptions({"standard", "global"}), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_hidden=1000,
        *,
        activation="tanh",
        alpha=100.0,
        weight_scale=1.0,
        input_scaling="global",
        chunk_size=2048,
        device="cpu",
        random_state=None,
    ):
        self.n_hidden = n_hidden
        self.activation = activation
        self.alpha = alpha
        self.weight_scale = weight_scale
        self.input_scaling = input_scaling
        self.chunk_size = chunk_size
        self.device = device
        self.random_state = random_state

    # ---- fitting -------------------------------------------------------------------------------

    def _fit(self, X, T, sample_weight):
        """Fit on validated ``X`` (n, d) and float64 targets ``T`` (n, k)."""
        n_samples, n_features = X.shape
        sw = check_sample_weight(sample_weight, n_samples)
        dev = _resolve_device(self.device)
        rng = check_random_state(self.random_state)
        chunk = int(self.chunk_size)

        self._fit_input_scaling(X, sw, chunk)
        self._draw_hidden_layer(X, sw, rng, n_features, chunk)

        # The activations are accumulated relative to a fixed shift, the hidden layer at the
        # mean input, so that centering below subtracts small numbers from small numbers
        # (H^T W H - s m m^T loses digits when the activations' mean dwarfs their spread).
        # The shift does not depend on chunk_size.
        shift = self._hidden_numpy(self.mean_[None, :])[0]
        L, k = self.n_hidden, T.shape[1]
        if dev is None:
            G = np.zeros((L, L))
            HtT = np.zeros((L, k))
            hsum = np.zeros(L)
            sq = np.sqrt(sw)
            for start in range(0, n_samples, chunk):
                rows = slice(start, start + chunk)
                H = self._hidden_numpy(X[rows])
                H -= shift
                hsum += sw[rows] @ H
                H *= sq[rows, None]
                G += H.T @ H  # NumPy runs A.T @ A as a symmetric rank-k update (syrk)
                HtT += H.T @ (T[rows] * sq[rows, None])
        else:
            G, HtT, hsum = self._accumulate_torch(X, T, sw, shift, dev, chunk)

        s = sw.sum()
        m_h = hsum / s  # weighted mean of the shifted activations
        m_t = (sw @ T) / s
        A = G - s * np.outer(m_h, m_h)
        A = 0.5 * (A + A.T)  # exact symmetry whatever the accumulation did
        A.flat[:: L + 1] += self.alpha
        B = HtT - s * np.outer(m_h, m_t)
        coef = _solve_spd(A, B)
        self.coef_ = coef
        self.intercept_ = m_t - (m_h + shift) @ coef
        return self

    def _fit_input_scaling(self, X, sw, chunk):
        """Weighted per-feature mean and scale (``mean_``, ``scale_``), chunk by chunk in float64."""
        n_samples, n_features = X.shape
        s = sw.sum()
        if self.input_scaling is None:
            self.mean_ = np.zeros(n_features)
            self.scale_ = np.ones(n_features)
            return
        total = np.zeros(n_features)
        for start in range(0, n_samples, chunk):
            rows = slice(start, start + chunk)
            total += sw[rows] @ np.asarray(X[rows], dtype=np.float64)
        mean = total / s
        sq = np.zeros(n_features)
        for start in range(0, n_samples, chunk):
            rows = slice(start, start + chunk)
            D = np.asarray(X[rows], dtype=np.float64) - mean
            sq += sw[rows] @ (D * D)
        var = sq / s  # weighted population variance: integer weights == duplicated rows
        if self.input_scaling == "standard":
            scale = np.sqrt(var)
            # constant features: leave them centered but unscaled (as StandardScaler does)
            scale[scale <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
        else:  # "global": one scale for all features, keeps their relative scales
            rms = float(np.sqrt(var.mean()))
            scale = np.full(n_features, rms if rms > 0 else 1.0)
        self.mean_ = mean
        self.scale_ = scale

    def _draw_hidden_layer(self, X, sw, rng, n_features, chunk):
        L = self.n_hidden
        if self.activation == "rbf":
            # Centers: n_hidden training rows drawn with replacement, with probability
            # proportional to sample_weight, by inverse-CDF sampling over the rows sorted by a
            # random projection. The sort makes the draw independent of the row order, and it
            # puts repeated rows side by side, so integer weights pick exactly the same centers
            # as repeated rows; zero-weight rows are never picked.
            key_vec = rng.standard_normal(n_features)
            keys = np.concatenate(
                [
                    np.asarray(X[start : start + chunk], dtype=np.float64) @ key_vec
                    for start in range(0, X.shape[0], chunk)
                ]
            )
            order = np.argsort(keys, kind="stable")
            cum = np.cumsum(sw[order])
            u = rng.random_sample(L) * cum[-1]
            pos = np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
            C = self._scale_inputs(X[order[np.sort(pos)]])
            # Width: sigma = median distance between distinct centers (500 of them, evenly
            # spaced, when there are more), in scaled input space;
            # gamma_ = weight_scale**2 / (2 sigma**2).
            sub = C[np.unique(np.linspace(0, L - 1, min(L, 500)).round().astype(np.intp))]
            d = pdist(sub)  # direct differences: a center repeated is at distance exactly 0
            d = d[d > 0]
            sigma = float(np.median(d)) if d.size else 1.0
            self.centers_ = C
            self.gamma_ = float(self.weight_scale) ** 2 / (2.0 * sigma**2)
        else:
            # N(0, weight_scale**2 / n_features) weights and N(0, weight_scale**2) biases: on
            # scaled inputs (mean feature variance 1) each unit's pre-activation has a spread
            # of about weight_scale.
            ws = float(self.weight_scale)
            self.hidden_weights_ = rng.standard_normal((n_features, L)) * (ws / np.sqrt(n_features))
            self.hidden_bias_ = rng.standard_normal(L) * ws

    # ---- the hidden layer, NumPy -----------------------------------------------------------------

    def _scale_inputs(self, X):
        return (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_

    def _hidden_numpy(self, X):
        Z = self._scale_inputs(X)
        if self.activation == "rbf":
            C = self.centers_
            d2 = (Z * Z).sum(axis=1)[:, None] - 2.0 * (Z @ C.T) + (C * C).sum(axis=1)[None, :]
            np.maximum(d2, 0.0, out=d2)
            d2 *= -self.gamma_
            return np.exp(d2, out=d2)
        A = Z @ self.hidden_weights_
        A += self.hidden_bias_
        if self.activation == "tanh":
            return np.tanh(A, out=A)
        if self.activation == "sigmoid":
            return expit(A, out=A)
        return np.maximum(A, 0.0, out=A)  # relu

    # ---- the hidden layer, torch -----------------------------------------------------------------

    def _torch_params(self, dev):
        import torch

        def t(a):
            return torch.as_tensor(np.asarray(a, dtype=np.float64), device=dev)

        p = {"mean": t(self.mean_), "scale": t(self.scale_)}
        if self.activation == "rbf":
            p["centers"] = t(self.centers_)
        else:
            p["W"] = t(self.hidden_weights_)
            p["b"] = t(self.hidden_bias_)
        return p

    def _hidden_torch(self, Xc, p):
        import torch

        Z = (torch.as_tensor(np.asarray(Xc, dtype=np.float64)).to(p["mean"].device) - p["mean"])
        Z = Z / p["scale"]
        if self.activation == "rbf":
            C = p["centers"]
            d2 = (Z * Z).sum(dim=1)[:, None] - 2.0 * (Z @ C.T) + (C * C).sum(dim=1)[None, :]
            return torch.exp(-self.gamma_ * d2.clamp_min(0.0))
        A = torch.addmm(p["b"], Z, p["W"])
        if self.activation == "tanh":
            return torch.tanh(A)
        if self.activation == "sigmoid":
            return torch.sigmoid(A)
        return torch.relu(A)

    def _accumulate_torch(self, X, T, sw, shift, dev, chunk):
        import torch

        p = self._torch_params(dev)
        shift = torch.as_tensor(shift, device=dev)
        L, k = self.n_hidden, T.shape[1]
        f64 = torch.float64
        G = torch.zeros((L, L), dtype=f64, device=dev)
        HtT = torch.zeros((L, k), dtype=f64, device=dev)
        hsum = torch.zeros(L, dtype=f64, device=dev)
        with torch.no_grad():
            for start in range(0, X.shape[0], chunk):
                rows = slice(start, start + chunk)
                H = self._hidden_torch(X[rows], p) - shift
                w = torch.as_tensor(sw[rows], device=dev)
                hsum += w @ H
                H *= torch.sqrt(w)[:, None]
                G += H.T @ H
                HtT += H.T @ (torch.as_tensor(T[rows], device=dev) * torch.sqrt(w)[:, None])
        return G.cpu().numpy(), HtT.cpu().numpy(), hsum.cpu().numpy()

    # ---- prediction ----------------------------------------------------------------------------

    def _outputs(self, X):
        """Raw outputs ``f = h(X) @ coef_ + intercept_``, shape (n_samples, n_outputs)."""
        check_is_fitted(self, ("coef_", "intercept_"))
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        dev = _resolve_device(self.device)
        chunk = int(self.chunk_size)
        out = np.empty((X.shape[0], self.coef_.shape[1]))
        if dev is None:
            for start in range(0, X.shape[0], chunk):
                rows = slice(start, start + chunk)
                out[rows] = self._hidden_numpy(X[rows]) @ self.coef_
        else:
            import torch

            p = self._torch_params(dev)
            coef = torch.as_tensor(self.coef_, device=dev)
            with torch.no_grad():
                for start in range(0, X.shape[0], chunk):
                    rows = slice(start, start + chunk)
                    out[rows] = (self._hidden_torch(X[rows], p) @ coef).cpu().numpy()
        out += self.intercept_
        return out

    def _validate_X_y_fit(self, X, y, *, multi_output):
        return validate_data(
            self,
            X,
            y,
            reset=True,
            dtype=(np.float64, np.float32),
            multi_output=multi_output,
            y_numeric=not isinstance(self, ClassifierMixin),
        )


def _solve_spd(A, B):
    """Solve ``A X = B`` for symmetric positive (semi-)definite ``A``.

    Cholesky first (``scipy.linalg.cho_factor``/``cho_solve``). If the factorization fails, or
    its pivots say ``A`` is singular to working precision (smallest squared pivot below
    ``n * eps * max(diag(A))``, which happens with ``alpha=0`` and collinear hidden units),
    fall back to the minimum-norm least-squares solution through a symmetric
    eigendecomposition, cutting off eigenvalues below the same threshold, and warn.
    """
    n = A.shape[0]
    tol = n * np.finfo(np.float64).eps * max(float(np.max(np.diag(A))), 0.0)
    try:
        factor = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        pivots = np.diag(factor[0])
        if np.all(np.isfinite(pivots)) and float(np.min(pivots)) ** 2 > tol:
            X = scipy.linalg.cho_solve(factor, B, check_finite=False)
            if np.all(np.isfinite(X)):
                return X
    except np.linalg.LinAlgError:
        pass
    evals, evecs = scipy.linalg.eigh(A, check_finite=False)
    keep = evals > max(tol, 0.0)
    warnings.warn(
        "ELM normal equations are singular to working precision; solved by "
        f"eigendecomposition keeping {int(keep.sum())} of {n} directions. "
        "A larger alpha is more stable.",
        UserWarning,
        stacklevel=4,
    )
    V = evecs[:, keep]
    return V @ ((V.T @ B) / evals[keep][:, None])


class ELMClassifier(ClassifierMixin, _BaseELM):
    __doc__ = (
        """Extreme learning machine classifier: random hidden layer + ridge read-out.

    Classes are coded as ``+1`` (the row's class) / ``-1`` (every other class), one output
    per class, and the outputs are fitted by weighted ridge regression (see
    :mod:`featx.heads.elm`). For two classes a single output is fitted (``+1`` for
    ``classes_[1]``, ``-1`` for ``classes_[0]``); with the ±1 coding this is exactly the
    two-output model, whose outputs would be ``(-f, f)``.

    Inputs need no scaling beforehand (see ``input_scaling``). Multi-label targets are not
    supported.
"""
        + PARAMS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.

    coef_ : ndarray of shape (n_hidden, n_outputs)
        Output weights; ``n_outputs`` is 1 for two classes, else ``n_classes``.
"""
        + ATTRS_DOC
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from featx.heads import ELMClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = ELMClassifier(random_state=0).fit(X[:1500], y[:1500])
    >>> clf.score(X[1500:], y[1500:]) > 0.9
    True
"""
    )

    def fit(self, X, y, sample_weight=None):
        """Fit the classifier.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Class labels (at least two classes).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of a weighted least-squares fit; integer weights are
            equivalent to repeating rows (exactly for the projection activations, and in
            distribution for "rbf", whose centers are drawn by weight).

        Returns
        -------
        self
        """
        self._validate_params()
        _resolve_device(self.device)  # raises on a bad or unavailable device
        X, y = self._validate_X_y_fit(X, y, multi_output=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                "ELMClassifier needs samples of at least 2 classes in the data, "
                f"but the data contain only one class: {classes[0]!r}"
            )
        self.classes_ = classes
        if classes.shape[0] == 2:
            T = np.where(y_idx == 1, 1.0, -1.0)[:, None]
        else:
            T = -np.ones((y_idx.shape[0], classes.shape[0]))
            T[np.arange(y_idx.shape[0]), y_idx] = 1.0
        return self._fit(X, T, sample_weight)

    def decision_function(self, X):
        """Raw read-out outputs.

        Returns
        -------
        ndarray of shape (n_samples,) for two classes (positive means ``classes_[1]``),
        else (n_samples, n_classes) (the largest wins).
        """
        out = self._outputs(X)
        return out[:, 0] if self.classes_.shape[0] == 2 else out

    def predict(self, X):
        """Predict class labels: the class with the largest output."""
        f = self.decision_function(X)
        idx = (f > 0).astype(np.intp) if f.ndim == 1 else f.argmax(axis=1)
        return self.classes_[idx]

    def predict_proba(self, X):
        """Softmax of the outputs; rows sum to 1 and the argmax agrees with :meth:`predict`.

        For two classes the outputs are taken as ``(-f, f)``, i.e. ``P(classes_[1]) =
        sigmoid(2 f)``.

        These scores are **not calibrated probabilities**: the outputs are least-squares
        fits to ±1 targets, not log-odds. When probabilities matter (thresholds, risk,
        Brier score, expected calibration error), wrap the model in
        :class:`sklearn.calibration.CalibratedClassifierCV`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        f = self.decision_function(X)
        if f.ndim == 1:
            return np.column_stack([expit(-2.0 * f), expit(2.0 * f)])
        f = f - f.max(axis=1, keepdims=True)
        np.exp(f, out=f)
        f /= f.sum(axis=1, keepdims=True)
        return f


class ELMRegressor(RegressorMixin, _BaseELM):
    __doc__ = (
        """Extreme learning machine regressor: random hidden layer + ridge read-out.

    Single and multi-output targets; the outputs are fitted by weighted ridge regression
    with an unpenalized intercept (see :mod:`featx.heads.elm`). Targets are used as given:
    the fit is equivariant to their scale (scaling ``y`` scales the predictions), so they
    need no scaling.
"""
        + PARAMS_DOC
        + """
    Attributes
    ----------
    coef_ : ndarray of shape (n_hidden, n_outputs)
        Output weights (``n_outputs`` = 1 for a 1-D target).
"""
        + ATTRS_DOC
    )

    def fit(self, X, y, sample_weight=None):
        """Fit the regressor.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of a weighted least-squares fit; integer weights are
            equivalent to repeating rows (exactly for the projection activations, and in
            distribution for "rbf").

        Returns
        -------
        self
        """
        self._validate_params()
        _resolve_device(self.device)  # raises on a bad or unavailable device
        X, y = self._validate_X_y_fit(X, y, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        T = y[:, None] if y.ndim == 1 else y
        return self._fit(X, T, sample_weight)

    def predict(self, X):
        """Predict targets, shape (n_samples,) or (n_samples, n_outputs) as in ``y``."""
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
