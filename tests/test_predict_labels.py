"""`featx predict` labels rows with the data's own classes (issue 11.1): real chest X-rays through
the tiny net, a model trained on no/ + yes/, predicted on folders holding other class sets."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from featx.cache import list_sets, load_features
from featx.extraction import extract
from featx.fit import fit, predict

from tests.support import TINY

RUN = dict(backbones=[TINY], weights="none", precision="fp32", progress=False, workers=0)


def _folder(root, chest, counts: dict[str, tuple[str, int, int]]):
    """root/<name>/ with images [start, start+n) of chest's train/<CLASS>/ for each name."""
    for name, (cls, start, n) in counts.items():
        (root / name).mkdir(parents=True)
        for p in sorted((chest / "train" / cls).glob("*.jpeg"))[start:start + n]:
            shutil.copy(p, root / name / p.name)
    return root


@pytest.fixture(scope="module")
def model(chest_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("labels")
    train = _folder(work / "train", chest_dir, {"no": ("NORMAL", 0, 8), "yes": ("PNEUMONIA", 0, 8)})
    extract([str(train)], work / "train.h5", **RUN)
    (name,) = list_sets(work / "train.h5")
    res = fit(work / "train.h5", name, "logreg", search="none", cv=2, n_boot=0)
    assert res.bundle.class_names == ["no", "yes"]
    return res.save(work / "model.joblib"), work, chest_dir


def _folder_class(path: str) -> str:
    return path.replace("\\", "/").split("/")[-2]


def test_a_folder_of_one_class_is_labelled_with_that_class(model):
    path, work, chest = model
    only_yes = _folder(work / "only_yes", chest, {"yes": ("PNEUMONIA", 20, 5)})
    df = predict(path, [str(only_yes)])
    assert len(df) == 5 and (df["true_label"] == "yes").all()
    assert set(df["predicted_label"]) <= {"no", "yes"} and {"prob_no", "prob_yes"} <= set(df.columns)
    s = df.attrs["summary"]
    assert s["n_labelled"] == 5 and s["accuracy"] == pytest.approx((df["predicted_label"] == "yes").mean())

    from featx.cli.main import main
    out = work / "only_yes.csv"
    r = CliRunner().invoke(main, ["predict", str(path), str(only_yes), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    csv = pd.read_csv(out)
    assert len(csv) == 5 and (csv["true_label"] == "yes").all()


def test_classes_in_another_order_and_predict_from_the_cache(model):
    path, work, chest = model
    cache = work / "other_order.h5"
    only_yes = _folder(work / "yes_first", chest, {"yes": ("PNEUMONIA", 30, 3)})
    predict(path, [str(only_yes)], cache=cache)                      # the cache now knows "yes" only
    both = _folder(work / "both", chest, {"no": ("NORMAL", 30, 4), "yes": ("PNEUMONIA", 40, 4)})
    df = predict(path, [str(both)], cache=cache)
    (name,) = list_sets(cache)
    assert load_features(cache, name).class_names == ["yes", "no"]   # the other order than the model's
    assert len(df) == 8 and (df["true_label"] == [_folder_class(p) for p in df["path"]]).all()
    assert sorted(df["true_label"]) == ["no"] * 4 + ["yes"] * 4

    from_cache = predict(path, cache=cache)
    assert len(from_cache) == 11
    assert (from_cache["true_label"] == [_folder_class(p) for p in from_cache["path"]]).all()
    merged = from_cache.set_index("id").loc[df["id"]]
    np.testing.assert_allclose(merged["prob_yes"].to_numpy(), df["prob_yes"].to_numpy(), rtol=1e-6)
    hits = (from_cache["predicted_label"] == from_cache["true_label"]).mean()
    assert from_cache.attrs["summary"]["accuracy"] == pytest.approx(hits)
