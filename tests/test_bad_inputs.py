"""Hostile and odd inputs through the CLI: one clear line naming the file and the problem, and the
right outcome (decoded correctly, or skipped and recorded in /failures), never a traceback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featx import cache as C
from featx.errors import DecodeError
from featx.sources import scan_sources
from featx.sources.dicom import decode_dicom
from tests.support import TINY_ARGS, TINY_SET, assert_clean_stderr, journal_cache, run_cli, write_png
from tests.support import faults as F  # the same generators bench/faults.py uses

SET = TINY_SET


def extract_cli(src, cache, *extra):
    return run_cli("extract", *([src] if isinstance(src, (str, Path)) else src), "-o", cache, *TINY_ARGS,
                   "--workers", "0", "-q", *extra)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The bad-input folder of bench/faults.py run once through `featx extract`."""
    work = tmp_path_factory.mktemp("zoo")
    expected = F.make_bad_inputs(work / "bad")
    r = extract_cli(work / "bad", work / "bad.h5")
    return work, expected, r


def test_every_bad_input_gets_the_right_outcome_and_one_line(zoo):
    work, expected, r = zoo
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    got = F.read_set(work / "bad.h5", SET)
    done = {Path(p).name for p, ok in zip(got["paths"], got["ok"]) if ok}
    failed = {Path(p).name: reason for p, reason, _ in got["failures"]}
    n_ok = sum(v == "ok" for v in expected.values())
    assert r.stdout.startswith(f"{n_ok} extracted, 0 reused, {len(expected) - n_ok} failed")
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in done and name not in failed, (name, failed.get(name))
        else:
            assert name not in done, name
            assert name in failed, name
            assert outcome[len("failed:"):] in failed[name].lower(), (name, failed[name])
            assert "\n" not in failed[name], (name, failed[name])   # recorded on one line too
            lines = [ln for ln in r.stderr.splitlines() if name in ln]
            assert len(lines) == 1 and lines[0].startswith("featx: warning: "), (name, lines)
    # extracted rows are finite, 1x1 images included
    X = got["X"][got["ok"]]
    assert np.isfinite(X).all() and len(X) == n_ok


def test_the_cache_of_bad_inputs_opens_and_loads(zoo):
    work, expected, _ = zoo
    assert F.opens_with_h5py(work / "bad.h5")
    t = C.load_features(work / "bad.h5", SET)
    assert len(t) == sum(v == "ok" for v in expected.values())
    assert sorted(t.class_names) == ["a", "b"]
    # a re-run retries nothing that worked and records the same failures, not twice
    r = extract_cli(work / "bad", work / "bad.h5")
    assert r.returncode == 0 and "Traceback" not in r.stderr
    again = F.read_set(work / "bad.h5", SET)
    assert len(again["failures"]) == sum(v != "ok" for v in expected.values())
    assert len(again["ids"]) == len(set(again["ids"]))


def test_odd_images_decode_to_the_right_pixels(zoo):
    """'Handled' means correct, not just 'no error': compare with what the pixels are."""
    work, _, _ = zoo
    by = {Path(s.path).name: s for s in scan_sources([work / "bad"]).samples}
    rng = np.random.default_rng(7)  # make_bad_inputs' draws, in order
    rgb = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    gray = (rng.random((64, 80)) * 255).astype(np.uint8)
    np.testing.assert_allclose(by["png_named.jpg"].load(), rgb / 255.0, atol=1e-6)     # PNG named .jpg
    rgba = by["rgba.png"].load()                                                       # alpha 128 on black
    np.testing.assert_allclose(rgba, np.round(rgb * (128 / 255.0)) / 255.0, atol=1.5 / 255)
    np.testing.assert_allclose(by["palette.png"].load(), gray / 255.0, atol=1e-6)       # gray palette -> gray
    onebit = by["onebit.png"].load()
    assert onebit.shape == (64, 80) and set(np.unique(onebit)) <= {0.0, 1.0}
    np.testing.assert_array_equal(onebit == 1.0, gray > 127)
    cmyk = by["cmyk.jpg"].load()
    assert cmyk.shape == (64, 80, 3) and np.abs(cmyk - rgb / 255.0).mean() < 0.08       # lossy JPEG, right colours
    sixteen = np.asarray(Image.open(work / "bad" / "b" / "sixteen.png")).astype(np.float64)
    out16 = by["sixteen.png"].load()
    assert len(np.unique(out16)) > 1000                                                # no 8-bit round trip
    np.testing.assert_allclose(out16, (sixteen - sixteen.min()) / (sixteen.max() - sixteen.min()), atol=1e-6)
    assert by["one_by_one.png"].load().shape == (1, 1)
    assert by["one_by_one.png"].load()[0, 0] == pytest.approx(200 / 255)


@pytest.mark.parametrize("syntax,words", [("1.2.840.10008.1.2.4.90", "JPEG 2000"),
                                          ("1.2.840.10008.1.2.4.80", "JPEG-LS")])
def test_compressed_dicom_without_decoder_is_one_clear_line(tmp_path, syntax, words):
    """pydicom lists each plugin's error on its own line; the reason must still be one line."""
    p = F.compressed_dicom(tmp_path / "slice.dcm", syntax)
    with pytest.raises(DecodeError) as e:
        decode_dicom(str(p))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: cannot decode DICOM pixel data (transfer syntax {words}")
    assert "install a decoder" in msg


def test_truncated_uncompressed_dicom_gets_no_decoder_hint(tmp_path):
    ct = F.ct_slice().read_bytes()
    p = tmp_path / "cut.dcm"
    p.write_bytes(ct[: len(ct) // 2])
    with pytest.raises(DecodeError, match="but holds") as e:
        decode_dicom(str(p))
    assert "install a decoder" not in str(e.value)   # a decoder would not help an uncompressed file


# ----------------------------------------------------------------------------------------------
# CSV manifests


def _pngs(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(3)
    return [write_png(folder / f"img{i}.png", (rng.random((24, 24)) * 255).astype(np.uint8)) for i in range(n)]


def test_manifest_without_path_column_is_one_line_error(tmp_path):
    _pngs(tmp_path, 2)
    csv = tmp_path / "m.csv"
    csv.write_text("file,label\nimg0.png,a\nimg1.png,b\n")
    r = extract_cli(csv, tmp_path / "c.h5")
    assert r.returncode == 2 and not (tmp_path / "c.h5").exists()
    assert r.stderr.strip().splitlines() == [f"featx: error: {csv}: manifest has no 'path' column (columns: file, label)"]


def test_manifest_without_label_column_is_unlabelled(tmp_path):
    _pngs(tmp_path, 3)
    csv = tmp_path / "m.csv"
    csv.write_text("path\nimg0.png\nimg1.png\nimg2.png\n")
    res = scan_sources([csv])
    assert not res.failures and [s.label for s in res.samples] == [None] * 3


def test_manifest_duplicates_whitespace_and_short_rows(tmp_path):
    _pngs(tmp_path, 4)
    csv = tmp_path / "m.csv"
    csv.write_text(" Path , Label ,group\n"
                   "img0.png,  benign ,p1\n"
                   "img1.png,benign\t,p2\n"
                   "img2.png, malignant,p3\n"
                   "img0.png,malignant,p9\n"      # duplicate row with a different label: refused, first kept
                   "img3.png\n"                   # short row: no label, no group
                   "nothere.png,benign,p4\n")
    r = extract_cli(csv, tmp_path / "c.h5")
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert f"{csv}:5: duplicate of line 2; kept the first" in r.stderr
    assert "nothere.png: listed in" in r.stderr and "does not exist" in r.stderr
    t = C.load_features(tmp_path / "c.h5", SET)
    assert t.class_names == ["benign", "malignant"]            # stray whitespace is not a new class
    names = {Path(p).name: (t.class_names[y] if y >= 0 else "", g) for p, y, g in zip(t.paths, t.y, t.groups)}
    assert names == {"img0.png": ("benign", "p1"), "img1.png": ("benign", "p2"),
                     "img2.png": ("malignant", "p3"), "img3.png": ("", "")}
    fails = {p: r for p, r, _ in C.read_state(tmp_path / "c.h5").failures}
    assert set(fails) == {f"{csv}:5", str(tmp_path / "nothere.png")}


def test_unreadable_manifest_is_one_line(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_bytes(b"path,label\n\xff\xfe\xfa,bad\n")
    r = extract_cli(csv, tmp_path / "c.h5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"{csv}: cannot read manifest" in r.stderr


# ----------------------------------------------------------------------------------------------
# NaN / Inf features handed to `featx fit`


def _labelled_cache(path: Path, bad_rows: dict[int, float]) -> None:
    """A cache written through the journal, then damaged the way only an outside edit can: featx
    itself stores a non-finite row as not computed (tests/test_cache_v2.py)."""
    import h5py

    from featx import cache as C
    rng = np.random.default_rng(0)
    n = 40
    X = rng.standard_normal((n, 6)).astype(np.float32)
    y = np.arange(n) % 2
    X[:, 0] += 2.0 * y
    journal_cache(path, X, ["ab"[k] for k in y])
    (shard,) = C.shards_dir(path).glob("f-*.h5")
    with h5py.File(shard, "r+") as f:
        for r, v in bad_rows.items():
            f["X"][r, r % 6] = v


def test_nan_and_inf_features_stop_fit_with_one_line(tmp_path):
    cache = tmp_path / "nan.h5"
    _labelled_cache(cache, {3: np.nan, 7: np.inf, 8: -np.inf})
    args = ["fit", cache, "--features", "deep", "--head", "logreg", "--search", "none", "--bootstrap", "0",
            "--cv", "3", "--jobs", "1", "-o", tmp_path / "m.joblib"]
    r = run_cli(*args)
    assert r.returncode == 2 and not (tmp_path / "m.joblib").exists()
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("featx:")]  # not the progress lines
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"featx: error: {cache}: set 'deep' has 3 of 40 rows with NaN/Inf "
                               "(first: /data/img003.png)")
    assert "--drop-nonfinite" in lines[0]
    r = run_cli(*args, "--drop-nonfinite")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and (tmp_path / "m.joblib").exists()
    assert "note: 3 rows with NaN/Inf features were dropped" in r.stderr
