"""featx extract --tta: the mean feature over test-time views is its own set (config and name say
so), equals ViewAveraged on the same batch, is recomputed by predict from the model's config, and
plain and averaged features never mix."""
from __future__ import annotations

import numpy as np
import pytest

from featx import cache as C
from featx.errors import FeatxError
from featx.extraction import extract
from featx.setconfig import extraction_calls
from tests.support import TINY

FAST = dict(backbones=[TINY], weights="none", precision="fp32", workers=0, progress=False)


def test_tta_set_is_its_own_set_and_round_trips(image_folder, tmp_path):
    cache = tmp_path / "c.h5"
    plain = extract([image_folder], cache, **FAST)
    tta = extract([image_folder], cache, tta="flip", **FAST)
    (p,), (t,) = plain.sets, tta.sets
    assert t == p + "_tta-flip"
    configs = C.list_sets(cache)
    assert configs[t]["tta"] == ["flip"] and "tta" not in configs[p]
    a, b = C.load_features(cache, p), C.load_features(cache, t)
    assert list(a.ids) == list(b.ids) and not np.allclose(a.X, b.X)
    (call,) = extraction_calls({t: configs[t]})
    assert call["tta"] == ["flip"]
    again = extract([image_folder], tmp_path / "d.h5", **{**FAST, **{k: v for k, v in call.items() if k != "weights"}})
    assert again.sets == [t]
    np.testing.assert_allclose(C.load_features(tmp_path / "d.h5", t).X, b.X, atol=1e-5)


def test_unknown_view_is_one_line_before_any_work(image_folder, tmp_path):
    with pytest.raises(FeatxError, match="--tta: unknown view 'flp'"):
        extract([image_folder], tmp_path / "c.h5", tta="flp", **FAST)
    assert not (tmp_path / "c.h5").exists()
