"""featx's CLI errors: one line `featx: error: ...` naming the option and what it accepts, exit code 2
for usage errors, no traceback unless --debug; what-to-do-next hints; help epilogs; -v."""
from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from featx.cli.main import main
from tests.fit_helpers import split_labels, toy_data, write_cache


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, code=2) -> str:
    assert res.exit_code == code, (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featx: error: "), res.stderr
    assert "Traceback" not in res.output
    return lines[0]


@pytest.fixture
def toy_cache(tmp_path):
    sets, y = toy_data(120)
    return write_cache(tmp_path / "toy.h5", sets, y, splits=split_labels(120), class_names=["benign", "malignant"])


FIT = ("fit", "CACHE", "--features", "a", "--head", "svm", "-o", "m.joblib")


@pytest.mark.parametrize("extra, must_say", [
    (("--bootstrap", "-5"), ["--bootstrap", ">= 0"]),
    (("--seed", "-1"), ["--seed", ">= 0"]),
    (("--pca", "nan"), ["--pca", "fraction in (0, 1)", "whole number >= 1"]),
    (("--pca", "inf"), ["--pca", "fraction in (0, 1)"]),
    (("--pca", "-1"), ["--pca", "fraction in (0, 1)"]),
    (("--pca", "2.5"), ["--pca", "whole number"]),
    (("--select-k", "-1"), ["--select-k", ">= 1"]),
    (("--select-k", "0"), ["--select-k", ">= 1"]),
    (("--variance-threshold", "nan"), ["--variance-threshold", "finite number >= 0"]),
    (("--variance-threshold", "-0.5"), ["--variance-threshold", "finite number >= 0"]),
    (("--n-iter", "-3"), ["--n-iter", ">= 1"]),
    (("--cv", "1"), ["--cv", ">= 2", "at least 2"]),
    (("--jobs", "0"), ["--jobs", ">= 1", "-1 (all cores)"]),
    (("--head", "svmm"), ["--head", "did you mean 'svm'", "logreg"]),
    (("--scoring", "aucc"), ["--scoring", "did you mean 'auc'", "balanced_accuracy"]),
    (("--param", "C=abc"), ["--param", "C='abc'", "float in the range (0.0, inf]"]),
    (("--head", "logreg", "--param", "C=-1"), ["--param", "C=-1", "range"]),
    (("--param", "gama=1"), ["--param", "no parameter", "did you mean gamma"]),
    (("--param", "C"), ["--param", "NAME=VALUE"]),
])
def test_fit_usage_errors_are_one_line_naming_option_and_accepted_values(toy_cache, tmp_path, extra, must_say):
    args = [toy_cache if a == "CACHE" else tmp_path / a if a == "m.joblib" else a for a in FIT]
    line = one_error_line(invoke(*args, *extra))
    for text in must_say:
        assert text in line, (text, line)
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("args, must_say", [
    (("compare", "CACHE", "--features", "a", "-o", "b.csv", "--jobs", "0"), ["--jobs", "-1 (all cores)"]),
    (("compare", "CACHE", "--features", "a", "-o", "b.csv", "--heads", "svm,rff"), ["--heads", "did you mean 'rf'"]),
    (("extract", "IMG", "-o", "c.h5", "--batch-size", "0"), ["--batch-size", ">= 1"]),
    (("extract", "IMG", "-o", "c.h5", "--workers", "-1"), ["--workers", ">= 0"]),
    (("extract", "IMG", "-o", "c.h5", "--pooling", "mean"), ["--pooling", "avg, max, gem"]),
    (("extract", "IMG", "-o", "c.h5", "--precision", "fp64"), ["--precision", "did you mean 'fp16'"]),
    (("predict", "m.joblib", "IMG", "-o", "p.csv", "--batch-size", "0"), ["--batch-size", ">= 1"]),
    (("fitt", "CACHE"), ["no command 'fitt'", "did you mean 'fit'"]),
    (("fit", "CACHE", "-o", "m.joblib"), ["--features"]),
])
def test_other_usage_errors(toy_cache, tmp_path, args, must_say):
    subs = {"CACHE": toy_cache, "IMG": tmp_path, "m.joblib": tmp_path / "m.joblib"}
    line = one_error_line(invoke(*[subs.get(a, a) for a in args]))
    for text in must_say:
        assert text in line, (text, line)


def test_variance_threshold_that_drops_everything_is_one_line(toy_cache, tmp_path):
    res = invoke("fit", toy_cache, "--features", "a", "-o", tmp_path / "m.joblib", "--variance-threshold", "1e9",
                 "--search", "none", "--bootstrap", "0", "-q")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines()[-1].startswith("featx: error: ")


def test_folder_or_image_is_not_a_cache_and_says_how_to_make_one(tmp_path):
    img = tmp_path / "x.png"
    img.write_bytes(b"\x89PNG not really")
    for path in (tmp_path, img):
        line = one_error_line(invoke("fit", path, "--features", "a", "-o", tmp_path / "m.joblib"))
        assert f"{path}: not a feature cache" in line and f"featx extract {path} -o CACHE.h5" in line
    line = one_error_line(invoke("info", tmp_path))
    assert "not a feature cache" in line


def test_unlabelled_cache_says_how_to_label(tmp_path):
    sets, _ = toy_data(40)
    cache = write_cache(tmp_path / "u.h5", sets, np.full(40, -1), class_names=[])
    line = one_error_line(invoke("fit", cache, "--features", "a", "-o", tmp_path / "m.joblib"))
    assert "no labels" in line and "class subfolders" in line and "`label` column" in line
    line = one_error_line(invoke("compare", cache, "--features", "a", "-o", tmp_path / "b.csv"))
    assert "no labels" in line


def test_unexpected_exception_is_one_line_with_debug_hint_and_debug_shows_traceback(toy_cache, tmp_path, monkeypatch):
    import featx.fit

    def boom(*a, **k):
        raise RuntimeError("something odd\nsecond line")

    monkeypatch.setattr(featx.fit, "fit", boom)
    args = ["fit", toy_cache, "--features", "a", "-o", tmp_path / "m.joblib", "-q"]
    res = invoke(*args)
    line = one_error_line(res, code=1)
    assert line == "featx: error: unexpected RuntimeError: something odd second line; rerun with --debug for the traceback"
    monkeypatch.setattr(featx.fit, "fit", lambda *a, **k: (_ for _ in ()).throw(ValueError("All fits failed\nTraceback (most recent call last):\n  File x\nValueError: the cause")))
    assert one_error_line(invoke(*args), code=1) == ("featx: error: unexpected ValueError: ValueError: the cause; "
                                                      "rerun with --debug for the traceback")
    monkeypatch.setattr(featx.fit, "fit", boom)
    res = invoke("--debug", *args)
    assert res.exit_code == 1 and "Traceback" in res.stderr and "RuntimeError: something odd" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("featx: error: unexpected RuntimeError")


def test_featx_error_with_debug_shows_traceback(toy_cache, tmp_path):
    res = invoke("--debug", "fit", toy_cache, "--features", "nope", "-o", tmp_path / "m.joblib", "-q")
    assert res.exit_code == 2 and "Traceback" in res.stderr and "no feature set 'nope'" in res.stderr.splitlines()[-1]


def test_subprocess_usage_error_is_one_line_exit_2(toy_cache, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "featx.cli", "fit", str(toy_cache), "--features", "a",
                           "-o", str(tmp_path / "m.joblib"), "--cv", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "featx: error: invalid value for '--cv': 1: needs a whole number >= 2 (folds: cross-validation needs at "
        "least 2) (see `featx fit --help`)"]


@pytest.mark.parametrize("command", ["demo", "extract", "info", "fit", "predict", "compare"])
def test_every_help_ends_with_examples(command):
    res = invoke(command, "--help")
    assert res.exit_code == 0
    tail = res.stdout.rstrip().split("Examples:")[-1].strip().splitlines()
    assert "Examples:" in res.stdout and 1 <= len(tail) <= 2
    assert all(line.strip().startswith(f"featx {command}") for line in tail)


def test_verbose_sets_debug_logging(toy_cache):
    invoke("-v", "info", toy_cache)
    assert logging.getLogger("featx").level == logging.DEBUG
    invoke("info", toy_cache)
    assert logging.getLogger("featx").level == logging.INFO


def test_registry_defaults_and_choices():
    from featx.backbones.taps import POOLINGS
    from featx.fit import SCORINGS
    from featx.heads.zoo import HEADS
    from featx.runtime import PRECISIONS

    opts = {p.name: p for p in main.commands["fit"].params} | {p.name: p for p in main.commands["extract"].params}
    assert tuple(opts["head"].type.choices) == HEADS + ("ensemble",) and tuple(opts["scoring"].type.choices) == SCORINGS
    assert tuple(opts["pooling"].type.choices) == POOLINGS and tuple(opts["precision"].type.choices) == PRECISIONS
    for name in ("head", "scoring", "pooling", "precision"):
        assert opts[name].default in opts[name].type.choices
