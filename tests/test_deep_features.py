"""DeepFeatures: the extraction stage as a scikit-learn transformer."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx import DeepFeatures, load_features
from tests.support import BREAST_NPZ, TINY

# An image transformer cannot take arbitrary numeric 2-D X (a row of numbers is not an image):
# every check that feeds it (n_samples, n_features) tables fails for that one reason.
_TABLE_X = "feeds a 2-D numeric table; an image transformer needs images (n, H, W[, 3])"
EXPECTED_FAILED = {name: _TABLE_X for name in (
    "check_complex_data",
    "check_dict_unchanged",
    "check_dtype_object",
    "check_estimator_sparse_tag",
    "check_estimators_dtypes",
    "check_estimators_empty_data_messages",
    "check_estimators_nan_inf",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit1d",
    "check_fit2d_predict1d",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_preserve_dtypes",
)}


def _expected(est):
    return EXPECTED_FAILED


@parametrize_with_checks([DeepFeatures(TINY, weights="none", precision="fp32")], expected_failed_checks=_expected)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_arrays_match_the_cache_and_a_pipeline_matches_a_plain_svc(breast_cache):
    """DeepFeatures on image arrays = featx extract's cached features, so a pipeline built on it
    predicts what StandardScaler + SVC on the cache predicts (a subset keeps the test fast)."""
    z = np.load(BREAST_NPZ)
    table = load_features(breast_cache, "efficientnet_lite0")
    tr = np.flatnonzero(table.splits == "train")[:120]
    te = np.flatnonzero(table.splits == "test")[:60]
    assert (table.y[tr] == z["train_labels"][:120]).all() and (table.y[te] == z["test_labels"][:60]).all()
    pipe = make_pipeline(DeepFeatures("efficientnet_lite0"), StandardScaler(), SVC())
    pipe.fit(z["train_images"][:120], z["train_labels"][:120])
    Xte = pipe[0].transform(z["test_images"][:60])
    np.testing.assert_allclose(Xte, table.X[te], atol=1e-5)  # same features as featx extract
    ref = make_pipeline(StandardScaler(), SVC()).fit(table.X[tr], table.y[tr])
    assert (pipe.predict(z["test_images"][:60]) == ref.predict(table.X[te])).all()


def test_paths_through_a_cache_pickle_and_clone(tmp_path, image_folder):
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    cache = tmp_path / "c.h5"
    df = DeepFeatures(TINY, weights="none", precision="fp32", cache=str(cache)).fit()
    a = df.transform(paths)
    b = DeepFeatures(TINY, weights="none", precision="fp32").fit().transform(paths)
    assert a.shape == (12, df.n_features_out_) and np.abs(a - b).max() < 1e-5
    again = pickle.loads(pickle.dumps(df)).transform(paths[::-1])
    np.testing.assert_allclose(again, a[::-1], atol=1e-6)
    assert clone(df).get_params() == df.get_params()
    assert len(df.get_feature_names_out()) == df.n_features_out_
    out = DeepFeatures(TINY, weights="none", precision="fp32").set_output(transform="pandas").fit().transform(paths[:2])
    assert out.shape == (2, df.n_features_out_) and list(out.columns[:1]) == [f"{TINY}_0"]


def test_bad_path_names_the_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    from featx.errors import FeatxError
    with pytest.raises(FeatxError, match=r"x\.png"):
        DeepFeatures(TINY, weights="none").fit().transform([str(bad)])


@pytest.mark.parametrize("X, message", [
    (np.random.default_rng(0).random((3, 5)), "2-D array of shape (3, 5) is not a batch of images"),
    (np.full((2, 16, 16), np.nan, np.float32), "image 0 has NaN or infinite values"),
    (np.stack([np.zeros((16, 16)), np.full((16, 16), 1000.0)]), "float image 1 values span [1000, 1000]; expected [0, 1]"),
])
def test_images_it_cannot_use_are_refused_by_transform_in_one_line(X, message):
    """transform refuses what is not a batch of images, and float images that are not finite or
    not in [0, 1], naming the image, instead of returning features of something else. (fit learns
    nothing from X and, like other stateless transformers, does not look at it: validating there
    would cost the estimator checks that fit on numeric tables.)"""
    from featx.errors import FeatxError
    fitted = DeepFeatures(TINY, weights="none", precision="fp32").fit()
    with pytest.raises(FeatxError) as err:
        fitted.transform(X)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_float_images_within_the_tolerance_are_clipped_not_refused():
    est = DeepFeatures(TINY, weights="none", precision="fp32").fit()
    x = np.full((1, 16, 16), 0.5, np.float32)
    edge = x.copy()
    edge[0, 0, 0] = 1.0005   # inside FLOAT_TOLERANCE: clipped to 1
    clipped = x.copy()
    clipped[0, 0, 0] = 1.0
    np.testing.assert_array_equal(est.transform(edge), est.transform(clipped))
