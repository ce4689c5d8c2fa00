"""What a run tells the user: duplicate files in one INFO line (the list at DEBUG), a progress bar
with one rate that shows from the start, and ``from featx import extract`` in any import order."""
from __future__ import annotations

import inspect
import logging
import shutil
import subprocess
import sys

import pytest

from featx.extraction import extract

from tests.support import TINY

FAST = dict(backbones=[TINY], weights="none", precision="fp32", workers=0)


@pytest.fixture
def folder_with_copies(image_folder):
    for k in range(3):
        shutil.copy(image_folder / "benign" / f"benign_{k}.png", image_folder / "malignant" / f"copy_{k}.png")
    return image_folder


def test_duplicates_are_one_info_line_and_listed_at_debug(folder_with_copies, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="featx")
    s = extract([folder_with_copies], tmp_path / "c.h5", progress=False, **FAST)
    assert s.ok == 15 and len(s.warnings) == 3
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert info == ["3 files have byte-identical copies (kept as separate samples, listed in "
                    "/samples/duplicate_of; -v lists them)"]
    assert sorted(debug) == sorted(f"duplicate content: {w}" for w in s.warnings)
    assert all("copy_" in w for w in s.warnings)


def test_progress_bar_one_rate_and_a_status_before_the_first_batch(image_folder, tmp_path, capsys):
    s = extract([image_folder], tmp_path / "c.h5", progress=True, batch_size=4, **FAST)
    assert s.ok == 12
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\n", "\r").split("\r") if f.strip()]
    assert "loading model" in frames[0] and "0/12" in frames[0]     # drawn before any model work
    assert any("decoding" in f for f in frames)
    assert any("12/12" in f for f in frames)
    assert all(f.count("/s") <= 1 for f in frames), frames           # tqdm's rate only


@pytest.mark.parametrize("first", ["featx.extraction", "featx.engines.ray", "featx.extraction.engine", "featx"])
def test_from_featx_import_extract_is_the_function_in_any_import_order(first):
    code = (f"import {first}\nfrom featx import extract\nimport inspect\n"
            "assert inspect.isfunction(extract) and extract.__module__ == 'featx.extraction', extract\n"
            "import featx.extraction as m\nassert m.extract is extract")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_extract_is_a_function_here_too():
    import featx
    assert inspect.isfunction(featx.extract) and featx.extract is extract
