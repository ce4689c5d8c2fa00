"""Reduced precision must not change what a clinician would get: fidelity of bf16 against fp32.

Real EfficientNet-Lite0 weights on the real BreastMNIST images: every image's bf16 feature vector
has cosine similarity >= 0.99 with its fp32 vector, and the SVM head's test AUC moves by < 0.01.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from featx import load_features
from featx.cache import list_sets
from featx.extraction import extract
from tests.support import BREAST_NPZ


@pytest.fixture(scope="module")
def fp32_and_bf16(tmp_path_factory, breast_cache):
    cache = tmp_path_factory.mktemp("prec") / "p.h5"
    extract([str(BREAST_NPZ)], cache, precision="fp32", progress=False)
    bf16 = breast_cache if list_sets(breast_cache)["efficientnet_lite0"]["precision"] == "bf16" else cache
    if bf16 is cache:  # this machine's default is not bf16: make the bf16 set explicitly
        extract([str(BREAST_NPZ)], cache, precision="bf16", progress=False)
    by_prec = {cfg["precision"]: (c, name) for c in {cache, bf16} for name, cfg in list_sets(c).items()}
    assert {"fp32", "bf16"} <= set(by_prec)
    assert by_prec["bf16"][1].startswith("efficientnet_lite0")
    return load_features(*by_prec["fp32"]), load_features(*by_prec["bf16"])


def test_bf16_features_are_close_to_fp32_for_every_image(fp32_and_bf16):
    assert _worst_cosine(*fp32_and_bf16) >= 0.99


def _svm_test_auc(t) -> float:
    tr, te = t.splits == "train", t.splits == "test"
    clf = make_pipeline(StandardScaler(), SVC()).fit(t.X[tr], t.y[tr])
    return roc_auc_score(t.y[te], clf.decision_function(t.X[te]))


def _worst_cosine(a, b) -> float:
    assert (a.ids == b.ids).all()
    return float(((a.X * b.X).sum(1) / (np.linalg.norm(a.X, axis=1) * np.linalg.norm(b.X, axis=1))).min())


def test_bf16_svm_auc_within_001_of_fp32(fp32_and_bf16):
    aucs = [_svm_test_auc(t) for t in fp32_and_bf16]
    assert abs(aucs[0] - aucs[1]) < 0.01, aucs
    assert min(aucs) > 0.85, aucs


@pytest.mark.slow
def test_compiled_bf16_with_the_policy_keeps_fidelity(fp32_and_bf16, tmp_path, caplog):
    """What --compile on / auto runs: Lite0 inductor-compiled (freezing) under bf16 and the
    fp32 stem/depthwise policy. Same bars as eager bf16."""
    import logging
    cache = tmp_path / "compiled.h5"
    with caplog.at_level(logging.WARNING, logger="featx"):
        s = extract([str(BREAST_NPZ)], cache, precision="bf16", compile="on", progress=False)
    assert not [r for r in caplog.records if "compilation failed" in r.getMessage()]
    (name,) = s.sets
    assert list_sets(cache)[name]["compiled"] == {"backend": "aot_inductor", "freezing": True}
    fp32, compiled = fp32_and_bf16[0], load_features(cache, name)
    assert _worst_cosine(fp32, compiled) >= 0.99
    aucs = [_svm_test_auc(fp32), _svm_test_auc(compiled)]
    assert abs(aucs[0] - aucs[1]) < 0.01, aucs



def test_policy_keeps_the_stem_and_depthwise_convs_fp32(fp32_and_bf16):
    from torch import nn

    from featx.backbones.precision import FP32, POLICY, keep_sensitive_layers_fp32
    from featx.backbones.registry import build
    net = build("efficientnet_lite0").model.model
    depthwise = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels]
    assert keep_sensitive_layers_fp32(net) == 1 + len(depthwise) == 17
    assert [n for n, m in net.named_modules() if isinstance(m, FP32)] == ["conv_stem"] + depthwise
    assert keep_sensitive_layers_fp32(net) == 0  # applied once
    bf16 = fp32_and_bf16[1]
    assert all(c["precision_policy"] == POLICY for c in bf16.configs.values())
