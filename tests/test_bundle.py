"""featx.bundle: joblib + sha256 sidecar; loading refuses missing or mismatched hashes unless trusted."""
from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from featx.bundle import ModelBundle, file_sha256, load_bundle, save_bundle, sidecar_path
from featx.errors import ModelError


def _bundle():
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    return ModelBundle(pipeline=LogisticRegression().fit(X, y), class_names=["neg", "pos"], classes=[0, 1],
                       feature_sets=["a"], set_configs={"a": {"backbone": "x"}}, set_dims={"a": 3},
                       head="logreg", metrics={"test": {"auc": 0.9}})


def test_roundtrip_writes_a_sha256sum_sidecar(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "sub" / "m.joblib")
    side = sidecar_path(path)
    assert side.name == "m.joblib.sha256"
    assert side.read_text() == f"{file_sha256(path)}  m.joblib\n"
    b = load_bundle(path)
    assert b.class_names == ["neg", "pos"] and b.featx_version and b.sklearn_version and b.created
    assert b.metrics["test"]["auc"] == 0.9
    assert b.pipeline.predict(np.ones((1, 3))).shape == (1,)


def test_missing_sidecar_or_changed_file_is_refused_unless_trusted(tmp_path):
    path = save_bundle(_bundle(), tmp_path / "m.joblib")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch: the file changed since it was saved"):
        load_bundle(path)
    save_bundle(_bundle(), path)
    sidecar_path(path).unlink()
    with pytest.raises(ModelError, match=r"no m\.joblib\.sha256 sidecar.*--trust"):
        load_bundle(path)
    assert load_bundle(path, trust=True).head == "logreg"
    sidecar_path(path).write_text("not a digest\n")
    with pytest.raises(ModelError, match="is not a sha256 digest"):
        load_bundle(path)


def test_foreign_or_missing_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_bundle(tmp_path / "nope.joblib")
    other = tmp_path / "other.joblib"
    joblib.dump({"not": "a bundle"}, other)
    with pytest.raises(ModelError, match="not a featx model bundle"):
        load_bundle(other, trust=True)
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read model file"):
        load_bundle(junk, trust=True)
