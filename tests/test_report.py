"""featx.report: metrics.json, Markdown, HTML and PNG plots for fit results and leaderboards."""
from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from featx.fit import fit, predict, table_from_arrays
from featx.report import write_leaderboard
from tests.fit_helpers import split_labels, toy_data, write_cache

PNG = b"\x89PNG\r\n\x1a\n"


def _table(n=200, n_classes=2, splits=True, seed=0):
    sets, y = toy_data(n, n_classes=n_classes, seed=seed)
    return table_from_arrays(np.hstack([sets["a"], sets["b"]]), y, sets={"a": 20, "b": 6},
                             splits=split_labels(n, seed) if splits else None,
                             class_names=[f"class {k}" for k in range(n_classes)])


def test_fit_report_on_a_test_split(tmp_path):
    res = fit(_table(), "a,b", "logreg", search="none", n_boot=100)
    files = res.write_report(tmp_path / "rep")
    names = {p.name for p in (tmp_path / "rep").iterdir()}
    assert names == {"metrics.json", "report.md", "report.html", "roc.png", "pr.png", "confusion.png",
                     "predictions.csv"}
    metrics = json.loads(files["metrics"].read_text())
    t = metrics["test"]
    assert {"accuracy", "balanced_accuracy", "auc", "f1", "per_class", "confusion_matrix", "ci95"} <= set(t)
    assert 0 <= t["accuracy"] <= 1 and t["ci95"]["auc"][0] <= t["auc"] <= t["ci95"]["auc"][1]
    assert "cv" not in metrics and metrics["protocol"]["kind"] == "split" and metrics["model"]["head"] == "logreg"
    for png in ("roc.png", "pr.png", "confusion.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == PNG
    md = files["markdown"].read_text()
    assert "| AUC |" in md and "sensitivity (95% CI)" in md and "![ROC](roc.png)" in md
    html = files["html"].read_text()
    assert html.startswith("<!doctype html>") and "class 1" in html
    assert "src='roc.png'" not in html and html.count("<img src='data:image/png;base64,") == 3
    for name in ("roc.png", "pr.png", "confusion.png"):   # the page carries the very PNGs written beside it
        encoded = base64.b64encode((tmp_path / "rep" / name).read_bytes()).decode()
        assert f"data:image/png;base64,{encoded}'" in html
    preds = pd.read_csv(files["predictions"])
    assert len(preds) == t["n"] and {"true_label", "predicted_label", "score_class 0", "score_class 1"} <= set(preds)


def test_fit_report_on_cv_with_three_classes(tmp_path):
    res = fit(_table(150, n_classes=3, splits=False, seed=1), "a", "svm", search="none", cv=3, n_boot=50)
    files = res.write_report(tmp_path)
    metrics = json.loads(files["metrics"].read_text())
    assert "test" not in metrics and metrics["cv"]["n_splits"] == 3 and len(metrics["cv"]["folds"]) == 3
    assert "## Folds" in files["markdown"].read_text() and "one-vs-rest" in files["markdown"].read_text()
    assert files["roc"].read_bytes()[:8] == PNG


def test_leaderboard_files(tmp_path):
    board = pd.DataFrame({"rank": [1, 2], "features": ["a+b", "a"], "head": ["svm", "rf"], "evaluated_on": "test",
                          "accuracy": [0.9, 0.8], "accuracy_lo": [0.85, 0.7], "accuracy_hi": [0.95, 0.9],
                          "balanced_accuracy": [0.88, 0.75], "auc": [0.95, None], "auc_lo": [0.9, None],
                          "auc_hi": [0.99, None], "f1": [0.87, 0.7], "n_features": [26, 20],
                          "params": ["{}", "{}"], "seconds": [1.0, 2.0]})
    files = write_leaderboard(board, tmp_path / "lb.csv", {"kind": "split"})
    assert pd.read_csv(files["csv"]).shape == (2, 15)
    md = files["markdown"].read_text()
    assert "0.950 (0.900–0.990)" in md and "| 2 | a | rf | – |" in md and "test split" in md
    assert files["plot"].read_bytes()[:8] == PNG


LEAD = ["id", "path", "split", "true_label", "predicted_label", "predicted_index"]


def test_report_and_predict_csvs_share_column_names(tmp_path):
    sets, y = toy_data(200)
    cache = write_cache(tmp_path / "c.h5", sets, y, splits=split_labels(200), class_names=["neg", "pos"])
    res = fit(cache, "a,b", "logreg", search="none", n_boot=0)
    report = pd.read_csv(res.write_report(tmp_path / "rep")["predictions"], keep_default_na=False)
    predict(res.save(tmp_path / "m.joblib"), cache=cache, out=tmp_path / "p.csv")
    predicted = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(report.columns) == LEAD + ["score_neg", "score_pos"]
    assert list(predicted.columns) == LEAD + ["prob_neg", "prob_pos", "ood_score", "ood", "note"]
    test = predicted[predicted["split"] == "test"].set_index("id").loc[report["id"]]
    assert (report["split"] == "test").all()
    for col in ("path", "split", "true_label", "predicted_label", "predicted_index"):
        assert test[col].tolist() == report[col].tolist()


EVIL = "=cmd|' /C calc'!A0"


def test_csv_cells_a_spreadsheet_would_run_are_neutralised(tmp_path):
    sets, y = toy_data(200)
    paths = ["+1.png" if i == 0 else "@x.png" if i == 1 else f"img/{i}.png" for i in range(200)]
    cache = write_cache(tmp_path / "evil.h5", sets, y, splits=np.array(["test"] * 60 + ["train"] * 140, object),
                        class_names=["-neg", EVIL], paths=paths)
    res = fit(cache, "a", "logreg", search="none", n_boot=0)
    assert res.predictions["true_label"].isin(["-neg", EVIL]).all()        # the frame itself is untouched
    rep = pd.read_csv(res.write_report(tmp_path / "rep")["predictions"], keep_default_na=False)
    assert set(rep["true_label"]) == {"'-neg", "'" + EVIL}
    assert rep["path"].iloc[0] == "'+1.png" and rep["path"].iloc[1] == "'@x.png" and rep["path"].iloc[2] == "img/2.png"
    assert f"score_{EVIL}" in rep.columns and rep["score_-neg"].dtype == float   # numbers stay numbers
    predict(res.save(tmp_path / "m.joblib"), cache=cache, out=tmp_path / "p.csv")
    raw = (tmp_path / "p.csv").read_text()
    assert not any(cell.startswith(("=", "+", "-", "@")) for line in raw.splitlines()
                   for cell in line.split(",") if not cell.lstrip("-").replace(".", "").replace("e", "").isdigit())
    p = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert set(p["true_label"]) == {"'-neg", "'" + EVIL} and set(p["predicted_label"]) <= {"'-neg", "'" + EVIL}
    board = pd.DataFrame({"rank": [1], "features": ["=1+1"], "head": ["svm"], "auc": [0.5], "accuracy": [0.5],
                          "balanced_accuracy": [0.5], "f1": [0.5], "n_features": [2], "seconds": [-1.0]})
    lb = pd.read_csv(write_leaderboard(board, tmp_path / "lb.csv")["csv"])
    assert lb["features"].tolist() == ["'=1+1"] and lb["seconds"].tolist() == [-1.0]


def test_fit_report_of_a_fused_model_has_per_set_attribution_on_the_test_rows(tmp_path):
    """per_set.json holds drop_set_attribution of the saved pipeline on the test rows, read back
    from the cache; the signal-carrying set gets the larger share; a single-set model has none."""
    from featx.explain import drop_set_attribution

    sets, y = toy_data(200, seed=3)
    sets["b"] = np.random.default_rng(9).normal(size=sets["b"].shape)        # 'b' carries nothing
    splits = split_labels(200, 3)
    cache = write_cache(tmp_path / "c.h5", sets, y, splits=splits)
    res = fit(cache, "a,b", "logreg", search="none", n_boot=0)
    files = res.write_report(tmp_path / "rep")
    per_set = json.loads(files["per_set"].read_text())
    test = np.flatnonzero(np.asarray(splits) == "test")
    want = drop_set_attribution(res.bundle.pipeline, np.hstack([sets["a"], sets["b"]])[test].astype(np.float32)
                                .astype(np.float64), {"a": slice(0, 20), "b": slice(20, 26)})
    assert per_set["n_rows"] == len(test) == res.primary["n"] and per_set["rows"] == "test"
    for k in ("a", "b"):
        assert per_set["sets"][k]["mean_drop"] == pytest.approx(want["sets"][k]["mean_drop"])
    assert per_set["sets"]["a"]["share"] > 0.7
    assert "## Per feature set" in files["markdown"].read_text() and "held-out test rows" in files["markdown"].read_text()
    assert "<h2>Per feature set</h2>" in files["html"].read_text()
    single = fit(cache, "a", "logreg", search="none", n_boot=0).write_report(tmp_path / "one")
    assert "per_set" not in single and not (tmp_path / "one" / "per_set.json").exists()


def test_fit_report_per_set_in_cv_says_in_sample(tmp_path):
    sets, y = toy_data(120, seed=4)
    cache = write_cache(tmp_path / "c.h5", sets, y)
    files = fit(cache, "a,b", "logreg", search="none", n_boot=0, cv=3).write_report(tmp_path / "rep")
    per_set = json.loads(files["per_set"].read_text())
    assert per_set["n_rows"] == 120 and per_set["rows"].startswith("cv (in-sample")
    assert "in-sample" in files["markdown"].read_text()
