"""The torch mirror of fitted pipelines (featx.explain.mirror) against scikit-learn's own outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from featx.explain.mirror import NotMirrorable, TorchHead
from featx.fit.pipeline import build_pipeline
from featx.heads.wrappers import CalibratedHead, ELMHead, XGBoostHead

HEADS = {
    "logreg": lambda: LogisticRegression(C=1.0, max_iter=3000),
    "svm_rbf": lambda: SVC(),
    "svm_linear": lambda: SVC(kernel="linear"),
    "svm_poly": lambda: SVC(kernel="poly"),
    "svm_calibrated": lambda: CalibratedHead(SVC()),
    "svm_isotonic": lambda: CalibratedHead(SVC(), method="isotonic"),
    "elm_calibrated": lambda: CalibratedHead(ELMHead(60, weight_scale=0.25, random_state=0)),
    "elm_rbf": lambda: ELMHead(40, activation="rbf", random_state=0),
}
EXPECT_PROBA = {"logreg", "svm_calibrated", "elm_calibrated", "elm_rbf"}


def _data(k):
    rng = np.random.default_rng(k)
    X = rng.normal(size=(150, 30))
    X[:, 3] = 1.0                      # a constant column: VarianceThreshold drops it
    y = rng.integers(0, k, 150)
    X[:, 0] += y
    return X, y, {"a": slice(0, 20), "b": slice(20, 30)}  # two sets: block weights apply


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("reduce", [{}, {"pca": 5, "select_k": 12}])
@pytest.mark.parametrize("name", list(HEADS))
def test_mirror_reproduces_decision_and_probabilities(name, reduce, k):
    X, y, sl = _data(k)
    pipe = build_pipeline(sl, HEADS[name](), **reduce).fit(X, y)
    head = TorchHead.from_pipeline(pipe)
    d = head.decision(torch.tensor(X)).detach().numpy()
    ref = pipe.decision_function(X)
    if ref.ndim == 1:
        assert np.allclose(d[:, 0], -ref)
        d = d[:, 1]
    assert np.abs(d - ref).max() < 1e-9
    assert head.output == ("proba" if name in EXPECT_PROBA else "decision")
    if head.output == "proba":
        assert np.abs(head(torch.tensor(X)).detach().numpy() - pipe.predict_proba(X)).max() < 1e-9


@pytest.mark.parametrize("make", [lambda: RandomForestClassifier(5, random_state=0), lambda: KNeighborsClassifier(3),
                                  lambda: XGBoostHead(n_estimators=5)])
def test_heads_without_exact_mirror_raise_not_mirrorable(make):
    X, y, sl = _data(2)
    pipe = build_pipeline(sl, make()).fit(X, y)
    with pytest.raises(NotMirrorable, match="no exact torch mirror"):
        TorchHead.from_pipeline(pipe)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["logreg", "svm"])
def test_mirror_matches_featx_fit_on_real_breastmnist_features(breast_cache, head):
    """BreastMNIST through EfficientNet-Lite0 (real weights): the mirror's decision (float64 and
    the float32 that explain runs) equals the saved pipeline's to 1e-4 on all 780 images."""
    from featx.fit import fit, load_table

    bundle = fit(breast_cache, "efficientnet_lite0", head=head, search="none", n_boot=0).bundle
    X = load_table(breast_cache, ["efficientnet_lite0"]).X.astype(np.float64)
    ref = bundle.pipeline.decision_function(X)
    mirror = TorchHead.from_pipeline(bundle.pipeline)
    for h, tol in ((mirror, 1e-4), (TorchHead.from_pipeline(bundle.pipeline).float(), 1e-4)):
        d = h.decision(torch.tensor(X)).detach().double().numpy()[:, 1]
        assert np.abs(d - ref).max() < tol
        p = h(torch.tensor(X)).detach().double().numpy()
        assert np.abs(p - bundle.pipeline.predict_proba(X)).max() < tol
