"""Every name of a run is checked before the sources are scanned or the cache is touched (issue 11.4).

A wrong backbone, layer, pooling, precision or handcrafted name is one line naming the closest
known names; no file note, no lock file, no cache.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from featx.errors import BackboneError, FeatxError, WeightsError
from featx.extraction import extract

from tests.support import TINY

BAD = [
    (dict(backbones=["resnet5"]), BackboneError, "did you mean resnet50"),
    (dict(backbones=["efficientnet_lite"]), BackboneError, "efficientnet_lite0"),
    (dict(backbones=[TINY], layers=["blocks.9"]), BackboneError, "no layer 'blocks.9'; try one of: blocks.0"),
    (dict(backbones=[TINY], layers=["7"]), BackboneError, "layer index 7 out of range"),
    (dict(backbones=[TINY], pooling="mean"), BackboneError, "unknown pooling 'mean' (avg, max, gem, cls, cls+avg)"),
    (dict(backbones=[TINY], precision="fp8"), FeatxError, "unknown precision 'fp8'"),
    (dict(backbones=[TINY], weights="/no/such/weights.pth"), WeightsError, "weights file does not exist"),
    (dict(backbones=[], handcrafted="hog,lpb"), FeatxError, "unknown handcrafted feature 'lpb'; known: hog, lbp, glcm, firstorder; did you mean 'lbp'?"),
    (dict(backbones=[], handcrafted="hog:orientation=9"), FeatxError, "did you mean 'orientations'?"),
    (dict(backbones=[], handcrafted="glcm:levels=1"), FeatxError, "levels=1 is invalid"),
]


@pytest.fixture
def noisy_folder(tmp_path):
    """A folder whose scan would log notes: files that are not images."""
    root = tmp_path / "src"
    root.mkdir()
    for k in range(5):
        (root / f"note{k}.txt").write_text("not an image")
    return root


@pytest.mark.parametrize("kw,error,text", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_name_raises_before_scanning_and_leaves_no_file(kw, error, text, noisy_folder, tmp_path, caplog, monkeypatch):
    import featx.extraction as X

    def no_scan(*a, **k):
        raise AssertionError("sources were scanned before the names were checked")
    monkeypatch.setattr(X, "scan_sources", no_scan)
    cache = tmp_path / "out" / "c.h5"
    with pytest.raises(error) as info:
        extract([noisy_folder], cache, progress=False, **kw)
    assert text in str(info.value) and "\n" not in str(info.value)
    assert not caplog.records
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,text", [
    (["--backbone", "resnet5"], "did you mean resnet50"),
    (["--handcrafted", "hog,lpb", "--backbone", "none"], "did you mean 'lbp'"),
])
def test_cli_bad_name_is_one_line_exit_2_no_lock(args, text, noisy_folder, tmp_path):
    cache = tmp_path / "c.h5"
    res = subprocess.run([sys.executable, "-m", "featx.cli", "extract", str(noisy_folder), "-o", str(cache), *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featx: error: ") and text in lines[0], res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]      # no cache, no lock, no journal
