"""A fitted scikit-learn pipeline mirrored in torch, so gradients flow from class scores to features.

:meth:`TorchHead.from_pipeline` reads the fitted attributes of each step and rebuilds the same
arithmetic as torch modules; it raises :class:`NotMirrorable` (with the reason) for a step it
cannot reproduce exactly (trees, nearest neighbours, isotonic calibration of probabilities is
reported as "decision only"). Mirrored, exactly:

* ``ColumnTransformer`` (``remainder="drop"``) of per-set ``VarianceThreshold`` / ``StandardScaler``
  pipelines, with ``transformer_weights`` (featx's block weights);
* ``SelectKBest`` (any selector with ``get_support``), ``PCA`` (with or without whitening),
  :class:`featx.fit.pipeline.Reduce`;
* heads: ``LogisticRegression`` and other linear models (``coef_``/``intercept_``), ``SVC`` with a
  linear, RBF, polynomial or sigmoid kernel (support vectors and dual coefficients; one-vs-one
  multi-class with sklearn's one-vs-rest vote transform), featx's ELM, and
  :class:`featx.heads.wrappers.CalibratedHead` (sigmoid calibration applied exactly; isotonic or
  temperature calibration: the mirror explains the decision function, which it maps monotonically).

``TorchHead(features)`` returns ``(n, n_classes)`` class scores: probabilities when the pipeline's
``predict_proba`` is reproduced exactly (``head.output == "proba"``), else decision scores
(``"decision"``). ``head.decision(features)`` always returns decision scores, one column per class;
a binary decision function ``f`` (positive: ``classes_[1]``) becomes the columns ``(-f, f)``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["NotMirrorable", "TorchHead", "mirror_transform"]


class NotMirrorable(Exception):
    """The pipeline holds a step without an exact torch mirror; ``reason`` says which and why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


class Affine(nn.Module):
    """x[:, keep] * scale + shift (a column subset, then an elementwise affine map)."""

    def __init__(self, keep: np.ndarray | None, scale, shift):
        super().__init__()
        self.register_buffer("keep", None if keep is None else torch.as_tensor(np.asarray(keep, np.int64)))
        self.register_buffer("scale", _t(scale))
        self.register_buffer("shift", _t(shift))

    def forward(self, x):
        if self.keep is not None:
            x = x.index_select(1, self.keep)
        return x * self.scale + self.shift


class Linear(nn.Module):
    """x @ weight + bias."""

    def __init__(self, weight, bias):
        super().__init__()
        self.register_buffer("weight", _t(weight))
        self.register_buffer("bias", _t(bias))

    def forward(self, x):
        return x @ self.weight + self.bias


class Concat(nn.Module):
    """Several blocks of the same input, concatenated (a ColumnTransformer)."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        return torch.cat([b(x) for b in self.blocks], dim=1)


# ------------------------------------------------------------------------------------------------
# transforms


def _selection(est) -> np.ndarray:
    return np.flatnonzero(est.get_support())


def _scaler(est) -> tuple[np.ndarray, np.ndarray]:
    n = est.n_features_in_
    mean = est.mean_ if est.with_mean and est.mean_ is not None else np.zeros(n)
    scale = est.scale_ if est.with_std and est.scale_ is not None else np.ones(n)
    return 1.0 / scale, -mean / scale


def _chain_affine(steps, n_in: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Fold a chain of selections and scalers into one column subset + affine map."""
    keep = np.arange(n_in)
    scale, shift = np.ones(n_in), np.zeros(n_in)
    for est in steps:
        if est is None or isinstance(est, str):
            if est in (None, "passthrough"):
                continue
            raise NotMirrorable(f"column block step {est!r}")
        if hasattr(est, "get_support") and not hasattr(est, "mean_"):
            idx = _selection(est)
            keep, scale, shift = keep[idx], scale[idx], shift[idx]
        elif type(est).__name__ == "StandardScaler":
            a, b = _scaler(est)
            scale, shift = scale * a, shift * a + b
        else:
            raise NotMirrorable(f"{type(est).__name__} inside a column block")
    return keep, scale, shift


def _pca(est) -> nn.Module:
    W = est.components_.T.copy()
    if getattr(est, "whiten", False):
        W = W / np.sqrt(est.explained_variance_)
    return Linear(W, -(est.mean_ @ W))


def _column_transformer(ct) -> nn.Module:
    if not (isinstance(ct.remainder, str) and ct.remainder == "drop"):
        raise NotMirrorable("ColumnTransformer with remainder other than 'drop'")
    weights = ct.transformer_weights or {}
    blocks = []
    n_in = ct.n_features_in_
    for name, est, cols in ct.transformers_:
        if isinstance(est, str) and est == "drop" or name == "remainder":
            continue
        cols = np.arange(n_in)[cols]
        steps = [s for _, s in est.steps] if hasattr(est, "steps") else [est]
        keep, scale, shift = _chain_affine(steps, len(cols))
        w = float(weights.get(name, 1.0))
        blocks.append(Affine(cols[keep], scale * w, shift * w))
    return Concat(blocks)


def mirror_transform(est) -> nn.Module:
    """The torch mirror of one fitted transformer (raises NotMirrorable)."""
    kind = type(est).__name__
    if est is None or (isinstance(est, str) and est == "passthrough"):
        return nn.Identity()
    if kind == "ColumnTransformer":
        return _column_transformer(est)
    if kind == "Reduce":
        mods = []
        if est.select_ is not None:
            mods.append(Affine(_selection(est.select_), 1.0, 0.0))
        if est.pca_ is not None:
            mods.append(_pca(est.pca_))
        return nn.Sequential(*mods) if mods else nn.Identity()
    if kind == "PCA":
        return _pca(est)
    if kind == "StandardScaler":
        a, b = _scaler(est)
        return Affine(None, a, b)
    if kind == "Pipeline":
        return nn.Sequential(*[mirror_transform(s) for _, s in est.steps])
    if hasattr(est, "get_support"):
        return Affine(_selection(est), 1.0, 0.0)
    raise NotMirrorable(f"transform step {kind} has no torch mirror")


# ------------------------------------------------------------------------------------------------
# heads: each returns a module computing the raw decision function (n, n_outputs)


class SVCDecision(nn.Module):
    """SVC's decision function from support vectors and dual coefficients.

    Binary: ``dual_coef_ @ K(SV, x) + intercept_`` (sklearn's public attributes already carry the
    binary sign flip). Multi-class: the one-vs-one decisions, then sklearn's one-vs-rest transform
    (votes + confidences / (3 (|confidences| + 1)); the votes are piecewise constant).
    """

    def __init__(self, svc):
        super().__init__()
        if svc.kernel not in ("linear", "rbf", "poly", "sigmoid"):
            raise NotMirrorable(f"SVC kernel {svc.kernel!r} has no torch mirror")
        self.kernel = svc.kernel
        self.gamma = float(svc._gamma)
        self.coef0 = float(svc.coef0)
        self.degree = int(svc.degree)
        self.register_buffer("sv", _t(svc.support_vectors_))
        self.register_buffer("sv_sq", _t((svc.support_vectors_.astype(np.float64) ** 2).sum(1)))
        self.register_buffer("dual", _t(svc.dual_coef_))
        self.register_buffer("intercept", _t(svc.intercept_))
        self.n_support = [int(v) for v in svc.n_support_]
        self.n_classes = len(svc.classes_)
        self.ovr = svc.decision_function_shape == "ovr"

    def kernel_matrix(self, x):
        dot = x @ self.sv.T
        if self.kernel == "linear":
            return dot
        if self.kernel == "rbf":
            d2 = ((x * x).sum(1, keepdim=True) - 2.0 * dot + self.sv_sq[None, :]).clamp_min(0.0)
            return torch.exp(-self.gamma * d2)
        if self.kernel == "poly":
            return (self.gamma * dot + self.coef0) ** self.degree
        return torch.tanh(self.gamma * dot + self.coef0)

    def forward(self, x):
        K = self.kernel_matrix(x)
        if self.n_classes == 2:
            return (K @ self.dual[0] + self.intercept[0])[:, None]
        start = np.concatenate([[0], np.cumsum(self.n_support)])
        decs = []
        k = 0
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                d = K[:, si] @ self.dual[j - 1, si] + K[:, sj] @ self.dual[i, sj] + self.intercept[k]
                decs.append(d)
                k += 1
        dec = torch.stack(decs, dim=1)
        if not self.ovr:
            return dec
        votes = torch.zeros(x.shape[0], self.n_classes, dtype=x.dtype, device=x.device)
        conf = torch.zeros_like(votes)
        k = 0
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                d = dec[:, k]
                conf[:, i] = conf[:, i] + d
                conf[:, j] = conf[:, j] - d
                votes[:, i] += (d >= 0).to(x.dtype)
                votes[:, j] += (d < 0).to(x.dtype)
                k += 1
        return votes + conf / (3.0 * (conf.abs() + 1.0))


class ELMDecision(nn.Module):
    """featx's ELM read-out: hidden layer on scaled inputs, then ``h @ coef_ + intercept_``."""

    def __init__(self, elm):
        super().__init__()
        self.activation = elm.activation
        self.register_buffer("mean", _t(elm.mean_))
        self.register_buffer("scale", _t(elm.scale_))
        if self.activation == "rbf":
            self.register_buffer("centers", _t(elm.centers_))
            self.gamma = float(elm.gamma_)
        else:
            self.register_buffer("W", _t(elm.hidden_weights_))
            self.register_buffer("b", _t(elm.hidden_bias_))
        self.register_buffer("coef", _t(elm.coef_))
        self.register_buffer("intercept", _t(elm.intercept_))

    def forward(self, x):
        z = (x - self.mean) / self.scale
        if self.activation == "rbf":
            c = self.centers
            d2 = ((z * z).sum(1, keepdim=True) - 2.0 * z @ c.T + (c * c).sum(1)[None, :]).clamp_min(0.0)
            h = torch.exp(-self.gamma * d2)
        else:
            a = z @ self.W + self.b
            h = torch.tanh(a) if self.activation == "tanh" else torch.sigmoid(a) if self.activation == "sigmoid" \
                else torch.relu(a)
        return h @ self.coef + self.intercept


def _decision_module(est) -> tuple[nn.Module, str]:
    """(module computing decision_function as (n, n_outputs), how probabilities follow from it)."""
    kind = type(est).__name__
    if kind == "SVC":
        return SVCDecision(est), "none"
    if kind in ("ELMClassifier", "ELMHead"):
        return ELMDecision(est), "elm"
    if hasattr(est, "coef_") and hasattr(est, "intercept_") and hasattr(est, "decision_function") \
            and not hasattr(est, "support_vectors_"):
        if kind == "LogisticRegression":
            return Linear(np.asarray(est.coef_).T, np.atleast_1d(est.intercept_)), "logistic"
        return Linear(np.asarray(est.coef_).T, np.atleast_1d(est.intercept_)), "none"
    raise NotMirrorable(f"the {kind} head has no exact torch mirror (not differentiable)")


def _decision_to_columns(d: torch.Tensor) -> torch.Tensor:
    return torch.cat([-d, d], dim=1) if d.shape[1] == 1 else d


class TorchHead(nn.Module):
    """Pipeline transforms + head, in torch. Build it with :meth:`from_pipeline`."""

    def __init__(self, transform: nn.Module, decision: nn.Module, proba: str, n_classes: int,
                 calibration: tuple[np.ndarray, np.ndarray] | None = None):
        super().__init__()
        self.transform = transform
        self.decision_head = decision
        self.proba_kind = proba               # logistic | elm | sigmoid | none
        self.n_classes = n_classes
        if calibration is not None:
            self.register_buffer("cal_a", _t(calibration[0]))
            self.register_buffer("cal_b", _t(calibration[1]))

    @property
    def output(self) -> str:
        """"proba" when forward() reproduces predict_proba, else "decision"."""
        return "decision" if self.proba_kind == "none" else "proba"

    @classmethod
    def from_pipeline(cls, pipeline) -> "TorchHead":
        """Mirror a fitted Pipeline (or a bare head) in float64 torch; raises NotMirrorable."""
        steps = [s for _, s in pipeline.steps] if hasattr(pipeline, "steps") else [pipeline]
        *transforms, head = steps
        transform = nn.Sequential(*[mirror_transform(s) for s in transforms])
        calibration = None
        inner = head
        if type(head).__name__ == "CalibratedHead":
            inner = head.estimator_
            cc = head.calibrated_.calibrated_classifiers_[0]
            if cc.method == "sigmoid":
                calibration = (np.array([c.a_ for c in cc.calibrators]), np.array([c.b_ for c in cc.calibrators]))
        decision, proba = _decision_module(inner)
        if type(head).__name__ == "CalibratedHead":
            proba = "sigmoid" if calibration is not None else "none"
        n_classes = len(head.classes_)
        return cls(transform, decision, proba, n_classes, calibration).eval()

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        """Decision scores, one column per class (binary: ``(-f, f)``)."""
        return _decision_to_columns(self.decision_head(self.transform(x.to(self.dtype))))

    @property
    def dtype(self) -> torch.dtype:
        for b in self.buffers():
            if b.is_floating_point():
                return b.dtype
        return torch.float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.decision_head(self.transform(x.to(self.dtype)))
        if self.proba_kind == "logistic":
            if raw.shape[1] == 1:
                p = torch.sigmoid(raw)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(raw, dim=1)
        if self.proba_kind == "elm":
            if raw.shape[1] == 1:
                return torch.cat([torch.sigmoid(-2 * raw), torch.sigmoid(2 * raw)], dim=1)
            return torch.softmax(raw, dim=1)
        if self.proba_kind == "sigmoid":
            p = torch.sigmoid(-(raw * self.cal_a + self.cal_b))
            if self.n_classes == 2:
                return torch.cat([1 - p, p], dim=1)
            den = p.sum(1, keepdim=True)
            return torch.where(den > 0, p / den.clamp_min(1e-300), torch.full_like(p, 1.0 / self.n_classes))
        return _decision_to_columns(raw)
