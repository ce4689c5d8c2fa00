"""featx.robustness: corruptions (shape, range, severity order, reproducibility) and the report
of a real saved model (tiny random backbone: mechanics; BreastMNIST numbers are in the README)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from featx.robustness import CORRUPTIONS, SEVERITIES, corrupt, evaluate_robustness, write_robustness_report

BREAST_NPZ = __import__("featx").__path__[0] + "/data/breastmnist.npz"


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("shape", [(28, 28), (40, 32, 3)])
def test_each_corruption_keeps_shape_and_range_and_grows_with_severity(name, shape):
    rng0 = np.random.default_rng(0)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    base = 0.25 + 0.5 * ((np.sin(yy / 3.0) * np.cos(xx / 4.0)) > 0)  # structure for blur/pixelate to remove
    image = (base[..., None] * np.array([1.0, 0.8, 0.6]) if len(shape) == 3 else base).astype(np.float32)
    image = np.clip(image + rng0.normal(0, 0.02, image.shape), 0, 1).astype(np.float32)
    changes = []
    for sev in SEVERITIES:
        out = corrupt(image, name, sev, np.random.default_rng(1))
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        again = corrupt(image, name, sev, np.random.default_rng(1))
        np.testing.assert_array_equal(out, again)
        changes.append(float(np.abs(out - image).mean()))
    assert changes[0] > 0.002, changes
    assert changes[-1] >= changes[0], changes  # the strongest severity changes the image at least as much


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        corrupt(np.zeros((4, 4), np.float32), "fog", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt(np.zeros((4, 4), np.float32), "contrast", 6, np.random.default_rng(0))


@pytest.mark.slow
def test_report_of_a_saved_model_on_breastmnist_test_images(tmp_path):
    from featx.extraction import extract
    from featx.fit import fit

    cache = tmp_path / "b.h5"
    extract([BREAST_NPZ], cache, backbones=["timm/test_efficientnet"], weights="none", device="cpu",
            batch_size=64, progress=False)
    sets = __import__("featx").cache.list_sets(cache)
    res = fit(cache, list(sets)[0], "logreg", n_boot=0)
    model = res.save(tmp_path / "m.skops")
    result = evaluate_robustness(model, [BREAST_NPZ], split="test", max_images=24,
                                 corruptions=["gaussian_noise", "contrast"], adversarial=False)
    assert result["n_images"] == 24 and set(result["corruptions"]) == {"gaussian_noise", "contrast"}
    for sevs in result["corruptions"].values():
        assert list(sevs) == ["1", "2", "3", "4", "5"]
        assert all(m["n"] == 24 and 0 <= m["accuracy"] <= 1 and 0 <= m["ood_rate"] <= 1 for m in sevs.values())
    # the clean numbers are the model's own predictions on those images
    assert result["clean"]["n"] == 24 and result["clean"]["auc"] is not None
    # strong noise moves the features far from the training data
    assert result["corruptions"]["gaussian_noise"]["5"]["ood_rate"] > result["clean"]["ood_rate"]
    out = write_robustness_report(result, tmp_path / "rep")
    data = json.loads((out / "robustness.json").read_text())
    assert set(data) >= {"clean", "corruptions", "adversarial"} and data["corruptions"]["contrast"]["5"]["auc"] is not None
    assert (out / "gaussian_noise.png").stat().st_size > 1000 and "| contrast |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_adversarial_entry_for_a_mirrored_head_uses_the_torch_mirror(tmp_path):
    """logreg has an exact torch mirror (featx.explain): FGSM/PGD numbers exist for every budget,
    and a larger budget never helps the model (PGD at 8/255 is no better than clean)."""
    from featx.extraction import extract
    from featx.fit import fit

    cache = tmp_path / "b.h5"
    extract([BREAST_NPZ], cache, backbones=["timm/test_efficientnet"], weights="none", device="cpu",
            precision="fp32", batch_size=64, progress=False)
    sets = __import__("featx").cache.list_sets(cache)
    model = fit(cache, list(sets)[0], "logreg", n_boot=0).save(tmp_path / "m.skops")
    result = evaluate_robustness(model, [BREAST_NPZ], split="test", max_images=16, corruptions=["contrast"],
                                 severities=(5,), epsilons=(1 / 255, 8 / 255))
    adv = {float(k): v for k, v in result["adversarial"].items()}      # keys: the budgets, as JSON text
    assert sorted(adv) == pytest.approx([1 / 255, 8 / 255], rel=1e-5), result.get("notes")
    adv = dict(zip([1 / 255, 8 / 255], [adv[k] for k in sorted(adv)]))
    for eps, m in adv.items():
        assert {"fgsm", "pgd"} <= set(m) and m["n"] == 16 and 0 <= m["accuracy"] <= 1
    assert adv[8 / 255]["pgd"]["accuracy"] <= result["clean"]["accuracy"]
