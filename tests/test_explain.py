"""featx explain: outputs, fallbacks and per-set attribution (tiny random net), faithfulness (real weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from featx.errors import FeatxError
from tests.support import BREAST_NPZ, TINY


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """12 BreastMNIST images as PNGs (+ one broken file), features of a fusion: two taps of a tiny
    network + HOG, and logreg / xgboost models on them."""
    from featx.extraction import extract
    from featx.fit import fit

    root = tmp_path_factory.mktemp("explain")
    z = np.load(BREAST_NPZ)
    labels = z["train_labels"].ravel()
    for i in np.concatenate([np.flatnonzero(labels == 0)[:6], np.flatnonzero(labels == 1)[:6]]):
        label = int(labels[i])
        (root / "imgs" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(z["train_images"][i]).save(root / "imgs" / str(label) / f"im{i}.png")
    (root / "imgs" / "1" / "broken.png").write_bytes(b"not a png")
    cache = root / "f.h5"
    extract([str(root / "imgs")], cache, backbones=[TINY], weights="none", handcrafted=["hog"],
            layers=["head", "2"], progress=False)
    from featx.cache import list_sets
    sets = sorted(list_sets(cache))
    models = {h: fit(cache, sets, head=h, search="none", n_boot=0, cv=2).bundle for h in ("logreg", "xgboost")}
    return root, models


def test_fused_gradient_explain_writes_maps_overlays_gallery_and_per_set(fused, tmp_path):
    from featx.explain import explain

    root, models = fused
    res = explain(models["logreg"], [str(root / "imgs")], tmp_path, limit=4, faithfulness=False)
    assert res.method == "input-x-gradient" and res.notes == []
    assert [p for p, _ in res.failures] == [str(root / "imgs" / "1" / "broken.png")]
    assert len(res.rows) == 4
    for row in res.rows:
        m = np.load(tmp_path / row["map"])
        assert m.dtype == np.float32 and m.shape == (28, 28) and np.isfinite(m).all() and m.max() > 0
        assert (tmp_path / row["overlay"]).is_file()
    page = (tmp_path / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 8 and "src=\"http" not in page
    per_set = json.loads((tmp_path / "per_set.json").read_text())
    assert set(per_set["sets"]) == set(models["logreg"].feature_sets) and per_set["baseline"] == "training mean"
    assert abs(sum(v["share"] for v in per_set["sets"].values()) - 1) < 1e-9
    # the per-set drops are what the pipeline says when a set is replaced by its training mean
    hog = per_set["sets"]["hog"]
    assert hog["mean_abs_drop"] > 0


def test_drop_set_attribution_matches_a_direct_computation():
    from featx.explain import drop_set_attribution
    from featx.fit.pipeline import build_pipeline
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] > 0).astype(int)            # only set "a" carries the class
    sl = {"a": slice(0, 3), "b": slice(3, 6)}
    pipe = build_pipeline(sl, LogisticRegression()).fit(X, y)
    out = drop_set_attribution(pipe, X, sl)
    Xd = X.copy()
    Xd[:, 0:3] = X[:, 0:3].mean(0)           # StandardScaler's training mean = the rows' mean here
    p, pd_ = pipe.predict_proba(X), pipe.predict_proba(Xd)
    t = p.argmax(1)
    expect = (p[np.arange(80), t] - pd_[np.arange(80), t]).mean()
    assert out["sets"]["a"]["mean_drop"] == pytest.approx(expect)
    assert out["sets"]["a"]["share"] > 0.8


def test_unmirrorable_head_falls_back_to_occlusion_with_one_note(fused, tmp_path):
    from featx.explain import explain

    root, models = fused
    res = explain(models["xgboost"], [str(root / "imgs")], tmp_path, limit=2, faithfulness=False)
    assert res.method == "occlusion"
    assert len(res.notes) == 1 and "explaining by occlusion" in res.notes[0]
    assert np.load(tmp_path / res.rows[0]["map"]).shape == (28, 28)


def test_target_class_and_bad_target(fused, tmp_path):
    from featx.explain import explain

    root, models = fused
    name = models["logreg"].class_names[0]
    res = explain(models["logreg"], [str(root / "imgs")], tmp_path, limit=2, target=name,
                  method="gradcam", faithfulness=False)
    assert {r["target"] for r in res.rows} == {name} and res.method == "gradcam"
    for row in res.rows:                     # Grad-CAM of two taps, each mapped back through the crop
        m = np.load(tmp_path / row["map"])
        assert m.shape == (28, 28) and np.isfinite(m).all() and m.min() >= 0
    with pytest.raises(FeatxError, match="not a class of this model"):
        explain(models["logreg"], [str(root / "imgs")], tmp_path, target="nope")


def test_cli_bad_target_is_one_line_exit_2(fused, tmp_path):
    from featx.bundle import save_bundle
    from featx.cli.main import main

    root, models = fused
    path = save_bundle(models["logreg"], tmp_path / "m.joblib")
    res = CliRunner().invoke(main, ["explain", str(path), str(root / "imgs"), "-o", str(tmp_path / "o"),
                                    "--target", "nope"])
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1 and "not a class of this model" in res.output


def test_differentiable_model_equals_the_saved_pipeline(fused):
    """End to end in torch (image -> backbones -> mirrored head) == backbone features -> sklearn."""
    from featx.explain import DifferentiableModel, ImageScorer
    from featx.explain.model import hand_features

    root, models = fused
    bundle = models["logreg"]
    model = DifferentiableModel(bundle, output="proba")
    imgs = sorted((root / "imgs").rglob("im*.png"))[:3]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in imgs]))
    feats = hand_features(model.hand_use, x.numpy())
    hand = torch.from_numpy(np.concatenate([feats[s] for s in model.hand_widths], axis=1))
    got = model(x, hand).detach().numpy()
    want = ImageScorer(bundle, model.uses, model.hand_use)(x)
    assert np.abs(got - want).max() < 1e-4


def test_preprocess_batch_equals_featx_preprocess():
    from featx.backbones.preprocess import PreprocessConfig, preprocess
    from featx.explain.model import preprocess_batch

    cfg = PreprocessConfig(256, (224, 224), "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    im = np.load(BREAST_NPZ)["test_images"][0].astype(np.float32) / 255
    got = preprocess_batch(torch.from_numpy(im)[None, None], cfg)[0]
    assert torch.equal(got, preprocess(im, cfg))


@pytest.mark.slow
@pytest.mark.parametrize("head, limit", [("logreg", 24), ("svm", 24), ("xgboost", 24)])
def test_faithfulness_on_breastmnist_lite0(breast_cache, head, limit, tmp_path):
    """Real weights, the acceptance criteria on the first 24 BreastMNIST test images (the full
    156-image figures are in the README): normalised deletion AUC at least 20% below random maps',
    and maps of a randomised network rank-correlate below 0.5 with the real maps. Images the model
    gives the target class even when blank are skipped by the metric; at least 5 must be scored.
    On 16 to 64 images input x gradient measured 71-75% (svm) and 88-92% (logreg) below random,
    so 24 images give a stable verdict."""
    from featx.explain import explain
    from featx.fit import fit

    bundle = fit(breast_cache, "efficientnet_lite0", head=head, search="none", n_boot=0).bundle
    res = explain(bundle, [str(BREAST_NPZ)], tmp_path, split="test", limit=limit)
    f = json.loads((tmp_path / "faithfulness.json").read_text())
    assert res.method == ("occlusion" if head == "xgboost" else "input-x-gradient")
    assert f["n_scored"] >= 5 and f["n_scored"] + f["n_skipped"] == limit, f
    assert f["deletion_auc"] <= 0.8 * f["random_deletion_auc"], f
    assert f["sanity_rank_corr"] < 0.5, f


def test_input_x_gradient_is_gradient_times_offset_from_the_mean():
    """On a model whose gradient is known (score = sum of w * x per class), the map is
    w[target] * (x - mean(x)), summed over channels."""
    from featx.explain.methods import input_x_gradient

    w = torch.randn(2, 2, 3, 4, dtype=torch.float64)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return torch.einsum("bchw,kchw->bk", x.double(), w)

    x = torch.rand(3, 2, 3, 4)
    got = input_x_gradient(Linear(), x, [0, 1, 1])
    want = torch.stack([(w[t] * (x[i].double() - x[i].double().mean(dim=(1, 2), keepdim=True))).sum(0)
                        for i, t in enumerate([0, 1, 1])])
    assert got.shape == (3, 3, 4) and torch.allclose(got.double(), want, atol=1e-5)


def test_deletion_summary_normalises_each_curve_and_skips_images_that_do_not_drop():
    from featx.explain import faithfulness as FA

    curves = np.array([[0.9, 0.5, 0.1],     # drops 0.8: normalised 1, 0.5, 0
                       [0.6, 0.6, 0.8],     # blank image scores higher: skipped
                       [0.5, 0.2, 0.3]])    # drops 0.2: normalised 1, -0.5 (clipped to 0), 0
    rand = np.array([[0.9, 0.9, 0.1], [0.6, 0.7, 0.8], [0.5, 0.5, 0.3]])
    f = FA.summary(curves, rand, np.array([0.1, 0.2, 0.3]), np.array(["a", "b", "b"]), fractions=(0, 0.5, 1),
                   flat_random_maps=np.array([False, True, True]))
    assert f["n_flat_randomised_maps"] == 2
    assert (f["n_scored"], f["n_skipped"], f["per_image"]["scored"]) == (2, 1, [True, False, True])
    assert f["per_image"]["deletion_auc"] == pytest.approx([0.5, 0.25])     # (1 + 2*0.5 + 0)/4, (1 + 0 + 0)/4
    assert f["per_image"]["random_deletion_auc"] == pytest.approx([0.75, 0.75])
    assert f["deletion_vs_random"] == pytest.approx(1 - 0.375 / 0.75)
    assert f["by_target"]["b"] == {"n_scored": 1, "n_images": 2, "deletion_auc": pytest.approx(0.25),
                                   "random_deletion_auc": pytest.approx(0.75),
                                   "deletion_vs_random": pytest.approx(2 / 3)}
    # unequal fractions: trapezoids over the deleted fraction, (0.1 * (1 + 0.5) + 0.9 * 0.5) / 2
    assert FA.curve_auc(np.array([[1.0, 0.5, 0.0]]), (0, 0.1, 1)) == pytest.approx([0.3])
    # deletion images: the top fraction of pixels by the map, in map order, become the baseline
    img = torch.arange(4.0).view(1, 1, 2, 2)
    dels = FA.deletion_images(img, np.array([[[0.1, 0.9], [0.5, 0.2]]]), torch.full_like(img, -1), (0, 0.25, 0.5, 1))
    assert dels[:, 0].flatten(1).tolist() == [[0, 1, 2, 3], [0, -1, 2, 3], [0, -1, -1, 3], [-1, -1, -1, -1]]
    x = torch.rand(2, 1, 5, 6)
    base = FA.deletion_baseline(x)
    assert torch.allclose(base[:, :, 2, 3], x.mean(dim=(2, 3)))
    assert FA.as_probabilities(np.array([[0.0, np.log(3)]]), proba=False)[0] == pytest.approx([0.25, 0.75])


def test_gradcam_map_is_placed_where_the_crop_came_from():
    """A map over the network input (the centre crop of the resized image) covers only the
    cropped part of the original: 16 px image, resized to 32, centre 16 cropped = pixels 4..11."""
    from featx.backbones.preprocess import PreprocessConfig
    from featx.explain.methods import to_input_frame

    cfg = PreprocessConfig(32, (16, 16), "bilinear", (0.5,) * 3, (0.5,) * 3)
    cam = torch.zeros(1, 1, 16, 16)
    cam[..., :8, :] = 1.0                               # top half of the crop
    got = to_input_frame(cam, cfg, 16, 16)[0]
    want = torch.zeros(16, 16)
    want[4:8, 4:12] = 1.0                               # top half of the cropped region
    assert torch.allclose(got, want, atol=1e-6)


def test_result_line_says_when_the_randomised_maps_were_flat(tmp_path):
    from featx.explain.run import ExplainResult

    f = {"deletion_auc": 0.02, "random_deletion_auc": 0.09, "n_scored": 3, "n_skipped": 1, "sanity_rank_corr": 0.0}
    none_flat = ExplainResult(tmp_path, "input-x-gradient", faithfulness=dict(f, n_flat_randomised_maps=0))
    assert "flat" not in none_flat.line()
    line = ExplainResult(tmp_path, "input-x-gradient", faithfulness=dict(f, n_flat_randomised_maps=4)).line()
    assert "4 randomised maps flat" in line and "rank corr 0.00" in line
