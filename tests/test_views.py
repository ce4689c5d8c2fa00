"""Test-time views (featx.views) on the tiny random net."""
from __future__ import annotations

import pytest
import torch

from featx.backbones.registry import build
from featx.errors import FeatxError
from featx.backbones.tta import ViewAveraged, five_crops
from featx.views import n_views, parse_views, views_config, views_suffix
from tests.support import TINY


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build(TINY, weights="none", layers=["head", "blocks.1"])


def test_parse_views_and_config():
    assert parse_views("crop5, FLIP") == ("flip", "crop5")      # canonical order
    assert parse_views(None) == parse_views("none") == parse_views("") == ()
    assert views_config(["flip"]) == {"tta": ["flip"]} and views_config([]) == {}
    assert views_suffix(["crop5", "flip"]) == "_tta-flip-crop5" and views_suffix([]) == ""
    assert n_views(("flip", "crop5")) == 7
    with pytest.raises(FeatxError, match="--tta: unknown view 'rotate'"):
        parse_views("flip,rotate")
    with pytest.raises(FeatxError, match="twice"):
        parse_views("flip,flip")


def test_flip_average_is_the_mean_of_both_passes_and_flip_invariant(tiny):
    x = torch.rand(3, 3, *tiny.preprocess.crop_size)
    wrapped = ViewAveraged(tiny.model, ("flip",)).eval()
    with torch.inference_mode():
        plain = tiny.model(x)
        flipped = tiny.model(torch.flip(x, dims=[-1]))
        avg = wrapped(x)
        avg_of_flipped = wrapped(torch.flip(x, dims=[-1]))
    assert set(avg) == set(plain) == {"head", "blocks.1"}
    for tap in avg:
        assert avg[tap].shape == plain[tap].shape
        torch.testing.assert_close(avg[tap], (plain[tap] + flipped[tap]) / 2)
        torch.testing.assert_close(avg[tap], avg_of_flipped[tap], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain[tap], flipped[tap])  # the random net is not flip invariant


def test_five_crops_cover_corners_and_centre():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    crops = five_crops(x, fraction=0.5)
    assert len(crops) == 5 and all(c.shape == x.shape for c in crops)
    # nearest corner pixel survives resizing: top-left crop starts at x[0, 0], bottom-right ends at x[7, 7]
    assert crops[0][0, 0, 0, 0] == x[0, 0, 0, 0]
    assert crops[3][0, 0, -1, -1] == x[0, 0, -1, -1]
    torch.testing.assert_close(crops[4].mean(), x[..., 2:6, 2:6].mean())


def test_crop5_runs_seven_passes(tiny):
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape)
            return tiny.model(x)

    x = torch.rand(2, 3, *tiny.preprocess.crop_size)
    with torch.inference_mode():
        out = ViewAveraged(Counting(), ("flip", "crop5"))(x)
    assert len(calls) == 7 and all(s == x.shape for s in calls)
    assert out["head"].shape == (2, tiny.dims["head"])
