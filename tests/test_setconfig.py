"""featx.setconfig: a set's config decodes back into extract() arguments that make the same set.

Round trip for every kind of backbone and handcrafted set: extract -> the cache's config ->
extraction_calls -> extract into a fresh cache -> the same set names and the same configs (but
provenance), and the same features.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from featx import cache as C
from featx.errors import FeatxError
from featx.extraction import extract
from featx.setconfig import comparable, config_diff, extraction_calls

from tests.support import TINY, write_png

RUN = dict(progress=False, workers=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("rt") / "imgs"
    for c in ("a", "b"):
        for i in range(2):
            write_png(root / c / f"{c}{i}.png", (rng.random((36 + 5 * i, 44, 3)) * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def tiny_weights_file(tmp_path_factory):
    import timm
    import torch
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    return path


CASES = {
    "alias_package_weights": dict(backbones=["efficientnet_lite0"], precision="fp32"),
    "torchvision_name": dict(backbones=["mobilenet_v3_small"], weights="none", precision="fp32"),
    "timm_name_taps_max": dict(backbones=["test_efficientnet"], weights="none", precision="fp32",
                               layers=["1", "head"], pooling="max"),
    "concat_gem_bf16": dict(backbones=[TINY], weights="none", precision="bf16", layers=["blocks.0", "2"],
                            concat_layers=True, pooling="gem"),
    "read_options": dict(backbones=[TINY], weights="none", precision="fp32", window=(40.0, 400.0),
                         intensity="minmax", jpeg_draft=False),
    "window_preset": dict(backbones=[TINY], weights="none", precision="fp32", window="lung"),
    "weights_file": dict(backbones=[TINY], precision="fp32"),      # weights= set in the test
    "handcrafted_defaults": dict(backbones=[], handcrafted="hog,lbp,glcm,firstorder"),
    "handcrafted_overrides": dict(backbones=[], handcrafted="hog:orientations=12,lbp:method=ror,"
                                  "glcm:levels=32,distances=(1,2),firstorder:bins=16", intensity="dtype"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_decodes_to_a_call_that_makes_the_same_set(case, images, tiny_weights_file, tmp_path):
    kw = dict(CASES[case])
    weights_files = []
    if case == "weights_file":
        kw["weights"] = str(tiny_weights_file)
        weights_files = [str(tiny_weights_file)]
    first = tmp_path / "first.h5"
    s1 = extract(images, first, **kw, **RUN)
    configs = C.list_sets(first)
    assert sorted(configs) == sorted(s1.sets) and configs

    calls = extraction_calls(configs, weights_files=weights_files)
    assert calls and all(json.dumps(c, default=str) for c in calls)
    again = tmp_path / "again.h5"
    names = []
    for call in calls:
        names += extract(images, again, **call, **RUN).sets
    remade = C.list_sets(again)
    assert sorted(names) == sorted(s1.sets) == sorted(remade)            # the same set names
    for name in s1.sets:
        assert comparable(remade[name]) == comparable(configs[name]), config_diff(configs[name], remade[name])
        a, b = C.load_features(first, name), C.load_features(again, name)
        assert list(a.ids) == list(b.ids) and np.array_equal(a.X, b.X)


def test_expected_calls_for_taps_and_read_options():
    base = {"kind": "deep", "backbone": TINY, "pooling": "gem", "precision": "bf16",
            "weights": {"source": "none"}, "read": {"window": [40.0, 400.0], "intensity": "minmax", "draft_size": None}}
    calls = extraction_calls({"a": dict(base, taps=["blocks.1"]), "b": dict(base, taps=["head"]),
                              "c": dict(base, taps=["blocks.0", "blocks.2"])})
    assert calls == [
        dict(backbones=[TINY], layers=["blocks.1", "head"], pooling="gem", weights="none", precision="bf16",
             concat_layers=False, window=(40.0, 400.0), intensity="minmax", jpeg_draft=False),
        dict(backbones=[TINY], layers=["blocks.0", "blocks.2"], pooling="gem", weights="none", precision="bf16",
             concat_layers=True, window=(40.0, 400.0), intensity="minmax", jpeg_draft=False),
    ]


def test_a_weights_file_not_given_is_a_clear_error():
    cfg = {"kind": "deep", "backbone": TINY, "weights": {"source": "file", "sha256": "ab" * 32}, "taps": ["head"]}
    with pytest.raises(FeatxError, match=r"local weights file \(sha256 abababababab"):
        extraction_calls({"w": cfg})
    with pytest.raises(FeatxError, match="names no backbone"):
        extraction_calls({"x": {"kind": "deep"}})


def test_comparable_ignores_versions_and_diff_names_what_differs():
    a = {"backbone": "x", "pooling": "avg", "versions": {"torch": "1"}}
    b = {"backbone": "x", "pooling": "max", "versions": {"torch": "2"}}
    assert comparable(a) == comparable(dict(a, versions={"torch": "9"}))
    assert comparable(a) != comparable(b)
    assert config_diff(a, b) == 'pooling: model "avg" vs features "max"'
    assert config_diff(a, dict(a, extra=1)) == 'extra: model "<absent>" vs features 1'
