"""Safe model bundles (skops + an explicit type list): crafted files cannot run code on load, edited
files are refused in one line, and bundles written by featx before (joblib pickles) still predict the same."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from featx.bundle import (ModelBundle, bundle_file_format, file_sha256, load_bundle, resave_hint, save_bundle,
                          sidecar_path, untrusted_types)
from featx.errors import ModelError

V1 = Path(__file__).parent / "data" / "bundle-v1"


class CommandOnLoad:
    """Runs a shell command when rebuilt from its state (what a hostile bundle would carry)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __getstate__(self):
        return {"marker": self.marker}

    def __setstate__(self, state):
        os.system(f"touch {state['marker']}")
        self.__dict__.update(state)


class CommandOnUnpickle:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bundle(pipeline=None):
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    return ModelBundle(pipeline=pipeline if pipeline is not None else LogisticRegression().fit(X, y),
                       class_names=["neg", "pos"], classes=[0, 1], feature_sets=["a"],
                       set_configs={"a": {"backbone": "x"}}, set_dims={"a": 3}, head="logreg")


def test_default_format_is_skops_and_keeps_the_name_given(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "m.joblib")  # the name given is kept; content decides the format
    assert path.name == "m.joblib" and bundle_file_format(path) == "skops"
    assert zipfile.is_zipfile(path) and "schema.json" in zipfile.ZipFile(path).namelist()
    assert untrusted_types(path) == []
    assert load_bundle(path).head == "logreg"


def test_a_bundle_that_would_run_a_command_is_refused_and_the_command_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _bundle(pipeline=CommandOnLoad(marker))
    path = tmp_path / "evil.skops"
    path.write_bytes(skops.io.dumps(evil))
    sidecar_path(path).write_text(f"{file_sha256(path)}  {path.name}\n")
    for trust in (False, True):
        with pytest.raises(ModelError, match=r"refusing to load: the bundle holds type "
                                             r"tests\.test_safe_bundle\.CommandOnLoad") as err:
            load_bundle(path, trust=trust)
        assert "\n" not in str(err.value)
    assert not marker.exists()
    # the payload is real: a loader that trusts the type runs it
    skops.io.load(path, trusted=["tests.test_safe_bundle.CommandOnLoad", "featx.bundle.ModelBundle"])
    assert marker.exists()


def test_a_pickle_that_would_run_a_command_needs_trust(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.joblib"
    joblib.dump(CommandOnUnpickle(marker), path)
    with pytest.raises(ModelError, match=r"pickle-based \(joblib\) bundle: loading it can run code.*--trust"):
        load_bundle(path)
    assert not marker.exists()


def test_a_tampered_bundle_is_refused_in_one_line(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "m.skops")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch: the file changed since it was saved") as err:
        load_bundle(path)
    assert "\n" not in str(err.value)


def test_an_edited_pickle_is_refused_even_with_trust(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "m.joblib", file_format="joblib")
    assert bundle_file_format(path) == "joblib"
    assert load_bundle(path, trust=True).head == "logreg"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_bundle(path, trust=True)


@pytest.mark.parametrize("head", ["svm", "xgboost"])
def test_v1_joblib_bundles_still_predict_the_same_and_resave_safely(tmp_path, head):
    path = V1 / f"{head}.joblib"
    expected = json.loads((V1 / f"{head}.expected.json").read_text())
    X = np.asarray(expected["X"], np.float32)
    with pytest.raises(ModelError, match="--trust"):
        load_bundle(path)
    old = load_bundle(path, trust=True)
    assert old.ood is None  # made before featx stored a detector
    np.testing.assert_allclose(old.pipeline.predict_proba(X), expected["proba"], rtol=1e-6, atol=1e-9)
    hint = resave_hint(path)
    assert "\n" not in hint and "save_bundle(load_bundle(" in hint
    new = save_bundle(old, tmp_path / f"{head}.skops")
    assert bundle_file_format(new) == "skops"
    np.testing.assert_allclose(load_bundle(new).pipeline.predict_proba(X), expected["proba"], rtol=1e-6, atol=1e-9)


def test_v1_bundle_predict_notes_suggest_a_resave(tmp_path):
    from featx.fit import predict
    from tests.fit_helpers import toy_data, write_cache

    sets, y = toy_data(n=20, seed=3, d_a=8, d_b=4)
    cache = write_cache(tmp_path / "c.h5", sets, y)
    bundle = load_bundle(V1 / "svm.joblib", trust=True)
    for name in bundle.feature_sets:  # the toy cache's configs are the fixture's
        assert bundle.set_configs[name]["backbone"] == name
    df = predict(V1 / "svm.joblib", cache=cache, trust=True)
    assert any("re-save it in the safe format" in n for n in df.attrs["notes"])
    assert df["ood_score"].isna().all() and not df["ood"].any() and df.attrs["summary"]["ood_scored"] is False
