"""sklearn's estimator checks over every estimator class featx ships.

Each expected failure is listed with its reason (``xfail_strict``: a listed check that starts to
pass fails the run, so the lists stay exact).
"""
from __future__ import annotations

import functools
import warnings

import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.deep import DeepFeatures
from featx.fit.ensemble import EnsembleClassifier
from featx.handcrafted.estimators import FirstOrderFeatures, GLCMFeatures, HOGFeatures, LBPFeatures
from featx.heads.elm import ELMClassifier, ELMRegressor
from featx.heads.ordinal import OrdinalClassifier
from featx.heads.wrappers import CalibratedHead, ELMHead, XGBoostHead
from tests.test_handcrafted_estimators import EXPECTED_FAILED as HANDCRAFTED_EXPECTED_FAILED

TINY = "timm/test_efficientnet"

_REWEIGHT = ("XGBoost draws random row (subsample=0.8) and column (colsample_bytree=0.3) subsets, so a "
             "row repeated k times is not the same fit as weight k (passes with both at 1.0)")
_CALIBRATED = ("by design predict is the uncalibrated head's and predict_proba the calibrator's, so "
               "their argmax can differ on a few rows")
_IMAGES = "2-D numeric X (n, k) is rejected as not a batch of images"
# DeepFeatures: the checks feed 2-D X, which is not images; the rest are real gaps of featx/deep.py
# (fit does not validate X: reported to the lead, to fix there).
DEEP_EXPECTED_FAILED = {name: _IMAGES for name in (
    "check_fit_score_takes_y", "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency",
    "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_transformer_data_not_an_array",
    "check_transformer_general", "check_transformer_preserve_dtypes", "check_methods_sample_order_invariance",
    "check_methods_subset_invariance", "check_dict_unchanged", "check_fit_idempotent", "check_fit2d_predict1d",
    "check_n_features_in")}
DEEP_EXPECTED_FAILED.update({
    "check_n_features_in_after_fitting": "gap in deep.py: fit sets no n_features_in_ (images have no feature count)",
    "check_complex_data": "gap in deep.py: fit does not look at X, so complex input is not rejected",
    "check_estimators_empty_data_messages": "gap in deep.py: fit accepts an empty X",
    "check_estimators_nan_inf": "gap in deep.py: fit does not look at X, so NaN/inf are not rejected",
    "check_estimator_sparse_tag": "gap in deep.py: fit accepts sparse X although the tag says it is unsupported",
    "check_fit1d": "gap in deep.py: fit accepts 1-D X",
})

EXPECTED_FAILED = {
    XGBoostHead: {"check_sample_weight_equivalence_on_dense_data": _REWEIGHT,
                  "check_sample_weight_equivalence_on_sparse_data": _REWEIGHT},
    CalibratedHead: {"check_classifiers_train": _CALIBRATED},
    **{cls: HANDCRAFTED_EXPECTED_FAILED for cls in (HOGFeatures, LBPFeatures, GLCMFeatures, FirstOrderFeatures)},
    DeepFeatures: DEEP_EXPECTED_FAILED,
}

ESTIMATORS = [
    XGBoostHead(n_estimators=10),
    CalibratedHead(LogisticRegression()),
    ELMHead(n_hidden=20, class_weight="balanced"),
    ELMClassifier(n_hidden=20),
    ELMRegressor(n_hidden=20),
    EnsembleClassifier([("logreg", LogisticRegression()), ("tree", DecisionTreeClassifier(random_state=0))], [2, 1]),
    OrdinalClassifier(LogisticRegression()),
    HOGFeatures(), LBPFeatures(), GLCMFeatures(), FirstOrderFeatures(),
    DeepFeatures(backbone=TINY, weights="none", device="cpu", batch_size=8),
]


def _expected(estimator):
    return EXPECTED_FAILED.get(type(estimator), {})


def _check_name(check) -> str:
    while isinstance(check, functools.partial):
        check = check.func
    return check.__name__


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning etc. from the tiny check data sets
        if _check_name(check) not in _expected(estimator):
            check(estimator)
            return
        try:
            check(estimator)
        except Exception as exc:  # expected (xfail): re-raised short, pytest formats deep tracebacks slowly
            raise AssertionError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


@pytest.mark.parametrize("cls", [XGBoostHead, CalibratedHead, ELMHead, ELMClassifier, ELMRegressor,
                                 EnsembleClassifier, OrdinalClassifier])
def test_head_classes_declare_constraints_for_every_parameter(cls):
    assert set(cls._parameter_constraints) == set(cls().get_params(deep=False))
