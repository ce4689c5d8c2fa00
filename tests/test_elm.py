"""Tests of featx.heads.elm: the extreme learning machine estimators."""
from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.heads import ELMClassifier, ELMRegressor
from featx.heads.elm import _solve_spd

ACTIVATIONS = ["tanh", "sigmoid", "relu", "rbf"]


# ---- scikit-learn's own estimator checks --------------------------------------------------------
# Defaults except n_hidden (1000 units make ~120 checks x several fits slow); the rbf and
# "standard"-scaling instances cover the other code paths. No expected failures.
@parametrize_with_checks(
    [
        ELMClassifier(n_hidden=64),
        ELMRegressor(n_hidden=64),
        ELMClassifier(n_hidden=32, activation="rbf", input_scaling="standard"),
        ELMRegressor(n_hidden=32, activation="rbf", input_scaling="standard"),
    ]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)


@pytest.fixture(scope="module")
def binary_data():
    X, y = make_classification(
        n_samples=240, n_features=12, n_informative=6, random_state=3, class_sep=1.0
    )
    return X, y


@pytest.fixture(scope="module")
def multiclass_data():
    X, y = make_classification(
        n_samples=300, n_features=10, n_informative=6, n_classes=4, random_state=4
    )
    return X, np.array(["ant", "bee", "cat", "dog"])[y]


# ---- accuracy with defaults ---------------------------------------------------------------------


def test_digits_defaults_accuracy(digits_split, capsys):
    X_tr, X_te, y_tr, y_te = digits_split
    t0 = time.perf_counter()
    clf = ELMClassifier(random_state=0).fit(X_tr, y_tr)
    acc = clf.score(X_te, y_te)
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[elm] digits ELMClassifier() defaults: accuracy {acc:.4f}, fit+score {elapsed:.3f} s")
    assert clf.n_hidden == 1000 and clf.coef_.shape == (1000, 10)
    assert acc >= 0.95


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_learns_digits(digits_split, activation):
    X_tr, X_te, y_tr, y_te = digits_split
    clf = ELMClassifier(n_hidden=400, activation=activation, alpha=1.0, random_state=0)
    assert clf.fit(X_tr, y_tr).score(X_te, y_te) >= 0.90


def test_regressor_fits_a_nonlinear_function():
    rng = np.random.RandomState(0)
    X = rng.uniform(-3, 3, size=(600, 2))
    y = np.sin(X[:, 0]) * np.cos(X[:, 1]) + 0.05 * rng.standard_normal(600)
    reg = ELMRegressor(n_hidden=300, alpha=1e-2, random_state=0).fit(X[:400], y[:400])
    assert reg.score(X[400:], y[400:]) > 0.9
    # a linear model cannot do this: the hidden layer matters
    assert Ridge().fit(X[:400], y[:400]).score(X[400:], y[400:]) < 0.2


def test_regressor_multi_output_shapes():
    X, Y = make_regression(n_samples=150, n_features=6, n_targets=3, random_state=0)
    reg = ELMRegressor(n_hidden=80, alpha=1e-3, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (150, 3)
    assert reg.coef_.shape == (80, 3) and reg.intercept_.shape == (3,)
    assert reg.score(X, Y) > 0.9
    # each output equals the single-output fit on that column (shared hidden layer)
    single = ELMRegressor(n_hidden=80, alpha=1e-3, random_state=0).fit(X, Y[:, 1])
    assert single.predict(X).shape == (150,)
    np.testing.assert_allclose(single.predict(X), reg.predict(X)[:, 1], rtol=1e-8, atol=1e-8)
    # y of shape (n, 1) keeps its 2-D shape
    assert ELMRegressor(n_hidden=20, random_state=0).fit(X, Y[:, :1]).predict(X).shape == (150, 1)


# ---- the solve ------------------------------------------------------------------------------------


def _reference_solution(est, X, T, sw):
    """Direct weighted ridge with the full H and an unpenalized intercept column (lstsq)."""
    H = est._hidden_numpy(X)
    Hb = np.hstack([H, np.ones((H.shape[0], 1))])
    s = np.sqrt(sw)[:, None]
    reg = np.sqrt(est.alpha) * np.eye(Hb.shape[1])[:-1]  # no penalty on the bias column
    A = np.vstack([Hb * s, reg])
    B = np.vstack([T * s, np.zeros((reg.shape[0], T.shape[1]))])
    sol = np.linalg.lstsq(A, B, rcond=None)[0]
    return sol[:-1], sol[-1]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_normal_equations_match_direct_ridge(activation):
    rng = np.random.RandomState(1)
    X = rng.standard_normal((130, 7)) * rng.uniform(0.1, 10, size=7) + 5
    T = rng.standard_normal((130, 2))
    sw = rng.uniform(0, 3, size=130)
    est = ELMRegressor(n_hidden=40, activation=activation, alpha=0.3, random_state=0)
    est.fit(X, T, sample_weight=sw)
    coef, intercept = _reference_solution(est, X, T, sw)
    np.testing.assert_allclose(est.coef_, coef, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(est.intercept_, intercept, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("activation", ["tanh", "rbf"])
def test_chunked_equals_unchunked(activation, multiclass_data):
    X, y = multiclass_data
    kw = dict(n_hidden=120, activation=activation, alpha=0.5, random_state=0)
    whole = ELMClassifier(chunk_size=len(X), **kw).fit(X, y)
    for chunk in (1, 7, 64):
        part = ELMClassifier(chunk_size=chunk, **kw).fit(X, y)
        np.testing.assert_allclose(part.coef_, whole.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(part.intercept_, whole.intercept_, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(
            part.decision_function(X), whole.decision_function(X), rtol=1e-8, atol=1e-10
        )


def test_ill_conditioned_system_falls_back_and_warns():
    # alpha=0 with more units than samples: H^T H is singular; the min-norm solution still
    # interpolates the training targets.
    rng = np.random.RandomState(0)
    X = rng.standard_normal((20, 3))
    y = rng.standard_normal(20)
    reg = ELMRegressor(n_hidden=60, alpha=0.0, random_state=0)
    with pytest.warns(UserWarning, match="singular"):
        reg.fit(X, y)
    assert np.all(np.isfinite(reg.coef_))
    np.testing.assert_allclose(reg.predict(X), y, atol=1e-6)


def test_solve_spd_paths():
    rng = np.random.RandomState(0)
    M = rng.standard_normal((30, 30))
    A = M @ M.T + 0.1 * np.eye(30)
    B = rng.standard_normal((30, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the well-posed path does not warn
        np.testing.assert_allclose(A @ _solve_spd(A, B), B, atol=1e-8)
    V = rng.standard_normal((30, 5))
    S = V @ V.T  # rank 5
    with pytest.warns(UserWarning):
        sol = _solve_spd(S, S @ B)
    np.testing.assert_allclose(S @ sol, S @ B, atol=1e-8)


# ---- sample weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("Est", [ELMClassifier, ELMRegressor])
def test_integer_sample_weight_equals_duplication(Est, activation, multiclass_data):
    X, y = multiclass_data
    if Est is ELMRegressor:
        y = np.unique(y, return_inverse=True)[1] * 1.5 + X[:, 0]
    rng = np.random.RandomState(7)
    sw = rng.randint(0, 4, size=len(X))  # zeros drop rows
    X_rep, y_rep = np.repeat(X, sw, axis=0), np.repeat(y, sw, axis=0)
    perm = rng.permutation(len(X_rep))  # row order does not matter either
    kw = dict(n_hidden=50, activation=activation, alpha=0.2, chunk_size=37, random_state=0)
    weighted = Est(**kw).fit(X, y, sample_weight=sw)
    repeated = Est(**kw).fit(X_rep[perm], y_rep[perm])
    method = "decision_function" if Est is ELMClassifier else "predict"
    np.testing.assert_allclose(
        getattr(weighted, method)(X), getattr(repeated, method)(X), rtol=1e-7, atol=1e-9
    )
    if Est is ELMClassifier:
        np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))


def test_sample_weight_changes_the_fit(binary_data):
    X, y = binary_data
    sw = np.where(y == 1, 10.0, 1.0)
    plain = ELMClassifier(n_hidden=50, random_state=0).fit(X, y)
    weighted = ELMClassifier(n_hidden=50, random_state=0).fit(X, y, sample_weight=sw)
    assert np.mean(weighted.predict(X) == 1) > np.mean(plain.predict(X) == 1)


@pytest.mark.parametrize("bad", [[-1.0] + [1.0] * 239, [0.0] * 240, [np.nan] + [1.0] * 239])
def test_bad_sample_weight_is_rejected(binary_data, bad):
    X, y = binary_data
    with pytest.raises(ValueError, match="sample_weight"):
        ELMClassifier(n_hidden=10).fit(X, y, sample_weight=bad)


# ---- classifier outputs -----------------------------------------------------------------------------


def test_binary_outputs(binary_data):
    X, y = binary_data
    labels = np.array(["benign", "malignant"])[y]
    clf = ELMClassifier(n_hidden=100, alpha=1.0, random_state=0).fit(X, labels)
    f = clf.decision_function(X)
    assert f.shape == (len(X),)
    assert clf.coef_.shape == (100, 1)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(f > 0).astype(int)])
    P = clf.predict_proba(X)
    assert P.shape == (len(X), 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(P[:, 1], 1.0 / (1.0 + np.exp(-2.0 * f)), rtol=1e-10)
    assert clf.score(X, labels) > 0.9


def test_binary_single_output_equals_two_output_coding(binary_data):
    # With +-1 targets the two one-vs-rest outputs of a binary problem are (-f, f): the
    # classifier's single output is exactly the regressor fitted on the +-1 column.
    X, y = binary_data
    clf = ELMClassifier(n_hidden=60, random_state=0).fit(X, y)
    T = np.column_stack([np.where(y == 0, 1.0, -1.0), np.where(y == 1, 1.0, -1.0)])
    reg = ELMRegressor(n_hidden=60, random_state=0).fit(X, T)
    out = reg.predict(X)
    np.testing.assert_allclose(out[:, 1], clf.decision_function(X), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out[:, 0], -out[:, 1], rtol=1e-8, atol=1e-10)


def test_multiclass_outputs(multiclass_data):
    X, y = multiclass_data
    clf = ELMClassifier(n_hidden=150, alpha=1.0, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, ["ant", "bee", "cat", "dog"])
    F = clf.decision_function(X)
    assert F.shape == (len(X), 4)
    P = clf.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(P > 0)
    np.testing.assert_array_equal(clf.classes_[P.argmax(axis=1)], clf.predict(X))
    np.testing.assert_array_equal(clf.classes_[F.argmax(axis=1)], clf.predict(X))
    assert clf.score(X, y) > 0.8
    assert "not calibrated" in ELMClassifier.predict_proba.__doc__
    assert "CalibratedClassifierCV" in ELMClassifier.predict_proba.__doc__


def test_single_class_is_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        ELMClassifier(n_hidden=5).fit(np.ones((4, 2)), [1, 1, 1, 1])


# ---- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_hidden": 0}, "n_hidden"),
        ({"n_hidden": 2.5}, "n_hidden"),
        ({"activation": "softplus"}, "activation"),
        ({"alpha": -1.0}, "alpha"),
        ({"weight_scale": 0.0}, "weight_scale"),
        ({"input_scaling": "minmax"}, "input_scaling"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_params_raise_at_fit(params, match, binary_data):
    X, y = binary_data
    est = ELMClassifier(**params)  # no validation in __init__ (sklearn convention)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)


def test_unavailable_cuda_is_a_clear_error(binary_data):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    X, y = binary_data
    with pytest.raises(ValueError, match="no CUDA device"):
        ELMClassifier(n_hidden=5, device="cuda").fit(X, y)
    # "auto" quietly uses the NumPy path
    auto = ELMClassifier(n_hidden=20, device="auto", random_state=0).fit(X, y)
    cpu = ELMClassifier(n_hidden=20, device="cpu", random_state=0).fit(X, y)
    np.testing.assert_array_equal(auto.decision_function(X), cpu.decision_function(X))


@pytest.mark.parametrize("input_scaling", ["global", "standard", None])
def test_input_scaling_statistics(input_scaling):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((200, 5)) * [1, 2, 3, 4, 0] + [10, 0, -5, 1, 7]
    est = ELMRegressor(n_hidden=10, input_scaling=input_scaling, random_state=0)
    est.fit(X, X[:, 0])
    Z = est._scale_inputs(X)
    if input_scaling is None:
        np.testing.assert_array_equal(Z, X)
        return
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-10)
    if input_scaling == "standard":
        np.testing.assert_allclose(Z.std(axis=0)[:4], 1.0, rtol=1e-10)
        assert est.scale_[4] == 1.0  # constant feature: centered, not scaled
    else:
        np.testing.assert_allclose((Z.var(axis=0)).mean(), 1.0, rtol=1e-10)
        ratio = Z.std(axis=0)[:4] / X.std(axis=0)[:4]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)  # relative scales kept


def test_reproducible_and_seed_dependent(binary_data):
    X, y = binary_data
    a = ELMClassifier(n_hidden=30, random_state=5).fit(X, y).decision_function(X)
    b = ELMClassifier(n_hidden=30, random_state=5).fit(X, y).decision_function(X)
    c = ELMClassifier(n_hidden=30, random_state=6).fit(X, y).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# ---- the torch path -----------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_torch_path_on_cpu_matches_numpy(activation, multiclass_data):
    pytest.importorskip("torch")
    X, y = multiclass_data
    X32 = X.astype(np.float32)
    kw = dict(n_hidden=90, activation=activation, alpha=0.5, chunk_size=50, random_state=0)
    sw = np.random.RandomState(0).uniform(0.5, 2.0, size=len(X))
    ref = ELMClassifier(device="cpu", **kw).fit(X32, y, sample_weight=sw)
    tch = ELMClassifier(device="torch:cpu", **kw).fit(X32, y, sample_weight=sw)
    assert type(tch.coef_) is np.ndarray
    np.testing.assert_allclose(tch.coef_, ref.coef_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        tch.decision_function(X32), ref.decision_function(X32), rtol=1e-7, atol=1e-9
    )
    np.testing.assert_array_equal(tch.predict(X32), ref.predict(X32))
    # a model fitted through torch predicts through NumPy once its device is switched
    tch.set_params(device="cpu")
    np.testing.assert_allclose(
        tch.predict_proba(X32), ref.predict_proba(X32), rtol=1e-7, atol=1e-9
    )


def test_torch_path_regressor_multi_output():
    pytest.importorskip("torch")
    X, Y = make_regression(n_samples=120, n_features=5, n_targets=2, random_state=1)
    kw = dict(n_hidden=40, alpha=1e-2, random_state=0)
    ref = ELMRegressor(**kw).fit(X, Y)
    tch = ELMRegressor(device="torch:cpu", **kw).fit(X, Y)
    np.testing.assert_allclose(tch.predict(X), ref.predict(X), rtol=1e-7, atol=1e-7)


# ---- sklearn integration ------------------------------------------------------------------------


def test_pickle_round_trip(multiclass_data):
    X, y = multiclass_data
    for est in (
        ELMClassifier(n_hidden=50, random_state=0).fit(X, y),
        ELMClassifier(n_hidden=50, activation="rbf", random_state=0).fit(X, y),
        ELMRegressor(n_hidden=50, random_state=0).fit(X, X[:, 0]),
    ):
        back = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(back.predict(X), est.predict(X))
        if hasattr(est, "predict_proba"):
            np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))


def test_clone_keeps_params_and_drops_fit(binary_data):
    X, y = binary_data
    est = ELMClassifier(n_hidden=33, activation="relu", alpha=2.0, random_state=1).fit(X, y)
    c = clone(est)
    assert c.get_params() == est.get_params()
    assert not hasattr(c, "coef_")


def test_pipeline_and_grid_search(digits_split):
    X_tr, X_te, y_tr, y_te = digits_split
    pipe = make_pipeline(StandardScaler(), ELMClassifier(n_hidden=200, random_state=0))
    grid = GridSearchCV(
        pipe,
        {"elmclassifier__alpha": [1.0, 100.0], "elmclassifier__activation": ["tanh", "relu"]},
        cv=3,
    )
    grid.fit(X_tr, y_tr)
    assert set(grid.best_params_) == {"elmclassifier__alpha", "elmclassifier__activation"}
    assert grid.cv_results_["mean_test_score"].shape == (4,)
    assert grid.score(X_te, y_te) > 0.9
    reg_grid = GridSearchCV(
        ELMRegressor(n_hidden=30, random_state=0), {"alpha": [1e-3, 1.0]}, cv=3
    ).fit(X_tr, X_tr[:, 20])
    assert reg_grid.best_params_["alpha"] in (1e-3, 1.0)


def test_package_exports():
    import featx.heads as heads

    assert heads.ELMClassifier is ELMClassifier and heads.ELMRegressor is ELMRegressor
    assert set(heads.__all__) >= {"ELMClassifier", "ELMRegressor"}
