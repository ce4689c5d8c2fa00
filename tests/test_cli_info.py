"""featx info against ground truth: a cache extracted from a known folder."""
from __future__ import annotations

from click.testing import CliRunner

from featx.cli.info import count_table
from featx.cli.main import main
from tests.support import write_png

import numpy as np


def test_info_counts_classes_and_sets_of_a_known_folder(tmp_path):
    rng = np.random.default_rng(0)
    counts = {"benign": 5, "malignant": 3, "normal": 2}
    for c, n in counts.items():
        for i in range(n):
            write_png(tmp_path / "imgs" / c / f"{i}.png", (rng.random((32, 32)) * 255).astype(np.uint8))
    cache = tmp_path / "c.h5"
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "imgs"), "-o", str(cache), "--backbone", "none",
                                    "--handcrafted", "firstorder,lbp", "--workers", "1", "-q"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["info", str(cache)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == f"{cache}: 10 samples, 3 classes, 2 feature sets, 0 failures"
    assert lines[1].split() == ["class", "total"]
    assert [line.split() for line in lines[2:6]] == [["benign", "5"], ["malignant", "3"], ["normal", "2"], ["total", "10"]]
    from featx.handcrafted import parse_handcrafted
    image = np.zeros((32, 32), np.float32)
    widths = {s.name: len(s.compute(image)) for s in parse_handcrafted("firstorder,lbp")}
    for name, d in widths.items():
        assert any(line.strip().startswith(f"{name}: d={d}, 10 of 10 rows computed") for line in lines), (name, d, lines)


def test_count_table_with_splits_and_unlabelled_rows():
    labels = ["a", "a", "b", "", "b", "a"]
    splits = ["train", "test", "train", "", "val", "train"]
    assert count_table(labels, splits) == [
        ["class", "train", "val", "test", "(none)", "total"],
        ["a", "2", "0", "1", "0", "3"],
        ["b", "1", "1", "0", "0", "2"],
        ["(unlabelled)", "0", "0", "0", "1", "1"],
        ["total", "3", "1", "1", "1", "6"],
    ]
