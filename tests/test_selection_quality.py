"""bench/breastmnist_selection.py: library comparison by nested out-of-fold scores never reads test rows."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from featx.fit import fit_ensemble
from tests.fit_helpers import split_labels, toy_data, write_cache

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "breastmnist_selection.py"


@pytest.fixture(scope="module")
def selection():
    spec = importlib.util.spec_from_file_location("breastmnist_selection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LIBRARIES = {"base": (["a"], ("logreg",)), "wider": (["a", "a+b"], ("logreg", "knn"))}


def toy_cache(path, *, scramble_test: bool):
    sets, y = toy_data(200, seed=3)
    splits = split_labels(200, seed=3)
    test = splits == "test"
    if scramble_test:  # other labels and other features on the test rows only
        rng = np.random.default_rng(7)
        y = y.copy()
        y[test] = rng.permutation(y[test])
        sets = {k: v.copy() for k, v in sets.items()}
        for v in sets.values():
            v[test] = rng.normal(scale=1e3, size=v[test].shape)
    return write_cache(path, sets, y, splits=splits, class_names=["benign", "malignant"]), splits


def test_selection_scores_ignore_the_test_rows(tmp_path, selection):
    clean, splits = toy_cache(tmp_path / "clean.h5", scramble_test=False)
    scrambled, _ = toy_cache(tmp_path / "scrambled.h5", scramble_test=True)
    first = selection.run(clean, LIBRARIES, n_jobs=1, log=lambda *_: None)
    second = selection.run(scrambled, LIBRARIES, n_jobs=1, log=lambda *_: None)
    assert first["n_rows"] == int((splits != "test").sum()) < len(splits)
    assert first["scores"] == second["scores"] and first["chosen"] == second["chosen"]
    assert first["scores"]["wider"]["candidates"] == 4 and first["scores"]["base"]["n"] == 15
    table, train_idx, val_idx = selection.load_trainval(clean, ["a", "b"])
    assert set(table.splits) == {"train", "val"} and len(table.y) == first["n_rows"]
    assert (table.splits[train_idx] == "train").all() and (table.splits[val_idx] == "val").all()


def test_candidate_probabilities_are_fits_selection_rows(tmp_path, selection):
    """The out-of-fold probabilities the script scores are those `fit --select-on oof` selects on."""
    clean, _ = toy_cache(tmp_path / "clean.h5", scramble_test=False)
    probas, y, failures = selection.oof_probas(clean, [("a", "logreg"), ("a+b", "logreg")], n_jobs=1)
    assert not failures
    res = fit_ensemble(clean, "a,b", choices="a;a+b", heads="logreg", rounds=10, n_boot=0, n_jobs=1)
    singles = {(c["features"], c["head"]): c["selection_score"] for c in res.metrics["ensemble"]["candidates"]}
    from featx.evaluate import auc_score
    for key, p in probas.items():
        assert auc_score(y, p, [0, 1]) == pytest.approx(singles[key], abs=1e-6)


def test_the_rule(selection):
    base = "b"
    s = {"b": {"acc": 0.869, "auc": 0.903}, "x": {"acc": 0.870, "auc": 0.890}, "z": {"acc": 0.8685, "auc": 0.91}}
    assert selection.choose(s, base) == "b"  # z wins the tie on AUC but does not beat the baseline's ACC
    s["z"]["acc"] = 0.8695
    assert selection.choose(s, base) == "z"  # within 0.002 of the best ACC, higher AUC, beats the baseline
    s["x"]["acc"] = 0.875
    assert selection.choose(s, base) == "x"
