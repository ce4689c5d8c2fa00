"""Issue 5's cross-checks on real BreastMNIST EfficientNet-Lite0 features."""
from __future__ import annotations

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from featx import DeepFeatures, load_features
from featx.fit import fit, table_from_arrays
from tests.support import BREAST_NPZ


def test_elm_within_003_test_auc_of_the_svm_head(breast_cache):
    """The SVM as `featx fit` tunes it by default; the ELM with its default parameters (a search
    on BreastMNIST's 78-image val split picks ELM settings by noise: AUC 0.85 here)."""
    svm = fit(breast_cache, "efficientnet_lite0", head="svm", n_boot=0)
    elm = fit(breast_cache, "efficientnet_lite0", head="elm", search="none", n_boot=0)
    a, b = svm.metrics["test"]["auc"], elm.metrics["test"]["auc"]
    assert a >= 0.87 and abs(a - b) <= 0.03, (a, b)


def test_deepfeatures_pipeline_predicts_what_featx_fit_predicts(breast_cache):
    """make_pipeline(DeepFeatures, StandardScaler, SVC) on image arrays == featx fit (svm, no search)
    on the cached features of the same rows (a subset keeps it fast)."""
    z = np.load(BREAST_NPZ)
    t = load_features(breast_cache, "efficientnet_lite0")
    tr = np.flatnonzero(t.splits == "train")[:120]
    te = np.flatnonzero(t.splits == "test")[:60]
    rows = np.concatenate([tr, te])
    table = table_from_arrays(t.X[rows], t.y[rows], sets={"efficientnet_lite0": t.X.shape[1]},
                              splits=t.splits[rows], ids=t.ids[rows], class_names=t.class_names,
                              configs=t.configs)
    result = fit(table, "efficientnet_lite0", head="svm", search="none", refit_on="train", n_boot=0)
    pipe = make_pipeline(DeepFeatures("efficientnet_lite0"), StandardScaler(), SVC())
    pipe.fit(z["train_images"][:120], z["train_labels"][:120])
    pred = pipe.predict(z["test_images"][:60])
    assert list(result.evaluation.ids) == list(t.ids[te])
    assert (np.asarray(result.evaluation.y_pred) == pred).all()
