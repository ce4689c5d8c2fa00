"""featx.heads.zoo: every head builds, clones, fits, pickles; grids name real parameters."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.svm import SVC

from featx.errors import FeatxError
from featx.heads import zoo


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=300, n_features=20, n_informative=6, weights=[0.8, 0.2],
                               random_state=0)
    return X[:200], y[:200], X[200:], y[200:]


@pytest.mark.parametrize("name", zoo.HEADS)
def test_every_head_fits_scores_and_pickles(name, data):
    Xtr, ytr, Xte, yte = data
    est = zoo.make_head(name, class_weight="balanced", seed=0)
    fitted = clone(est).fit(Xtr, ytr)
    s = fitted.decision_function(Xte) if hasattr(fitted, "decision_function") else fitted.predict_proba(Xte)[:, 1]
    assert roc_auc_score(yte, s) > 0.75
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict(Xte), fitted.predict(Xte))


@pytest.mark.parametrize("name", zoo.HEADS)
def test_default_grids_and_distributions_name_real_parameters(name):
    valid = set(zoo.make_head(name).get_params())
    grid = zoo.default_grid(name)
    assert grid and set(grid) <= valid
    assert 1 < len(ParameterGrid(grid)) <= 16
    dist = zoo.default_distributions(name)
    assert set(dist) <= valid
    for params in ParameterSampler(dist, n_iter=3, random_state=0):
        clone(zoo.make_head(name)).set_params(**params)


def test_unknown_head_and_parameter_are_clear_errors():
    with pytest.raises(FeatxError, match="unknown head 'lasso'.*svm, rf, xgboost, elm, logreg, knn"):
        zoo.make_head("lasso")
    with pytest.raises(FeatxError, match="head 'svm' has no parameter.*n_estimators"):
        zoo.make_head("svm", n_estimators=3)
    assert isinstance(zoo.make_head("XGB"), zoo.XGBoostHead)


def test_svm_has_no_probability_and_is_calibrated_by_calibratedhead(data):
    Xtr, ytr, Xte, _ = data
    svm = zoo.make_head("svm", C=3.0)
    assert not hasattr(svm, "predict_proba") and zoo.needs_calibration("svm") and zoo.needs_calibration("elm")
    assert not zoo.needs_calibration("logreg")
    cal = zoo.CalibratedHead(svm).fit(Xtr, ytr)
    plain = clone(svm).fit(Xtr, ytr)
    # predictions and scores are exactly the uncalibrated head's fitted on all the data
    np.testing.assert_allclose(cal.decision_function(Xte), plain.decision_function(Xte))
    np.testing.assert_array_equal(cal.predict(Xte), plain.predict(Xte))
    p = cal.predict_proba(Xte)
    np.testing.assert_allclose(p.sum(1), 1.0)
    # sigmoid calibration is monotone: same ranking as the margins
    assert roc_auc_score(plain.predict(Xte) == 1, p[:, 1]) == pytest.approx(
        roc_auc_score(plain.predict(Xte) == 1, plain.decision_function(Xte)))


def test_xgboost_head_takes_any_labels_class_weight_and_multiclass():
    X, y = make_classification(n_samples=240, n_features=10, n_informative=5, n_classes=3, random_state=1)
    labels = np.array([7, 3, 11])[y]
    m = zoo.make_head("xgboost", n_estimators=30).fit(X, labels)
    assert list(m.classes_) == [3, 7, 11] and set(m.predict(X)) <= {3, 7, 11}
    assert m.predict_proba(X).shape == (240, 3)
    Xb, yb = make_classification(n_samples=300, n_features=10, weights=[0.9, 0.1], random_state=2)
    plain = zoo.make_head("xgboost", n_estimators=30).fit(Xb, yb)
    bal = zoo.make_head("xgboost", n_estimators=30, class_weight="balanced").fit(Xb, yb)
    # balancing moves probability mass to the rare class
    assert bal.predict_proba(Xb)[:, 1].mean() > plain.predict_proba(Xb)[:, 1].mean() + 0.05


def test_elm_class_weight_raises_minority_recall():
    X, y = make_classification(n_samples=400, n_features=15, weights=[0.9, 0.1], class_sep=0.6, random_state=3)
    plain = zoo.make_head("elm", n_hidden=200, alpha=10.0).fit(X, y)
    bal = zoo.make_head("elm", n_hidden=200, alpha=10.0, class_weight="balanced").fit(X, y)
    assert (bal.predict(X)[y == 1] == 1).mean() > (plain.predict(X)[y == 1] == 1).mean()
    assert isinstance(bal, zoo.ELMHead) and bal.get_params()["class_weight"] == "balanced"
    clone(bal)


def test_calibratedhead_with_few_minority_samples(data):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = np.r_[np.zeros(37, int), np.ones(3, int)]
    X[y == 1] += 2
    cal = zoo.CalibratedHead(SVC()).fit(X, y)  # cv lowered to the 3 minority samples
    assert cal.predict_proba(X).shape == (40, 2)
