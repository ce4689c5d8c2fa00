"""Ordinal head (Frank & Hall) and graded metrics on synthetic data with ground-truth grades."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.svm import SVC

from featx.evaluate import ordinal_metrics
from featx.fit import fit, table_from_arrays
from featx.heads.ordinal import OrdinalClassifier, graded_class_names


def graded_data(n=600, k=5, seed=0):
    """Grades 0..k-1 from thresholds on a latent score that depends on one direction of X."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 20))
    latent = X[:, :3].sum(axis=1) / np.sqrt(3) + rng.normal(scale=0.5, size=n)
    y = np.digitize(latent, np.quantile(latent, np.linspace(0, 1, k + 1)[1:-1]))
    return X, y


def test_ordinal_metrics_match_sklearn_and_ground_truth():
    t = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    p = np.array([0, 2, 2, 1, 3, 2, 0, 0])
    m = ordinal_metrics(t, p, [0, 1, 2, 3], n_boot=50)
    assert m["qwk"] == pytest.approx(cohen_kappa_score(t, p, weights="quadratic"), abs=1e-6)
    assert m["mae_grade"] == pytest.approx((0 + 1 + 0 + 2 + 0 + 0 + 1 + 0) / 8)
    assert m["ci95"]["qwk"][0] <= m["qwk"] <= m["ci95"]["qwk"][1]
    assert ordinal_metrics(t, t, [0, 1, 2, 3])["qwk"] == 1.0


def test_probabilities_are_a_distribution_and_grades_are_ordered():
    X, y = graded_data()
    model = OrdinalClassifier(LogisticRegression()).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(y), 5) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the expected grade rises with the latent direction
    direction = X[:, :3].sum(axis=1)
    assert np.corrcoef(direction, model.expected_grade(X))[0, 1] > 0.9
    assert len(model.estimators_) == 4


def test_base_without_probabilities_is_calibrated():
    X, y = graded_data(n=200, k=3)
    model = OrdinalClassifier(SVC()).fit(X, y)
    assert model.predict_proba(X[:5]).shape == (5, 3)


def test_ordinal_head_beats_nominal_on_quadratic_kappa():
    # few training rows per grade: the ordinal structure (one direction, K-1 thresholds) pays off
    X, y = graded_data(n=570, k=5, seed=3)
    splits = np.array(["train"] * 120 + ["val"] * 50 + ["test"] * 400, dtype=object)
    table = table_from_arrays(X, y, splits=splits, class_names=[str(g) for g in range(5)])
    nominal = fit(table, "features", "logreg", n_boot=0, ordinal=False)
    ordinal = fit(table, "features", "logreg", n_boot=0, ordinal=True)
    assert ordinal.head == "ordinal-logreg"
    assert ordinal.primary["qwk"] > nominal.primary["qwk"] + 0.03
    assert ordinal.primary["mae_grade"] < nominal.primary["mae_grade"]
    detected = fit(table, "features", "logreg", n_boot=0, ordinal=None)
    assert detected.head == "ordinal-logreg" and any("look like grades" in n for n in detected.notes)


def test_graded_class_names():
    assert graded_class_names(["0", "1", "2"])
    assert graded_class_names(["1", "2", "3", "4"])
    assert not graded_class_names(["0", "1"])            # binary: nothing to order
    assert not graded_class_names(["2", "1", "3"])       # not in grade order
    assert not graded_class_names(["benign", "malignant", "normal"])
