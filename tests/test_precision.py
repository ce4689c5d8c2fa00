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
    a, b = fp32_and_bf16
    assert (a.ids == b.ids).all()
    cos = (a.X * b.X).sum(1) / (np.linalg.norm(a.X, axis=1) * np.linalg.norm(b.X, axis=1))
    assert cos.min() >= 0.99, cos.min()


def test_bf16_svm_auc_within_001_of_fp32(fp32_and_bf16):
    aucs = []
    for t in fp32_and_bf16:
        tr, te = t.splits == "train", t.splits == "test"
        clf = make_pipeline(StandardScaler(), SVC()).fit(t.X[tr], t.y[tr])
        aucs.append(roc_auc_score(t.y[te], clf.decision_function(t.X[te])))
    assert abs(aucs[0] - aucs[1]) < 0.01, aucs
    assert min(aucs) > 0.85, aucs



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
