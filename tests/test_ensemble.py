"""Ensemble selection: greedy selection, no test leakage, the bundle through predict, compare --ensemble."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from featx.cli.main import main
from featx.errors import FeatxError
from featx.fit import EnsembleClassifier, compare, fit_ensemble, greedy_selection, table_from_arrays
from featx.fit.ensemble import best_threshold
from tests.fit_helpers import split_labels, toy_data, write_cache


def toy_table(n=240, seed=0):
    sets, y = toy_data(n, seed=seed)
    X = np.hstack([sets["a"], sets["b"]])
    return table_from_arrays(X, y, sets={"a": 20, "b": 6}, splits=split_labels(n, seed=seed),
                             class_names=["benign", "malignant"])


def test_greedy_selection_picks_the_complementary_pair():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    signal_1 = y + rng.normal(scale=1.0, size=400)  # two independent noisy views of y: their mean is better
    signal_2 = y + rng.normal(scale=1.0, size=400)
    useless = rng.normal(size=400)

    def proba(s):
        p = 1 / (1 + np.exp(-s))
        return np.column_stack([1 - p, p])

    counts, trace = greedy_selection(y, [proba(useless), proba(signal_1), proba(signal_2)], [0, 1],
                                     rounds=20, n_init=1)
    assert counts.sum() == 20 and len(trace) == 20
    assert counts[0] == 0 and counts[1] > 0 and counts[2] > 0
    assert trace[-1] >= trace[0]


def test_ensemble_weights_do_not_depend_on_test_labels():
    table = toy_table()
    test = table.splits == "test"
    kwargs = dict(heads="logreg,knn", rounds=10, n_boot=0, n_jobs=1, decision="accuracy")
    first = fit_ensemble(table, "a,b", **kwargs)
    shuffled = table_from_arrays(table.X, table.y.copy(), sets={"a": 20, "b": 6}, splits=table.splits,
                                 class_names=table.class_names)
    rng = np.random.default_rng(1)
    shuffled.y[test] = rng.permutation(shuffled.y[test])
    second = fit_ensemble(shuffled, "a,b", **kwargs)
    assert first.best_params == second.best_params
    assert first.metrics["ensemble"]["trace"] == second.metrics["ensemble"]["trace"]
    assert first.metrics["ensemble"]["threshold"] == second.metrics["ensemble"]["threshold"] is not None
    # the default selection rows: out-of-fold over train+val, never test
    assert first.metrics["ensemble"]["n_selection_rows"] == int((table.splits != "test").sum())
    assert first.metrics["ensemble"]["select_on"] == "5-fold out-of-fold"
    on_val = [fit_ensemble(t, "a,b", **kwargs, select_on="val").metrics["ensemble"] for t in (table, shuffled)]
    assert on_val[0]["trace"] == on_val[1]["trace"] and on_val[0]["n_selection_rows"] == int((table.splits == "val").sum())
    # same model, so the same test predictions, scored against different labels
    np.testing.assert_allclose(first.evaluation.scores, second.evaluation.scores)
    assert first.primary["auc"] > 0.8


def test_ensemble_is_one_classifier_with_weighted_mean_probabilities():
    table = toy_table()
    res = fit_ensemble(table, "a,b", heads="logreg,svm", choices="a;a+b", rounds=8, n_boot=100, n_jobs=1)
    model = res.bundle.pipeline
    assert isinstance(model, EnsembleClassifier) and res.bundle.head == "ensemble"
    assert res.bundle.feature_sets == ["a", "b"]
    X = np.asarray(table.X)
    mean = sum(w * est.predict_proba(X) for w, est in zip(model.weights_, model.estimators_))
    np.testing.assert_allclose(model.predict_proba(X), mean)
    weights = [m["weight"] for m in res.best_params["members"]]
    assert sum(weights) == pytest.approx(1.0) and all(w > 0 for w in weights)
    assert {m["features"] for m in res.best_params["members"]} <= {"a", "a+b"}
    assert "auc" in res.primary["ci95"]


def test_ensemble_cv_protocol_and_option_errors():
    table = toy_table(160)
    nosplit = table_from_arrays(table.X, table.y, sets={"a": 20, "b": 6})
    res = fit_ensemble(nosplit, "a,b", heads="logreg", rounds=5, n_boot=0, cv=3, n_jobs=1)
    assert res.evaluation.name == "cv" and res.bundle is not None and res.primary["auc"] > 0.8
    assert res.metrics["ensemble"]["select_on"] == "3-fold out-of-fold"
    with pytest.raises(FeatxError, match="--choices uses c"):
        fit_ensemble(table, "a,b", choices="a;c")
    with pytest.raises(FeatxError, match="rounds"):
        fit_ensemble(table, "a,b", rounds=0)


def test_cli_fit_defaults_to_the_ensemble_and_predict_takes_it(tmp_path):
    sets, y = toy_data(200)
    cache = write_cache(tmp_path / "toy.h5", sets, y, splits=split_labels(200), class_names=["benign", "malignant"])
    runner = CliRunner()
    res = runner.invoke(main, ["fit", str(cache), "--features", "a,b", "--heads", "logreg,knn", "--rounds", "6",
                               "-o", str(tmp_path / "e.joblib"), "--bootstrap", "50", "--jobs", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("ensemble on a+b: test ACC ") and "/logreg" in res.stdout
    res = runner.invoke(main, ["predict", str(tmp_path / "e.joblib"), str(cache), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 200 and np.allclose(df["prob_benign"] + df["prob_malignant"], 1.0)
    # the OOD flag: a detector in the heaviest member's feature space, about 5% of in-distribution rows flagged
    assert df["ood_score"].notna().all() and df["ood"].mean() < 0.2
    res = runner.invoke(main, ["fit", str(cache), "--features", "a", "--param", "C=1", "-o", str(tmp_path / "x.joblib")])
    assert res.exit_code == 2 and "--param does not apply to --head ensemble" in res.output


def test_compare_adds_the_ensemble_row():
    table = toy_table()
    res = compare(table, "a,b,a+b", ["logreg", "knn"], n_jobs=1, n_boot=0, ensemble=True,
                  ensemble_options={"rounds": 6})
    board = res.leaderboard
    assert len(board) == 7 and "ensemble" in set(board["head"])
    row = board[board["head"] == "ensemble"].iloc[0]
    assert row["features"] == "a;b;a+b" and row["auc"] > 0.8


def test_best_threshold_maximizes_accuracy_on_the_given_rows():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([.05, .10, .20, .25, .30, .40, .45, .90])
    # 0.5 gets 5/8 right; the midpoint 0.35 of (0.30, 0.40) gets 7/8 (only the 1 at .25 is wrong)
    assert best_threshold(y, p) == pytest.approx(0.35)
    assert np.mean((p >= 0.35) == y) == 7 / 8
    # 6 negatives, 2 positives: accuracy cuts at 0.75 (7/8 right, one positive missed); balanced
    # accuracy at 0.31 (both positives, 4 of 6 negatives: (1 + 2/3) / 2 > (1/2 + 1) / 2)
    y2 = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    p2 = np.array([.05, .10, .20, .30, .35, .60, .32, .90])
    assert best_threshold(y2, p2, "accuracy") == pytest.approx(0.75)
    assert best_threshold(y2, p2, "balanced_accuracy") == pytest.approx(0.31)
    # all cuts tie: 0.5 is kept
    assert best_threshold(np.array([0, 1]), np.array([0.2, 0.8])) == 0.5


def test_threshold_decides_the_ensemble_predictions():
    table = toy_table()
    res = fit_ensemble(table, "a,b", heads="logreg", choices="a;b", rounds=4, n_boot=0, n_jobs=1, decision="accuracy")
    thr = res.metrics["ensemble"]["threshold"]
    model = res.bundle.pipeline
    assert model.threshold == thr and 0 < thr < 1
    ev = res.evaluation
    np.testing.assert_array_equal(ev.y_pred, (ev.scores[:, 1] >= thr).astype(int))
    with pytest.raises(FeatxError, match="decision"):
        fit_ensemble(table, "a,b", decision="median")


def test_ensemble_on_graded_labels_adds_ordinal_candidates_and_grade_metrics(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from tests.test_ordinal import graded_data

    X, y = graded_data(n=300, k=5, seed=1)
    splits = np.array(["train"] * 150 + ["val"] * 50 + ["test"] * 100, dtype=object)
    cache = write_cache(tmp_path / "graded.h5", {"a": X[:, :10], "b": X[:, 10:]}, y, splits=splits,
                        class_names=[str(g) for g in range(5)])
    runner = CliRunner()
    res = runner.invoke(main, ["fit", str(cache), "--features", "a,b", "--choices", "a+b", "--heads", "logreg",
                               "--rounds", "6", "-o", str(tmp_path / "g.joblib"), "--bootstrap", "50", "--jobs", "1",
                               "-q"])
    assert res.exit_code == 0, res.output
    assert " QWK " in res.stdout and " MAE " in res.stdout
    assert "look like grades: ordinal (Frank & Hall) copies" in res.stderr and "--nominal" in res.stderr
    result = fit_ensemble(str(cache), "a,b", choices="a+b", heads="logreg", rounds=6, n_boot=0, n_jobs=1)
    heads = {c["head"] for c in result.metrics["ensemble"]["candidates"]}
    assert heads == {"logreg", "ordinal-logreg"}
    ev, m = result.evaluation, result.primary
    assert m["qwk"] == pytest.approx(cohen_kappa_score(ev.y_true, ev.y_pred, weights="quadratic"), abs=1e-6)
    assert m["mae_grade"] == pytest.approx(np.mean(np.abs(ev.y_true - ev.y_pred)))
    assert m["qwk"] > 0.6 and m["auc"] > 0.75
    nominal = fit_ensemble(str(cache), "a,b", choices="a+b", heads="logreg", rounds=6, n_boot=0, n_jobs=1,
                           ordinal=False)
    assert {c["head"] for c in nominal.metrics["ensemble"]["candidates"]} == {"logreg"}
    res = runner.invoke(main, ["predict", str(tmp_path / "g.joblib"), str(cache), "-o", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "p.csv")
    proba = df[[f"prob_{g}" for g in range(5)]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (df["predicted_label"].astype(str) == pd.Series(np.argmax(proba, axis=1)).astype(str)).all()
