"""fit/compare report progress; the driven search equals GridSearchCV/RandomizedSearchCV; imbalance notes."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import loguniform
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, StratifiedKFold

from featx.fit import Tuner, auc_scorer, build_pipeline, compare, fit, table_from_arrays
from featx.heads import zoo
from featx.progress import Progress
from tests.fit_helpers import split_labels, toy_data


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, total, label):
        self.events.append(("start", total, label))

    def advance(self, n=1, note=""):
        self.events.append(("advance", n, note))

    def message(self, line):
        self.events.append(("message", line))

    def close(self):
        self.events.append(("close",))


def _table(n=160, seed=0, splits=True, minority=None):
    sets, y = toy_data(n, seed=seed)
    if minority is not None:
        y = (np.arange(n) < minority).astype(int)
        sets["a"][y == 1, 0] += 2
    return table_from_arrays(np.hstack([sets["a"], sets["b"]]), y, sets={"a": 20, "b": 6},
                             splits=split_labels(n, seed) if splits else None, class_names=["neg", "pos"])


def test_recorder_is_a_progress():
    assert isinstance(Recorder(), Progress)


def test_fit_reports_candidate_and_fold_while_searching():
    rec = Recorder()
    res = fit(_table(), "a", "svm", n_boot=0, progress=rec)
    assert rec.events[0] == ("start", 5, "search svm") and rec.events[-1] == ("close",)
    notes = [e[2] for e in rec.events if e[0] == "advance"]
    assert notes == [f"candidate {k}/5, fold 1/1" for k in range(1, 6)]
    assert res.best_params == fit(_table(), "a", "svm", n_boot=0).best_params


def test_nested_cv_reports_outer_folds_and_inner_candidates():
    rec = Recorder()
    fit(_table(90, splits=False), "a", "logreg", cv=3, n_boot=0, progress=rec)
    starts = [e for e in rec.events if e[0] == "start"]
    assert [s[2] for s in starts] == [f"search logreg, outer fold {k}/3" for k in (1, 2, 3)] + \
        ["search logreg, final model"]
    assert all(s[1] == 4 * 3 for s in starts)                # 4 candidates x 3 inner folds
    assert rec.events.count(("close",)) == 4
    assert "candidate 4/4, fold 3/3" in [e[2] for e in rec.events if e[0] == "advance"]
    rec = Recorder()
    fit(_table(90, splits=False), "a", "logreg", search="none", cv=3, n_boot=0, progress=rec)
    assert rec.events[0] == ("start", 3, "cv logreg") and [e[2] for e in rec.events if e[0] == "advance"] == \
        ["fold 1/3", "fold 2/3", "fold 3/3"]


@pytest.mark.parametrize("search", ["grid", "random"])
def test_tuner_chooses_what_sklearn_search_chooses(search):
    t = _table(120, splits=False)
    pipe = build_pipeline(t.set_slices, zoo.make_head("logreg"))
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    space = {"head__C": [0.001, 0.01, 0.1, 1.0]} if search == "grid" else {"head__C": loguniform(1e-4, 10)}
    best, score, n = Tuner(search=search, n_iter=5, seed=3).tune(pipe, space, t.X, t.y, cv)
    kw = dict(scoring=auc_scorer, cv=cv, refit=False, error_score=np.nan)
    ref = GridSearchCV(pipe, space, **kw) if search == "grid" else \
        RandomizedSearchCV(pipe, space, n_iter=5, random_state=3, **kw)
    ref.fit(t.X, t.y)
    assert best == ref.best_params_ and score == pytest.approx(ref.best_score_, abs=1e-12)
    assert n == (4 if search == "grid" else 5)


def test_compare_reports_one_line_per_finished_run():
    rec = Recorder()
    res = compare(_table(), "a,b", ["logreg", "knn"], n_jobs=2, n_boot=0, search="none", progress=rec)
    lines = [e[1] for e in rec.events if e[0] == "message"]
    assert rec.events[0] == ("start", 4, "compare") and rec.events[-1] == ("close",)
    assert len(lines) == 4 and sum(e[0] == "advance" for e in rec.events) == 4
    runs = {(r.feature_sets[0], r.head): r.primary["auc"] for r in res.results}
    for (sets, head), auc in runs.items():
        assert any(line.startswith(f"{sets} / {head}: AUC {auc:.3f} (") and line.endswith(" s)") for line in lines)
    assert [(r.feature_sets, r.head) for r in res.results] == [(["a"], "logreg"), (["a"], "knn"),
                                                               (["b"], "logreg"), (["b"], "knn")]


def test_a_rare_class_earns_one_note_suggesting_balanced_weights():
    rare = _table(200, splits=False, minority=15)                 # 7.5 % positives
    res = fit(rare, "a", "logreg", search="none", cv=3, n_boot=0)
    hint = [n for n in res.notes if "--class-weight balanced --scoring balanced_accuracy" in n]
    assert hint == ["class 'pos' is 7.5% of the labelled rows (15 of 200); "
                    "consider --class-weight balanced --scoring balanced_accuracy"]
    assert hint[0] in res.metrics["notes"]
    board = compare(rare, "a", ["logreg"], n_jobs=1, n_boot=0, search="none", cv=3)
    assert sum("--class-weight balanced" in n for n in board.notes) == 1
    done = fit(rare, "a", "logreg", search="none", cv=3, n_boot=0, class_weight="balanced",
               scoring="balanced_accuracy")
    assert not any("--class-weight" in n for n in done.notes)
    balanced = fit(_table(200, splits=False, minority=40), "a", "logreg", search="none", cv=3, n_boot=0)
    assert not any("--class-weight" in n for n in balanced.notes)   # 20 %: no note
