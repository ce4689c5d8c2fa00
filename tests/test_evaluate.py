"""featx.evaluate: metrics against scikit-learn, bootstrap CIs, and splits that never leak groups."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from featx.errors import FeatxError
from featx.evaluate import (
    _bootstrap_auc,
    auc_score,
    bootstrap_ci,
    classification_metrics,
    make_cv,
    normalise_groups,
    plan_evaluation,
    tuning_cv,
)


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
    assert auc_score(y, np.column_stack([-s, s]), [0, 1]) == pytest.approx(roc_auc_score(y, s))


def test_multiclass_auc_is_one_vs_rest_macro_and_works_on_raw_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert auc_score(y, proba, [0, 1, 2, 3]) == pytest.approx(expected)
    # margins that do not sum to one are fine too (sklearn refuses them)
    per_class = np.mean([roc_auc_score(y == k, logits[:, k]) for k in range(4)])
    assert auc_score(y, logits, [0, 1, 2, 3]) == pytest.approx(per_class)


def test_classification_metrics_match_sklearn_and_hand_counts():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    p = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
    m = classification_metrics(y, p, None, [0, 1, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["confusion_matrix"] == confusion_matrix(y, p).tolist()
    # class "a": TP 2, FN 2, FP 1, TN 5
    assert m["per_class"]["a"]["sensitivity"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["specificity"] == pytest.approx(5 / 6)
    assert m["per_class"]["a"]["support"] == 4
    assert m["auc"] is None and m["class_names"] == ["a", "b", "c"]


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    s = rng.normal(size=150) + 1.2 * y
    pred = (s > 0.6).astype(int)
    scores = np.column_stack([-s, s])
    a = bootstrap_ci(y, pred, scores, [0, 1], n_boot=500, seed=7)
    b = bootstrap_ci(y, pred, scores, [0, 1], n_boot=500, seed=7)
    assert a == b
    point = classification_metrics(y, pred, scores, [0, 1])
    for key in ("accuracy", "balanced_accuracy", "auc", "f1"):
        lo, hi = a[key]
        assert lo < point[key] < hi and hi - lo < 0.3
    assert a != bootstrap_ci(y, pred, scores, [0, 1], n_boot=500, seed=8)


def test_vectorised_bootstrap_auc_equals_a_loop_over_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)
    idx = rng.integers(0, 60, size=(40, 60))
    fast = _bootstrap_auc(y, np.column_stack([-s, s]), idx, 2)
    slow = [roc_auc_score(y[i], s[i]) if len(set(y[i])) == 2 else np.nan for i in idx]
    np.testing.assert_allclose(fast, slow)


def test_split_plan_uses_val_for_tuning_and_refits_on_train_plus_val():
    y = np.array([0, 1] * 20)
    splits = np.array(["train"] * 24 + ["val"] * 6 + ["test"] * 10, dtype=object)
    plan = plan_evaluation(y, splits)
    assert plan.kind == "split"
    assert plan.test_idx.tolist() == list(range(30, 40))
    assert plan.refit_idx.tolist() == list(range(30))
    rows, cv, groups = tuning_cv(plan, y, plan.train_idx, 5, 0, plan.val_idx)
    (tr, va), = list(cv.split(rows))
    assert rows[tr].tolist() == list(range(24)) and rows[va].tolist() == list(range(24, 30))
    assert plan_evaluation(y, splits, refit_on="train").refit_idx.tolist() == list(range(24))
    assert plan_evaluation(y, splits, protocol="cv").kind == "cv"


def test_split_without_val_tunes_by_cv_inside_train_and_unlabelled_rows_are_left_out():
    y = np.array([0, 1] * 20)
    y[:2] = -1
    splits = np.array(["train"] * 30 + ["test"] * 10, dtype=object)
    plan = plan_evaluation(y, splits, cv=3)
    assert plan.val_idx.size == 0 and 0 not in plan.train_idx and 1 not in plan.train_idx
    assert "2 rows without a label were left out" in plan.notes
    assert plan.describe()["tuning"] == "3-fold CV on train"


def test_no_split_means_stratified_cv_and_fold_count_is_lowered_when_needed():
    y = np.array([0] * 20 + [1] * 3)
    plan = plan_evaluation(y, cv=5)
    assert plan.kind == "cv" and plan.n_splits == 3 and "lowered to 3 folds" in plan.notes[0]
    assert sorted(np.concatenate([te for _, te in plan.folds]).tolist()) == list(range(23))
    with pytest.raises(FeatxError, match="at least two classes"):
        make_cv(np.zeros(10), None, 5)
    with pytest.raises(FeatxError, match="no train/test split"):
        plan_evaluation(y, protocol="split")


def test_samples_without_group_become_their_own_group():
    g = normalise_groups(["p1", "", "p1", None], 4)
    assert g.tolist() == ["p1", "__row1", "p1", "__row3"]
    assert normalise_groups(["", ""], 2) is None


@pytest.fixture(scope="module")
def ct_patients(ct_full_dir):
    """Labels (contrast yes/no, from the file name) and PatientIDs of the 100 real CT DICOMs."""
    from featx.sources import scan_sources

    samples = scan_sources([ct_full_dir]).samples
    y = np.array([1 if "CONTRAST_1" in s.path else 0 for s in samples])
    groups = np.array([s.group for s in samples], dtype=object)
    assert len(samples) == 100 and len(set(groups)) == 54
    return y, groups


def test_ct_dicom_no_patient_on_both_sides_of_any_fold_outer_or_inner(ct_patients):
    y, groups = ct_patients
    both = [g for g in set(groups) if len(set(y[groups == g])) == 2]
    assert len(both) == 9  # the data's own warning: 9 patients have both labels
    for seed in range(3):
        plan = plan_evaluation(y, None, groups, cv=5, seed=seed)
        assert plan.kind == "cv" and plan.groups is not None and plan.n_splits == 5
        for tr, te in plan.folds:
            assert not set(groups[tr]) & set(groups[te])
            rows, inner, g = tuning_cv(plan, y, tr, 5, seed)
            for itr, ite in inner.split(np.zeros(rows.size), y[rows], g):
                assert not set(groups[rows][itr]) & set(groups[rows][ite])
