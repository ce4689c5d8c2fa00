"""featx.fit.Reduce follows the scikit-learn estimator contract; fit() validates its numbers."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.errors import FeatxError
from featx.fit import Reduce, fit, parse_pca, table_from_arrays
from tests.fit_helpers import split_labels, toy_data


@parametrize_with_checks([Reduce(), Reduce(pca=2), Reduce(pca=0.9), Reduce(select_k=2, pca=1)])
def test_reduce_passes_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("params", [dict(pca=-1), dict(pca=0), dict(pca=1.5), dict(pca="3"), dict(select_k=0),
                                    dict(select_k=2.5), dict(random_state="x")])
def test_reduce_rejects_bad_parameters(params):
    X = np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(InvalidParameterError):
        Reduce(**params).fit(X, np.arange(20) % 2)


def test_reduce_selects_then_projects_on_the_training_rows():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    X = rng.normal(size=(60, 8))
    X[:, 3] += 3 * y
    r = Reduce(select_k=1).fit(X, y)
    assert r.select_.get_support().tolist() == [k == 3 for k in range(8)]
    assert Reduce(pca=50).fit(X).transform(X).shape == (60, 8)      # clipped to the 8 columns
    with pytest.raises(ValueError, match="needs y"):
        Reduce(select_k=2).fit(X)


@pytest.fixture(scope="module")
def table():
    sets, y = toy_data(80)
    return table_from_arrays(np.hstack([sets["a"], sets["b"]]), y, sets={"a": 20, "b": 6},
                             splits=split_labels(80))


@pytest.mark.parametrize("kwargs, match", [
    (dict(pca=float("nan")), r"pca takes .*whole number from 1 to 2147483647.*variance fraction in \(0, 1\)"),
    (dict(pca=float("inf")), r"pca takes"),
    (dict(pca=-3), r"pca takes"),
    (dict(pca="-0.5"), r"pca takes"),
    (dict(pca=10**12), r"pca takes .*2147483647"),
    (dict(select_k=0), r"select_k must be a whole number >= 1"),
    (dict(variance_threshold=float("nan")), r"variance_threshold must be a finite number >= 0"),
    (dict(variance_threshold=-0.1), r"variance_threshold must be a finite number >= 0"),
    (dict(n_iter=0), r"n_iter must be a whole number >= 1"),
    (dict(cv=1), r"cv must be a whole number >= 2"),
    (dict(n_boot=-1), r"n_boot must be a whole number >= 0"),
    (dict(seed=-1), r"seed must be a whole number >= 0"),
])
def test_fit_rejects_out_of_range_options_naming_the_parameter(table, kwargs, match):
    with pytest.raises(FeatxError, match=match):
        fit(table, "a", "logreg", search="none", **kwargs)


def test_parse_pca_accepts_counts_fractions_and_off():
    assert parse_pca(3) == 3 and parse_pca(0.5) == 0.5 and parse_pca("off") is None and parse_pca(0) is None
    with pytest.raises(FeatxError, match="whole number"):
        parse_pca("2.5")
