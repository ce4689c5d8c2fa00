"""featx fit / predict / compare through the click app; errors are one line with an exit code."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from featx.cli.main import main
from tests.fit_helpers import split_labels, toy_data, write_cache


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, (res.output, res.exception)
    return res


@pytest.fixture
def toy_cache(tmp_path):
    sets, y = toy_data(200)
    return write_cache(tmp_path / "toy.h5", sets, y, splits=split_labels(200), class_names=["benign", "malignant"])


def test_fit_predict_compare_commands(tmp_path, toy_cache):
    model = tmp_path / "m.joblib"
    res = run("fit", toy_cache, "--features", "a,b", "--head", "svm", "-o", model, "--report", tmp_path / "rep",
              "--bootstrap", "100", "--jobs", "1")
    assert res.stdout.startswith("svm on a+b: test ACC ") and "AUC" in res.stdout
    assert model.exists() and (tmp_path / "m.joblib.sha256").exists()
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.8
    assert (tmp_path / "rep" / "roc.png").exists() and (tmp_path / "rep" / "report.html").exists()

    res = run("predict", model, toy_cache, "-o", tmp_path / "p.csv")
    assert "200 rows (0 without a prediction)" in res.output
    df = pd.read_csv(tmp_path / "p.csv")
    assert len(df) == 200 and {"id", "path", "predicted_label", "prob_benign", "prob_malignant"} <= set(df)
    assert set(df["predicted_label"]) <= {"benign", "malignant"}

    res = run("compare", toy_cache, "--features", "a,b,a+b", "--heads", "logreg,knn", "-o", tmp_path / "lb.csv",
              "--bootstrap", "50", "--jobs", "1")
    assert res.stdout.startswith("6 runs in ")
    board = pd.read_csv(tmp_path / "lb.csv")
    assert len(board) == 6 and (tmp_path / "lb.md").exists() and (tmp_path / "lb.png").exists()


def test_fit_options_reach_the_pipeline(tmp_path, toy_cache):
    model = tmp_path / "m.joblib"
    run("fit", toy_cache, "--features", "a", "--features", "b", "--head", "logreg", "-o", model, "--pca", "0.9",
        "--select-k", "12", "--class-weight", "balanced", "--search", "random", "--n-iter", "3", "--param",
        "max_iter=500", "--protocol", "cv", "--cv", "3", "--bootstrap", "0", "--jobs", "1")
    from featx.bundle import load_bundle

    b = load_bundle(model)
    assert b.feature_sets == ["a", "b"] and b.options["pca"] == 0.9 and b.options["select_k"] == 12
    assert b.options["protocol"] == "cv" and b.params["max_iter"] == 500
    assert b.pipeline.named_steps["head"].class_weight == "balanced"
    assert "cv" in b.metrics and "test" not in b.metrics


def test_errors_are_one_line_with_exit_code(tmp_path, toy_cache):
    res = run("fit", toy_cache, "--features", "nope", "-o", tmp_path / "m.joblib", ok=False)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [f"loading {toy_cache}", res.stderr.splitlines()[-1]]
    assert res.stderr.splitlines()[-1].startswith("featx: error: ") and "no feature set 'nope'" in res.stderr

    model = tmp_path / "m.joblib"
    run("fit", toy_cache, "--features", "a", "--head", "logreg", "--search", "none", "-o", model, "--bootstrap", "0")
    model.write_bytes(model.read_bytes() + b"tampered")
    res = run("predict", model, toy_cache, "-o", tmp_path / "p.csv", ok=False)
    assert res.exit_code == 2 and "sha256 mismatch" in res.output and "--trust" in res.output
    run("fit", toy_cache, "--features", "a", "--head", "logreg", "--search", "none", "-o", model, "--bootstrap", "0")
    (tmp_path / "m.joblib.sha256").unlink()
    res = run("predict", model, toy_cache, "-o", tmp_path / "p.csv", ok=False)
    assert "no m.joblib.sha256 sidecar" in res.output
    run("predict", model, toy_cache, "-o", tmp_path / "p.csv", "--trust")

    sets, y = toy_data(200)
    other = write_cache(tmp_path / "other.h5", sets, y, configs={"a": {"kind": "deep", "backbone": "a", "pooling": "gem"}})
    res = run("predict", model, other, "-o", tmp_path / "p.csv", "--trust", ok=False)
    assert res.exit_code == 2 and "different extractor config" in res.output and "pooling" in res.output


@pytest.mark.parametrize("head", ["svm", "rf", "xgboost", "elm", "logreg"])
def test_breastmnist_every_head_fits_and_reports(breast_cache, tmp_path, head):
    # default hyper-parameters here to keep the suite fast; the grid-searched svm is tested in test_fit.py
    run("fit", breast_cache, "--features", "efficientnet_lite0", "--head", head, "-o", tmp_path / "m.joblib",
        "--report", tmp_path / "rep", "--search", "none", "--bootstrap", "200")
    m = json.loads((tmp_path / "rep" / "metrics.json").read_text())["test"]
    assert m["n"] == 156 and m["auc"] > 0.8 and m["accuracy"] > 0.75, (head, m["auc"], m["accuracy"])
