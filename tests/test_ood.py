"""featx.ood: the detector's contract, its calibrated false-flag rate, and the predict columns."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from featx.ood import OODDetector, ood_summary


@parametrize_with_checks([OODDetector(), OODDetector(method="mahalanobis", cv=3)])
def test_sklearn_contract(estimator, check):
    check(estimator)


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_false_flag_rate_is_calibrated_and_far_samples_are_flagged(method):
    rng = np.random.default_rng(0)
    train, new_in = rng.normal(size=(600, 8)), rng.normal(size=(2000, 8))
    far = rng.normal(size=(200, 8)) + 6.0
    det = OODDetector(method=method, false_flag_rate=0.05).fit(train)
    rate = float((det.predict(new_in) == -1).mean())
    assert 0.02 <= rate <= 0.09, rate  # ~5% of new in-distribution rows
    assert (det.predict(far) == -1).all()
    assert np.allclose(det.ood_score(far) > 1, det.predict(far) == -1)
    strict = OODDetector(method=method, false_flag_rate=0.01).fit(train)
    assert (strict.predict(new_in) == -1).mean() < rate


def test_groups_keep_a_patient_in_one_calibration_fold():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 5)) * 3
    groups = np.repeat(np.arange(40), 10)
    X = centres[groups] + rng.normal(size=(400, 5)) * 0.1  # rows of one patient nearly coincide
    by_row = OODDetector().fit(X)
    by_patient = OODDetector().fit(X, groups=groups)
    # calibrated on unseen patients, the threshold is far larger (new patients are not flagged en masse)
    assert by_patient.threshold_ > 5 * by_row.threshold_
    new_patients = rng.normal(size=(20, 5)) * 3
    assert (by_patient.predict(new_patients) == -1).mean() < 0.5


def test_summary_line():
    assert ood_summary([True, False, True]) == "2 of 3 images look unlike the training data"
    assert ood_summary(np.zeros(400, bool), 400) == "0 of 400 images look unlike the training data"


def test_fit_stores_a_detector_and_predict_flags_far_rows(tmp_path):
    from featx.bundle import load_bundle
    from featx.fit import fit, predict
    from tests.fit_helpers import split_labels, toy_data, write_cache

    sets, y = toy_data(n=200, seed=4)
    cache = write_cache(tmp_path / "c.h5", sets, y, splits=split_labels(200, seed=4))
    res = fit(cache, ["a", "b"], "logreg", n_boot=0)
    path = res.save(tmp_path / "m.skops")
    bundle = load_bundle(path)
    assert bundle.ood is not None and bundle.ood.n_features_in_ == 26
    far_sets = {"a": sets["a"][:30] + 25.0, "b": sets["b"][:30]}
    far = write_cache(tmp_path / "far.h5", far_sets, y[:30])
    test = predict(path, cache=cache)
    flagged_far = predict(path, cache=far)
    assert {"ood_score", "ood"} <= set(test.columns)
    assert flagged_far["ood"].all() and (flagged_far["ood_score"] > 1).all()
    assert test["ood"].mean() <= 0.15
    assert flagged_far.attrs["summary"]["n_ood"] == 30 and flagged_far.attrs["summary"]["ood_scored"]
