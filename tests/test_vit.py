"""Transformer backbones: token pooling cls|avg|cls+avg, prefix tokens and registers, stage taps
through timm's forward_intermediates, recorded in the set's config."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from featx.backbones.registry import build, check_backbone
from featx.backbones.taps import pool
from featx.errors import BackboneError
from tests.support import BREAST_NPZ, TINY, run_cli

VIT = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    d = np.load(BREAST_NPZ)
    path = tmp_path_factory.mktemp("vit") / "breast20.npz"
    np.savez(path, train_images=d["train_images"][:20], train_labels=d["train_labels"][:20])
    return path


def _tokens(model, x):
    """Every block's output by hand (the ground truth forward_intermediates must match)."""
    t = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    out = []
    for blk in model.blocks:
        t = blk(t)
        out.append(t)
    return out, model.norm(t)


def test_token_pooling_matches_the_tokens_by_hand():
    x = torch.randn(2, 3, 224, 224)
    got = {}
    bb = build(VIT, weights="none", layers=["head", "blocks.5", "blocks.5.mlp"], pooling="cls")
    for p in ("cls", "avg", "cls+avg"):
        fm = bb.model.with_taps(bb.taps, p)
        with torch.inference_mode():
            got[p] = fm(x)
        fm.remove_hooks()
    model = bb.model.model
    with torch.inference_mode():
        blocks, final = _tokens(model, x)
    assert model.num_prefix_tokens == 1
    torch.testing.assert_close(got["cls"]["blocks.5"], blocks[5][:, 0])
    torch.testing.assert_close(got["avg"]["blocks.5"], blocks[5][:, 1:].mean(1))
    torch.testing.assert_close(got["cls+avg"]["blocks.5"], torch.cat([blocks[5][:, 0], blocks[5][:, 1:].mean(1)], 1))
    torch.testing.assert_close(got["cls"]["head"], final[:, 0])
    torch.testing.assert_close(got["avg"]["head"], final[:, 1:].mean(1))
    assert got["cls"]["blocks.5.mlp"].shape == (2, 192)  # a hooked module: pooled the same way


def test_registers_are_prefix_tokens_left_out_of_avg():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    # a class token and 4 registers (num_prefix_tokens = 5): avg is the one patch token
    torch.testing.assert_close(pool(tokens, "avg", 5), tokens[:, 5])
    torch.testing.assert_close(pool(tokens, "cls", 5), tokens[:, 0])
    bb = build("vit_small_patch14_reg4_dinov2", weights="none", layers=["blocks.1"], pooling="avg")
    assert bb.model.model.num_prefix_tokens == 5 and bb.dims == {"blocks.1": 384}


def test_pooling_that_does_not_fit_the_model_is_one_line():
    with pytest.raises(BackboneError, match=r"^pooling 'cls' needs a transformer with a class token; 'timm/test_efficientnet'"):
        check_backbone(TINY, pooling="cls")
    with pytest.raises(BackboneError, match=r"pooling 'gem' does not apply to the tokens"):
        check_backbone(VIT, pooling="gem")


@pytest.mark.slow
def test_swin_stages_come_channels_first_from_forward_intermediates():
    bb = build("swin_tiny_patch4_window7_224", weights="none", layers=["layers.1", "head"], pooling="max")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        out = bb.model(x)
        ref = bb.model.model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    assert bb.dims == {"layers.1": 192, "head": 768}
    torch.testing.assert_close(out["layers.1"], ref.amax(dim=(2, 3)))


def test_cnn_config_has_no_transformer_key_and_vit_config_records_tokens():
    assert "transformer" not in build(TINY, weights="none").config()
    cfg = build(VIT, weights="none", pooling="cls").config()
    assert cfg["pooling"] == "cls"
    assert cfg["transformer"] == {"num_prefix_tokens": 1, "stage_taps": "forward_intermediates"}


@pytest.mark.slow
def test_extract_cls_and_avg_give_two_different_sets(small_npz, tmp_path):
    cache = tmp_path / "vit.h5"
    base = ["extract", small_npz, "-o", cache, "--backbone", VIT, "--weights", "none", "-q", "--batch-size", "10"]
    for extra in (["--pooling", "cls"], ["--pooling", "avg"], ["--pooling", "cls+avg", "--layers", "blocks.5"]):
        res = run_cli(*base, *extra)
        assert res.returncode == 0, res.stderr
    with h5py.File(cache, "r") as f:
        names = sorted(n for n in f["features"] if not n.endswith("_ok"))
        assert names == [f"{VIT}_random", f"{VIT}_random.blocks.5_cls_avg", f"{VIT}_random_cls"]
        cls, avg = f["features"][f"{VIT}_random_cls"][()], f["features"][f"{VIT}_random"][()]
        assert cls.shape == avg.shape == (20, 192) and not np.allclose(cls, avg)
        assert f["features"][f"{VIT}_random.blocks.5_cls_avg"].shape == (20, 384)
    res = run_cli(*base, "--pooling", "cls", "--backbone", TINY)
    assert res.returncode == 2 and "pooling 'cls' needs a transformer" in res.stderr
