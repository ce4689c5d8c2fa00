"""The scikit-learn transformers of featx.handcrafted.estimators: sklearn's estimator checks,
equality with the specs, input forms, Pipeline / clone / pickle / pandas output."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

from featx.errors import FeatxError
from featx.handcrafted import FirstOrderSpec, GLCMSpec, HOGSpec, LBPSpec, ImageInputError
from featx.handcrafted.estimators import (
    FirstOrderFeatures,
    GLCMFeatures,
    HOGFeatures,
    LBPFeatures,
)
from tests.support import BREAST_NPZ


ESTIMATORS = [HOGFeatures(), LBPFeatures(), GLCMFeatures(), FirstOrderFeatures()]
PAIRS = [
    (HOGFeatures, HOGSpec),
    (LBPFeatures, LBPSpec),
    (GLCMFeatures, GLCMSpec),
    (FirstOrderFeatures, FirstOrderSpec),
]

# ------------------------------------------------------------------ sklearn's estimator checks
#
# These transformers take a batch of images: (n, H, W), (n, H, W, 3) or a list of images. The
# common checks feed 2-D numeric X of shape (n, k), which is not a batch of images (there is no
# way to know H and W of a flat row), and the transformers reject it with ImageInputError, a
# ValueError. Every check below fails for that one reason; the reason string says what the
# check wanted to exercise. (Declaring the honest tag input_tags.two_d_array=False would make
# sklearn skip *all* checks, including the API ones that pass, so the tag stays at its default.)
# xfail_strict=True: a listed check that starts to pass fails the test, so the list stays minimal.
_REJECTS_2D = "2-D numeric X (n, k) is rejected as not a batch of images"
EXPECTED_FAILED = {
    "check_complex_data": _REJECTS_2D + " (before complex values are looked at)",
    "check_dict_unchanged": _REJECTS_2D,
    "check_dont_overwrite_parameters": _REJECTS_2D,
    "check_dtype_object": _REJECTS_2D + " (object-dtype 2-D X)",
    "check_estimators_dtypes": _REJECTS_2D + " (for every dtype tried)",
    "check_estimators_empty_data_messages": _REJECTS_2D
    + "; the message is about the shape, not sklearn's 'empty' wording",
    "check_estimators_fit_returns_self": _REJECTS_2D,
    "check_estimators_nan_inf": _REJECTS_2D + "; the message does not mention NaN/inf",
    "check_estimators_overwrite_params": _REJECTS_2D,
    "check_estimators_pickle": _REJECTS_2D + " (pickling itself is tested separately)",
    "check_f_contiguous_array_estimator": _REJECTS_2D,
    "check_fit2d_1feature": _REJECTS_2D + "; message is not sklearn's '1 feature' wording",
    "check_fit2d_1sample": _REJECTS_2D + "; message is not sklearn's '1 sample' wording",
    "check_fit2d_predict1d": _REJECTS_2D,
    "check_fit_check_is_fitted": _REJECTS_2D,
    "check_fit_idempotent": _REJECTS_2D,
    "check_fit_score_takes_y": _REJECTS_2D,
    "check_methods_sample_order_invariance": _REJECTS_2D,
    "check_methods_subset_invariance": _REJECTS_2D,
    "check_n_features_in": _REJECTS_2D + "; also, images have no n_features_in_",
    "check_n_features_in_after_fitting": _REJECTS_2D + "; also, images have no n_features_in_",
    "check_pipeline_consistency": _REJECTS_2D + " (Pipeline use is tested separately)",
    "check_positive_only_tag_during_fit": _REJECTS_2D + " (negative 2-D X)",
    "check_readonly_memmap_input": _REJECTS_2D,
    "check_transformer_data_not_an_array": _REJECTS_2D + " (wrapped in a non-array class)",
    "check_transformer_general": _REJECTS_2D,
    "check_transformers_unfitted_stateless": _REJECTS_2D,
}


def _expected_failed(estimator):
    return EXPECTED_FAILED


def _check_name(check) -> str:
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


def _caused_by_image_rejection(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ImageInputError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    if _check_name(check) not in EXPECTED_FAILED:
        check(estimator)
        return
    try:
        check(estimator)
    except Exception as exc:
        # Expected failure (marked xfail by sklearn). Re-raised without sklearn's deep traceback,
        # which pytest otherwise spends ~0.2 s per check formatting for the -ra summary.
        raise AssertionError(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_expected_failures_are_exactly_the_2d_rejection(estimator):
    """The xfail list above is exact and every listed check fails *because* 2-D X is rejected
    (xfail alone would accept any exception)."""
    results = check_estimator(
        estimator, expected_failed_checks=EXPECTED_FAILED, on_fail=None, on_skip=None
    )
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] in ("xfail", "failed")}
    assert set(failed) == set(EXPECTED_FAILED)
    for name, exc in failed.items():
        assert _caused_by_image_rejection(exc), (name, repr(exc))
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_estimator_cloneable", "check_get_params_invariance", "check_set_params",
            "check_no_attributes_set_in_init", "check_fit1d"} <= passed


# ------------------------------------------------------------------ the transformers themselves


@pytest.fixture(scope="module")
def images():
    with np.load(BREAST_NPZ) as d:
        return d["train_images"][:12], d["train_labels"][:12]


@pytest.mark.parametrize("est_cls, spec_cls", PAIRS)
def test_estimator_defaults_match_specs(est_cls, spec_cls):
    params = {
        k: p.default for k, p in inspect.signature(est_cls.__init__).parameters.items()
        if k not in ("self", "n_jobs")
    }
    fields = {f.name: f.default for f in dataclasses.fields(spec_cls)}
    assert params == fields
    assert est_cls()._make_spec() == spec_cls()


@pytest.mark.parametrize("est_cls, spec_cls", PAIRS)
def test_transform_equals_spec_rows(images, est_cls, spec_cls):
    X, _ = images
    est = est_cls()
    out = est.fit(X).transform(X)
    spec = spec_cls()
    expected = np.stack([spec.compute(x) for x in X])
    assert out.dtype == np.float32 and out.shape == (len(X), spec.n_features)
    assert np.array_equal(out, expected)
    assert est.spec_ == spec and est.n_output_features_ == spec.n_features
    # fit_transform, and transform without fit (stateless)
    assert np.array_equal(est_cls().fit_transform(X), expected)
    assert np.array_equal(est_cls().transform(X), expected)


def test_input_forms_and_scaling(images):
    X, _ = images  # uint8 (n, 28, 28)
    est = GLCMFeatures(levels=32)
    ref = est.transform(X)
    assert np.array_equal(est.transform(list(X)), ref)
    assert np.array_equal(est.transform(X / 255.0), ref)  # float taken as [0, 1]
    assert np.array_equal(est.transform(X.astype(np.uint16) * 257), ref)  # 16-bit by 65535
    rgb = np.repeat(X[..., None], 3, axis=-1)  # (n, H, W, 3)
    assert np.allclose(est.transform(rgb), ref, atol=1e-5)
    assert np.array_equal(est.transform(X[..., None]), ref)  # (n, H, W, 1)
    obj = np.empty(len(X), dtype=object)
    obj[:] = list(X)
    assert np.array_equal(est.transform(obj), ref)
    # images of different sizes in one list
    mixed = [X[0], np.pad(X[1], 5), rgb[2][:20, :25]]
    out = HOGFeatures().transform(mixed)
    assert out.shape == (3, HOGSpec().n_features) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((5, 784)), "2-D array of shape \\(5, 784\\) is not a batch of images"),
        (np.zeros(10), "not a batch of images"),
        (np.zeros((2, 8, 8, 5)), "not a batch of images"),
        (np.zeros((0, 8, 8)), "0 images"),
        ([], "0 images"),
        ([np.zeros((8, 8)), np.zeros(8)], "image 1 has shape \\(8,\\)"),
        ("images/", "expected a batch of images"),
        (np.full((2, 8, 8), 3.0), "expected \\[0, 1\\]"),
    ],
)
def test_bad_input_raises_value_error_and_featx_error(X, match):
    with pytest.raises(ImageInputError, match=match) as info:
        LBPFeatures(points_radii=[(8, 1)]).fit_transform(X)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FeatxError)


def test_bad_params_raise_at_fit_not_init():
    est = HOGFeatures(orientations=-1, block_norm="L3")  # no validation in __init__
    assert est.orientations == -1
    with pytest.raises(FeatxError, match="orientations=-1 is invalid"):
        est.fit(np.zeros((1, 8, 8)))


def test_n_jobs_gives_the_same_result(images):
    X, _ = images
    serial = LBPFeatures().transform(X)
    assert np.array_equal(LBPFeatures(n_jobs=2).transform(X), serial)


def test_feature_names_and_pandas_output(images):
    pd = pytest.importorskip("pandas")
    X, _ = images
    est = LBPFeatures(points_radii=[(8, 1)]).set_output(transform="pandas")
    df = est.fit_transform(X)
    assert isinstance(df, pd.DataFrame) and df.shape == (len(X), 10)
    assert list(df.columns) == [f"lbp_pr8r1_P8_R1_{i}" for i in range(10)]
    assert list(est.get_feature_names_out()) == list(df.columns)
    union = make_union(
        HOGFeatures(size=32, pixels_per_cell=8), FirstOrderFeatures(), GLCMFeatures()
    ).set_output(transform="pandas")
    frame = union.fit_transform(X)
    assert frame.shape == (len(X), HOGSpec(size=32, pixels_per_cell=8).n_features + 20 + 18)
    assert "firstorderfeatures__firstorder_entropy" in frame.columns
    assert "glcmfeatures__glcm_correlation_d1_mean" in frame.columns


def test_pipeline_clone_pickle_on_breastmnist():
    with np.load(BREAST_NPZ) as d:
        Xtr, ytr = d["train_images"][:240], d["train_labels"][:240]
        Xte, yte = d["test_images"], d["test_labels"]
    feats = make_union(
        HOGFeatures(size=32, pixels_per_cell=8),
        LBPFeatures(points_radii=[(8, 1), (16, 2)]),
        GLCMFeatures(),
        FirstOrderFeatures(),
    )
    model = make_pipeline(feats, StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(Xtr, ytr)
    pred = model.predict(Xte)
    # the classes are 27% / 73%; handcrafted features must beat chance (0.5) clearly
    assert balanced_accuracy_score(yte, pred) > 0.6

    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.predict(Xte), pred)

    twin = clone(model)
    assert twin.get_params()["featureunion__hogfeatures__size"] == 32
    assert not hasattr(twin.named_steps["featureunion"].transformer_list[0][1], "spec_")
    twin.set_params(featureunion__hogfeatures__orientations=6)
    twin.fit(Xtr[:40], ytr[:40])
    assert twin.named_steps["featureunion"].transformer_list[0][1].spec_.name == "hog_s32_o6_ppc8"
