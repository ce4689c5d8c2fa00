"""BreastMNIST: compare candidate ensemble libraries by nested out-of-fold scores, on train+val only.

    .venv/bin/python bench/breastmnist_selection.py CACHE [--n-jobs 2] [--out OUT.json]

Reads ONLY the train and val rows of CACHE (the test rows are dropped right after loading, and the
script asserts none is left). For every (feature choice, head) candidate of the libraries below it
does what ``featx fit --head ensemble --select-on oof`` does before selecting
(:func:`featx.fit.ensemble.candidate_probas`: tuned on val, then 5-fold out-of-fold probabilities
over the 624 train+val rows, the same folds as ``fit``). A library is then scored by nested
selection: greedy Caruana selection (:func:`featx.fit.greedy_selection`, 50 rounds, 3 initial picks,
AUC, as ``fit``) on 4/5 of the out-of-fold rows, the weighted mean probabilities scored (AUC, argmax
accuracy) on the other 1/5; 5 folds x 3 shuffles; the mean of the 15. Candidates shared by libraries
are computed once (and kept in ``OUT.npz`` beside the table, reused when present).

The rule (fixed before any score was seen, README "quality"): the library with the best mean nested
ACC; ties within 0.002 go to the higher nested AUC; if no new library beats the baseline's nested
ACC, the baseline stays. The script prints the table, the chosen library and its ``featx fit``
command. Minutes to an hour on a 2-core machine, depending on the library sizes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from featx.evaluate import auc_score, plan_evaluation
from featx.fit import Tuner, greedy_selection, load_table, parse_pca
from featx.fit.ensemble import Candidate, EnsembleSettings, candidate_probas

L0, L1, L2 = (f"efficientnet_lite{k}_tta-flip" for k in range(3))
# lite0 and lite2 under 7 views (``--tta flip,crop5``: identity, flip, 4 corner + centre crops)
L0C, L2C = "efficientnet_lite0_tta-flip-crop5", "efficientnet_lite2_tta-flip-crop5"
TAPS = {b: f"{b}+{b}.blocks.4+{b}.blocks.5" for b in (L0, L1, L2, L0C, L2C)}
HC = "lbp+glcm+firstorder"
BASE_HEADS = ("svm", "logreg", "elm")

# The baseline is the README's current command; the others add what was not tried before. Fixed
# before scoring (names are what the README table shows).
BASELINE = [TAPS[L0], f"{TAPS[L0]}+{L2}", TAPS[L2], f"{TAPS[L0]}+{HC}"]
PLUS_LITE1 = BASELINE + [TAPS[L1]]
LITE1_CHOICES = PLUS_LITE1 + [f"{TAPS[L1]}+{HC}", f"{TAPS[L0]}+{TAPS[L1]}+{TAPS[L2]}"]
WIDE = LITE1_CHOICES + [f"{TAPS[L2]}+{HC}", f"{L0}+{L1}+{L2}", f"{TAPS[L0]}+{TAPS[L1]}+{TAPS[L2]}+{HC}"]
CROP5 = [TAPS[L0C], f"{TAPS[L0C]}+{L2C}", TAPS[L2C], f"{TAPS[L0C]}+{HC}"]
LIBRARIES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "baseline (README): L0T, L0T+L2, L2T, L0T+hc x svm/logreg/elm": (BASELINE, BASE_HEADS),
    "baseline + L1T": (PLUS_LITE1, BASE_HEADS),
    "baseline + L1T, L1T+hc, L0T+L1T+L2T": (LITE1_CHOICES, BASE_HEADS),
    "wide: the above + L2T+hc, L0+L1+L2, L0T+L1T+L2T+hc": (WIDE, BASE_HEADS),
    "baseline + L1T, L1T+hc, L0T+L1T+L2T, + xgboost": (LITE1_CHOICES, BASE_HEADS + ("xgboost",)),
    "wide + xgboost": (WIDE, BASE_HEADS + ("xgboost",)),
    "baseline under flip+crop5 views: L0cT, L0cT+L2c, L2cT, L0cT+hc": (CROP5, BASE_HEADS),
    "baseline + the same under flip+crop5 views": (BASELINE + CROP5, BASE_HEADS),
}
BASELINE_NAME = next(iter(LIBRARIES))
TIE = 0.002


def settings(seed: int = 0, cv: int = 5) -> EnsembleSettings:
    """``featx fit --head ensemble``'s defaults (grid search, AUC, 50 rounds, 3 initial picks, argmax)."""
    return EnsembleSettings(parse_pca(None), None, 0.0, "equal", None, "grid", seed, cv,
                            Tuner(search="grid", scoring="auc", n_iter=20, seed=seed, n_jobs=None),
                            50, 3, "auc", "argmax")


def load_trainval(cache, sets):
    """The train and val rows of ``sets`` (train first, then val: the order ``fit`` uses), as a table
    with no test row, plus (train_idx, val_idx) into it."""
    table = load_table(cache, sets)
    splits = np.asarray(table.splits, dtype=object)
    labelled = np.asarray(table.y) >= 0
    train = np.flatnonzero((splits == "train") & labelled)
    val = np.flatnonzero((splits == "val") & labelled)
    table = table.take(np.concatenate([train, val]))
    assert not np.any(np.asarray(table.splits, dtype=object) == "test"), "a test row reached the selection"
    assert set(np.asarray(table.splits, dtype=object).tolist()) <= {"train", "val"}
    return table, np.arange(train.size), np.arange(train.size, train.size + val.size)


def oof_probas(cache, candidates: list[tuple[str, str]], *, n_jobs=None, seed: int = 0):
    """{(choice, head): (rows, classes) out-of-fold probabilities over train+val}, y, failures."""
    sets = list(dict.fromkeys(s for choice, _ in candidates for s in choice.split("+")))
    table, train_idx, val_idx = load_trainval(cache, sets)
    plan = plan_evaluation(np.asarray(table.y), table.splits, table.effective_groups(), "cv", 5, seed)
    cands = [Candidate(choice.split("+"), head, None) for choice, head in candidates]
    sel_rows, n_folds, tuned, probas, failures = candidate_probas(
        table, plan, cands, settings(seed), train_idx, val_idx, select_on="oof", n_jobs=n_jobs)
    assert n_folds == 5 and np.array_equal(sel_rows, np.arange(len(table.y)))
    out = {("+".join(c.sets), c.head): p for c, p in zip(tuned, probas)}
    return out, np.asarray(table.y)[sel_rows], failures


def nested_scores(y, probas: list[np.ndarray], *, folds: int = 5, shuffles: int = 3, rounds: int = 50,
                  n_init: int = 3) -> dict:
    """Greedy selection on (folds-1)/folds of the rows, scored on the rest; mean over folds x shuffles."""
    y = np.asarray(y)
    aucs, accs = [], []
    for r in range(shuffles):
        for sel, held in StratifiedKFold(folds, shuffle=True, random_state=r).split(y, y):
            counts, _ = greedy_selection(y[sel], [p[sel] for p in probas], [0, 1], rounds=rounds, n_init=n_init)
            mean = sum(k * p[held] for k, p in zip(counts, probas)) / counts.sum()
            aucs.append(auc_score(y[held], mean, [0, 1]))
            accs.append(float(np.mean(np.argmax(mean, axis=1) == y[held])))
    return {"auc": float(np.mean(aucs)), "acc": float(np.mean(accs)), "n": len(aucs)}


def choose(scores: dict[str, dict], baseline: str = BASELINE_NAME) -> str:
    """The rule: best nested ACC; within TIE of it, the higher nested AUC; the baseline unless a
    new library's nested ACC beats the baseline's."""
    best_acc = max(v["acc"] for v in scores.values())
    top = [k for k, v in scores.items() if v["acc"] >= best_acc - TIE]
    pick = max(top, key=lambda k: (scores[k]["auc"], scores[k]["acc"]))
    if pick != baseline and not scores[pick]["acc"] > scores[baseline]["acc"]:
        return baseline
    return pick


def short(choice: str) -> str:
    names = {TAPS[L0C]: "L0cT", TAPS[L2C]: "L2cT", TAPS[L0]: "L0T", TAPS[L1]: "L1T", TAPS[L2]: "L2T",
             HC: "hc", L0C: "L0c", L2C: "L2c", L0: "L0", L1: "L1", L2: "L2"}
    for long_name, s in names.items():  # taps first: they contain the bare backbone names
        choice = choice.replace(long_name, s)
    return choice


def fit_command(cache: str, choices: list[str], heads) -> str:
    features = ",".join(dict.fromkeys(s for c in choices for s in c.split("+")))
    return (f"featx fit {cache} --head ensemble --features {features} --choices \"{';'.join(choices)}\" "
            f"--heads {','.join(heads)} --select-on oof -o ens.joblib")


def run(cache, libraries=LIBRARIES, *, n_jobs=None, store: Path | None = None, log=print) -> dict:
    """Score every library (candidate probabilities computed once; kept in ``store`` when given)."""
    have: dict = {}
    if store is not None and store.exists():
        with np.load(store, allow_pickle=False) as z:
            y = z["y"]
            have = {tuple(k.split("|")): z[k] for k in z.files if k != "y"}
    failures: list[str] = []
    done = set(have)
    for name, (choices, heads) in libraries.items():  # library by library, kept after each
        todo = [(c, h) for c in choices for h in heads if (c, h) not in done]
        if not todo:
            continue
        t = time.perf_counter()
        new, y, failed = oof_probas(cache, todo, n_jobs=n_jobs)
        have.update(new)
        done.update(todo)
        failures += failed
        log(f"{name}: {len(todo)} new candidates tuned and predicted out-of-fold in "
            f"{time.perf_counter() - t:.0f} s" + (f"; failed: {failed}" if failed else ""))
        if store is not None:
            np.savez(store, y=y, **{"|".join(k): v for k, v in have.items()})
    scores = {}
    for name, (choices, heads) in libraries.items():
        cands = [(c, h) for c in choices for h in heads if (c, h) in have]
        scores[name] = {**nested_scores(y, [have[c] for c in cands]), "candidates": len(cands)}
    return {"scores": scores, "chosen": choose(scores, next(iter(libraries))), "failures": failures,
            "n_rows": int(len(y))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON file for the table (and OUT.npz for the probabilities)")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else None
    t = time.perf_counter()
    res = run(a.cache, n_jobs=a.n_jobs, store=out.with_suffix(".npz") if out else None)
    print(f"nested out-of-fold scores over {res['n_rows']} train+val rows (5 folds x 3 shuffles):")
    print("| library | candidates | nested AUC | nested ACC |\n|---|---|---|---|")
    for name, v in res["scores"].items():
        print(f"| {name} | {v['candidates']} | {v['auc']:.3f} | {v['acc']:.3f} |")
    choices, heads = LIBRARIES[res["chosen"]]
    print(f"chosen by the rule: {res['chosen']}")
    print(f"command: {fit_command('breast.h5', choices, heads)}")
    print(f"({time.perf_counter() - t:.0f} s)")
    if out:
        out.write_text(json.dumps({**res, "command": fit_command("breast.h5", choices, heads),
                                   "choices": [short(c) for c in choices]}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
