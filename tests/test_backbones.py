"""Backbones: real offline weights, key renaming, local weight files, taps, pooling, preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from featx.backbones import weights as W
from featx.backbones.preprocess import preprocess
from featx.backbones.registry import build, resolve
from featx.errors import BackboneError, WeightsError
from tests.support import TINY


def _classify(bb, image):
    x = preprocess(image, bb.preprocess).unsqueeze(0)
    with torch.inference_mode():
        return bb.model.model(x).softmax(-1)[0]


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_offline_efficientnet_lite_weights_are_real_imagenet(name, size):
    """Chelsea the cat must come out as a cat: the weights are real, the renaming is right."""
    bb = build(name)
    assert bb.weights.source.startswith("package:") and len(bb.weights.sha256) == 64
    assert bb.preprocess.crop_size == (size, size) and bb.preprocess.interpolation == "bicubic"
    assert bb.preprocess.mean == (0.5, 0.5, 0.5) and bb.preprocess.std == (0.5, 0.5, 0.5)
    probs = _classify(bb, skimage.data.chelsea().astype(np.float32) / 255.0)
    assert int(probs.argmax()) in (281, 282, 285), int(probs.argmax())  # tabby, tiger cat, Egyptian cat
    assert float(probs[281:286].sum()) > 0.5
    assert bb.dims == {"head": 1280}


def test_efficientnet_pytorch_keys_map_one_to_one_onto_timm():
    import timm
    sd = W.read_state_dict(W.package_weights_path("tf_efficientnet_lite0"))
    model = timm.create_model("tf_efficientnet_lite0")
    renamed = W.efficientnet_pytorch_to_timm(sd, [len(s) for s in model.blocks])
    assert set(renamed) == set(model.state_dict())
    assert all(renamed[k].shape == v.shape for k, v in model.state_dict().items())
    assert "blocks.0.0.conv_dw.weight" in renamed and "blocks.1.0.conv_pwl.weight" in renamed


def test_local_weights_file_loads_and_is_hashed(tmp_path):
    src = build(TINY, weights="none")
    f = tmp_path / "w.pth"
    torch.save(src.model.model.state_dict(), f)
    bb = build(TINY, weights=str(f))
    assert bb.weights.source == "file" and bb.weights.sha256 == W.sha256_file(f)
    x = torch.randn(2, 3, *bb.preprocess.crop_size)
    with torch.inference_mode():
        torch.testing.assert_close(bb.model(x)["head"], src.model(x)["head"])


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    f = tmp_path / "wrong.pth"
    torch.save({"conv_stem.weight": torch.zeros(1)}, f)
    with pytest.raises(WeightsError, match=r"wrong\.pth: weights do not fit the backbone"):
        build(TINY, weights=str(f))
    pickle_with_code = tmp_path / "code.pth"
    torch.save({"obj": object()}, pickle_with_code)  # not loadable with weights_only=True
    with pytest.raises(WeightsError, match="weights-only"):
        build(TINY, weights=str(pickle_with_code))
    with pytest.raises(WeightsError, match="does not exist"):
        build(TINY, weights=str(tmp_path / "missing.pth"))


def test_missing_pretrained_weights_say_how_to_get_them(monkeypatch):
    import torch.hub

    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"--weights FILE.*--weights none"):
        build("resnet18")


def test_torchvision_preprocessing_comes_from_the_weights_enum():
    import torchvision
    bb = build("resnet18", weights="none")
    t = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert bb.preprocess.crop_size == tuple(t.crop_size) * (2 // len(t.crop_size))
    assert bb.preprocess.resize_size == t.resize_size[0] and tuple(bb.preprocess.mean) == tuple(t.mean)
    assert bb.dims == {"head": 512} and resolve("resnet18").library == "torchvision"
    assert resolve("timm/resnet18").library == "timm"


def test_taps_and_pooling():
    bb = build(TINY, weights="none", layers=["0", "-1", "head"], pooling="gem")
    stages = [f["module"] for f in bb.model.model.feature_info]
    assert bb.taps == [stages[0], stages[-1], "head"]
    x = torch.rand(2, 3, *bb.preprocess.crop_size)
    with torch.inference_mode():
        out = bb.model(x)
        fmap = bb.model.model.forward_features(x)
    assert out["head"].shape == (2, bb.model.model.num_features)
    torch.testing.assert_close(out["head"], fmap.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3))
    only_early = build(TINY, weights="none", layers=["0"], pooling="max")
    assert list(only_early.dims) == [stages[0]]
    with pytest.raises(BackboneError, match="no layer"):
        build(TINY, weights="none", layers=["not_a_layer"])
    with pytest.raises(BackboneError, match="unknown backbone"):
        build("definitely_not_a_model_xyz")


def test_preprocess_gray_sixteen_bit_float_image():
    from featx.backbones.preprocess import PreprocessConfig
    cfg = PreprocessConfig(256, (224, 224), "bicubic", (0.5,) * 3, (0.5,) * 3)
    img = np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400)
    t = preprocess(img, cfg)
    assert t.shape == (3, 224, 224)
    assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])  # gray replicated
    assert -1.0 <= float(t.min()) and float(t.max()) <= 1.0


def _features(bb, x):
    with torch.inference_mode():
        return bb.model(x)["head"]


def test_lightning_checkpoint_with_model_prefix_loads_with_arch(tmp_path):
    """{"state_dict": {"model.<key>": ...}} (a LightningModule holding the net as ``self.model``,
    beside a loss with its own tensors) loads strictly and gives the same features."""
    src = build(TINY, weights="none")
    sd = {f"model.{k}": v for k, v in src.model.model.state_dict().items()}
    sd["loss_fn.pos_weight"] = torch.ones(1)
    f = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 12}, f)
    bb = build(TINY, weights=str(f))
    x = torch.randn(2, 3, *bb.preprocess.crop_size)
    torch.testing.assert_close(_features(bb, x), _features(src, x))
    assert bb.weights.source == "file"
    # strict all the same: a missing tensor under the prefix is named
    del sd["model.conv_stem.weight"]
    torch.save({"state_dict": sd}, f)
    with pytest.raises(WeightsError, match=r"epoch=3\.ckpt: weights do not fit the backbone: 1 missing \(e\.g\. conv_stem\.weight\)"):
        build(TINY, weights=str(f))


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file
    src = build(TINY, weights="none")
    f = tmp_path / "net.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in src.model.model.state_dict().items()}, str(f))
    bb = build(TINY, weights=str(f))
    x = torch.randn(1, 3, *bb.preprocess.crop_size)
    torch.testing.assert_close(_features(bb, x), _features(src, x))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match=r"bad\.safetensors: cannot load"):
        build(TINY, weights=str(bad))


@pytest.mark.slow
def test_cli_arch_takes_a_users_checkpoint(tmp_path):
    import h5py
    import numpy as np

    from tests.support import BREAST_NPZ, run_cli
    d = np.load(BREAST_NPZ)
    npz = tmp_path / "b.npz"
    np.savez(npz, train_images=d["train_images"][:6], train_labels=d["train_labels"][:6])
    src = build(TINY, weights="none")
    ckpt = tmp_path / "mine.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.model.model.state_dict().items()}}, ckpt)
    cache = tmp_path / "c.h5"
    res = run_cli("extract", npz, "-o", cache, "--weights", ckpt, "--arch", TINY, "-q")
    assert res.returncode == 0, res.stderr
    res2 = run_cli("extract", npz, "-o", cache, "--weights", "none", "--backbone", TINY, "-q")
    assert res2.returncode == 0, res2.stderr
    with h5py.File(cache, "r") as f:
        sets = {n: f["features"][n][()] for n in f["features"] if not n.endswith("_ok")}
    mine = next(v for n, v in sets.items() if "_w" in n)
    np.testing.assert_allclose(mine, sets[[n for n in sets if n.endswith("_random")][0]], rtol=1e-5, atol=1e-6)
    res = run_cli("extract", npz, "-o", tmp_path / "d.h5", "--arch", TINY, "-q")
    assert res.returncode == 2 and "--arch names the architecture of a checkpoint" in res.stderr
