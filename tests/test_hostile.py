"""Hostile inputs (issue 19): special files, absurd declared sizes, bad rows and labels, damaged
caches, files featx must not touch. Every CLI case runs in a subprocess under a wall-clock limit
and an address-space limit, and must end with one line naming the file and the problem, the
documented exit code, no traceback, nothing outside its output changed, and every good input of
the same run landed."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from featx import cache as C
from featx.check import check_cache
from featx.errors import CacheError, FeatxError, ModelError, SourceError
from featx.safeio import atomic_write, check_output, open_regular, regular_file
from featx.sources import ReadOptions, scan_sources
from tests.support import CT_DICOM, ROOT, TINY

# torch maps about 3 GB of address space at import; 4 GB leaves ~1 GB for data, far below what
# the bombs here would need (3.9 GB npz, 5.6 GB PNG) before the fixes.
MEM_LIMIT = 4 << 30
TIMEOUT = 120
HAND = ["--backbone", "none", "--handcrafted", "firstorder", "--workers", "0", "-q"]


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))


def run_featx(*args, cwd=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featx.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_limits, cwd=cwd or ROOT)


def run_python(code: str, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limits, cwd=ROOT)


def assert_one_line_each(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]
    for line in stderr.splitlines():
        assert line.startswith(("featx: ", "note: ")), f"stray line: {line[:300]!r}"


def snapshot(root: Path) -> dict[str, str]:
    """Every file below root (FIFOs by name only) -> content digest."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_fifo():
            out[str(p)] = "fifo"
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def jpeg(path: Path, seed: int, size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path, quality=90)
    return path


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring width x height pixels, with a few bytes of data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def npz_declaring(path: Path, shape: tuple, dtype="|u1", key="train_images") -> Path:
    """An npz whose .npy header declares ``shape`` (a zip bomb's header) with only a few bytes."""
    import zipfile
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header.update(shape=shape, descr=dtype)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{key}.npy", buf.getvalue() + b"\0" * 64)
    return path


def dicom_with(path: Path, **attrs) -> Path:
    import pydicom
    ds = pydicom.dcmread(sorted(CT_DICOM.glob("*.dcm"))[0])
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


def read_cache(cache: Path, name: str = "firstorder") -> dict:
    with h5py.File(cache, "r") as f:
        paths = [s.decode() for s in f["samples/path"][()]]
        ok = f["features"][name + "_ok"][()]
        fails = [s.decode() for s in f["failures/path"][()]]
        reasons = [s.decode() for s in f["failures/reason"][()]]
    return {"done": {p for p, o in zip(paths, ok) if o}, "failures": dict(zip(fails, reasons))}


# ----------------------------------------------------------------------------------------------
# One folder holding every kind of hostile member among 24 good JPEGs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    src = work / "in"
    good = [jpeg(src / ("benign" if i % 2 else "malignant") / f"g{i:02d}.jpg", i) for i in range(24)]
    bad = src / "malignant"
    np.savez(bad / "objects.npz", train_images=np.array([object(), object()], dtype=object))
    np.savez(bad / "nan_labels.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([0.0, np.nan, 1.0]))
    np.savez(bad / "str_labels.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array(["a", "b", "c"]))
    npz_declaring(bad / "bomb.npz", (4000, 1000, 1000))
    (bad / "huge.png").write_bytes(png_declaring(13000, 13000))
    os.mkfifo(bad / "fifo.jpg")
    dicom_with(bad / "frames.dcm", NumberOfFrames=3_000_000)
    dicom_with(bad / "rows.dcm", Rows=60000, Columns=60000)
    # -1 is an unknown label, not a class "-1"
    np.savez(src / "benign" / "unknown.npz", train_images=np.full((2, 8, 8), 9, np.uint8), train_labels=np.array([[-1], [1]]))
    before = snapshot(src)
    # run through a small launcher that reports its children's peak RSS: the test process's own
    # (large, in a full suite) peak would otherwise be counted for every child it forks
    launcher = ("import resource, subprocess, sys; "
                "r = subprocess.run([sys.executable, '-m', 'featx.cli'] + sys.argv[2:]); "
                "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                "sys.exit(r.returncode)")
    peak = work.parent / "peak_kb.txt"
    r = subprocess.run([sys.executable, "-c", launcher, str(peak), "extract", str(src), "-o", str(work / "out.h5"),
                        *map(str, HAND)], capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_limits,
                       cwd=ROOT)
    r.peak_kb = int(peak.read_text())
    return work, good, before, r


EXPECTED_BAD = {
    "objects.npz::train_images": "Python objects",
    "nan_labels.npz::train_labels": "not integers",
    "str_labels.npz::train_labels": "labels must be integers",
    "bomb.npz::train_images": "GB of pixels",
    "huge.png": "megapixel limit",
    "fifo.jpg": "is a FIFO",
    "frames.dcm": "declares 3000000 frames",
    "rows.dcm": "megapixel limit",
}


def test_corpus_every_bad_member_is_one_line_and_the_rest_lands(corpus):
    work, good, before, r = corpus
    assert r.returncode == 0, r.stderr[-3000:]
    assert_one_line_each(r.stderr)
    got = read_cache(work / "out.h5")
    assert {str(p) for p in good} <= got["done"]                         # every good input landed
    assert {p for p in got["done"] if "unknown.npz" in p} == {f"{work / 'in/benign/unknown.npz'}::train/{i}" for i in (0, 1)}
    for suffix, words in EXPECTED_BAD.items():
        lines = [ln for ln in r.stderr.splitlines() if suffix in ln]
        assert len(lines) == 1 and words in lines[0], (suffix, lines)
        assert any(p.endswith(suffix) and words in reason for p, reason in got["failures"].items())
    assert r.stdout.startswith(f"26 extracted, 0 reused, {len(EXPECTED_BAD)} failed")
    assert snapshot(work / "in") == before                                # inputs untouched
    assert sorted(p.name for p in work.iterdir()) == ["in", "out.h5", "out.h5.shards"]  # no lock, journal or temp left


def test_npz_label_minus_one_is_unknown(corpus):
    work, *_ = corpus
    with h5py.File(work / "out.h5", "r") as f:
        names = json.loads(f["samples/label"].attrs["class_names"])
        paths = [s.decode() for s in f["samples/path"][()]]
        labels = f["samples/label"][()]
    assert "-1" not in names
    by_path = dict(zip(paths, labels))
    assert by_path[f"{work / 'in/benign/unknown.npz'}::train/0"] == -1
    assert names[by_path[f"{work / 'in/benign/unknown.npz'}::train/1"]] == "1"      # the npz's own labels


def test_cli_resident_memory_stayed_bounded(corpus):
    # peak RSS of the corpus run's featx process (KB on Linux): it decoded nothing huge
    assert corpus[3].peak_kb < 1_500_000


# ----------------------------------------------------------------------------------------------
# Manifests and named special files


def test_manifest_bad_rows_are_failure_lines_and_good_rows_land(tmp_path):
    for i in range(3):
        jpeg(tmp_path / f"ok{i}.jpg", i)
    os.mkfifo(tmp_path / "pipe.jpg")
    rows = ["path,label", "ok0.jpg,a", "o\x00k1.jpg,b", "b" * 50_000 + ".jpg,a", "pipe.jpg,a", "ok1.jpg,b", "ok2.jpg,a"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out" / "c.h5"
    before = snapshot(tmp_path)
    r = run_featx("extract", tmp_path / "m.csv", "-o", out, *HAND)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_one_line_each(r.stderr)
    err = r.stderr.splitlines()
    assert sum("m.csv:3: row contains a NUL byte" in ln for ln in err) == 1
    assert sum("m.csv:4: path 'bbbb" in ln and "path is too long (50" in ln for ln in err) == 1
    assert sum("pipe.jpg: listed in" in ln and "is a FIFO" in ln for ln in err) == 1
    assert all(len(ln) < 1000 for ln in err)                              # a 50k path is shortened
    assert read_cache(out)["done"] == {str(tmp_path / f"ok{i}.jpg") for i in range(3)}
    assert {k: v for k, v in snapshot(tmp_path).items() if "/out/" not in k} == before


@pytest.mark.parametrize("name", ["m.csv", "data.npz", "dir/member.npz"])
def test_named_fifo_input_is_an_error_not_a_hang(tmp_path, name):
    fifo = tmp_path / name
    fifo.parent.mkdir(exist_ok=True)
    os.mkfifo(fifo)
    r = run_featx("extract", fifo.parent if name.startswith("dir") else fifo, "-o", tmp_path / "o.h5", *HAND, timeout=60)
    assert_one_line_each(r.stderr)
    if name.startswith("dir"):  # a folder member: a failure line, and no usable image -> exit 2
        assert "member.npz: is a FIFO, not a regular file" in r.stderr and r.returncode == 2
    else:
        assert r.returncode == 2 and f"{fifo}: input is a FIFO, not a regular file or folder" in r.stderr
    assert not (tmp_path / "o.h5").exists() and not (tmp_path / "o.h5.lock").exists()


def test_regular_file_guards_refuse_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    with pytest.raises(FeatxError, match="manifest is a FIFO, not a regular file"):
        regular_file(fifo, "manifest")
    with pytest.raises(SourceError, match="is a directory"):
        open_regular(tmp_path, "rb", error=SourceError)
    (tmp_path / "f.txt").write_text("x")
    with open_regular(tmp_path / "f.txt", "r") as fh:
        assert fh.read() == "x"


def test_bundle_sidecar_fifo_is_one_error(tmp_path):
    from featx.bundle import verify_bundle
    model = tmp_path / "m.joblib"
    model.write_bytes(b"\x80\x04N.")
    os.mkfifo(str(model) + ".sha256")
    r = run_python(f"from featx.bundle import verify_bundle\ntry:\n verify_bundle({str(model)!r})\n"
                   "except Exception as e: print(type(e).__name__, e)", timeout=30)
    assert r.stdout.strip() == f"ModelError {model}: sidecar m.joblib.sha256 is a FIFO, not a regular file"
    with pytest.raises(ModelError, match="model file is a directory"):
        verify_bundle(tmp_path)


def test_bundle_save_is_atomic_with_sidecar(tmp_path):
    from featx.bundle import ModelBundle, load_bundle, save_bundle
    b = ModelBundle(pipeline=None, class_names=["a"], classes=[0], feature_sets=["s"], set_configs={}, set_dims={}, head="svm")
    path = save_bundle(b, tmp_path / "m.joblib")
    assert load_bundle(path).head == "svm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib", "m.joblib.sha256"]


# ----------------------------------------------------------------------------------------------
# Output guards


def test_check_output_refuses_inputs_and_other_kinds(tmp_path):
    img = jpeg(tmp_path / "in" / "a.jpg", 0)
    cache = tmp_path / "c.h5"
    with h5py.File(cache, "w") as f:
        f.attrs["featx_layout_version"] = 1
    for out, inputs, kind in ((img, [img], "cache"), (img, [tmp_path / "in"], "cache"),
                              (tmp_path / "in" / "new.h5", [tmp_path / "in"], "cache")):
        with pytest.raises(FeatxError, match="output is (the input|inside the input folder)"):
            check_output(out, inputs, kind=kind, force=True)                 # never, even with force
    with pytest.raises(FeatxError, match="is an HDF5 file .* not a csv file"):
        check_output(cache, [], kind="csv")
    with pytest.raises(FeatxError, match="is an image, not a cache file"):
        check_output(img, [], kind="cache")
    with pytest.raises(FeatxError, match="is a directory"):
        check_output(tmp_path / "in", [], kind="csv", force=True)
    assert check_output(cache, [], kind="csv", force=True) == cache
    assert check_output(cache, [img], kind="cache") == cache                  # extending a cache is fine
    assert check_output(tmp_path / "new.csv", [img], kind="csv") == tmp_path / "new.csv"


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as fh:
            fh.write(b"half")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["x.txt"]
    with atomic_write(p) as fh:
        fh.write(b"new")
    assert p.read_text() == "new" and [q.name for q in tmp_path.iterdir()] == ["x.txt"]


def test_refused_run_leaves_no_lock_and_no_change(tmp_path):
    img = jpeg(tmp_path / "img.jpeg", 0)
    before = snapshot(tmp_path)
    r = run_featx("extract", img, "-o", img, *HAND)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(img) in r.stderr
    assert_one_line_each(r.stderr)
    assert snapshot(tmp_path) == before                       # no img.jpeg.lock, no journal, img unchanged


# ----------------------------------------------------------------------------------------------
# Memory: declared sizes are checked before decoding


def test_jpeg_above_max_pixels_is_drafted_and_png_refused(tmp_path):
    from featx.errors import DecodeError
    from featx.sources.images import decode_image
    big = jpeg(tmp_path / "big.jpg", 0, size=(400, 400))
    img = decode_image(str(big), max_pixels=50_000)
    assert img.shape[0] * img.shape[1] <= 50_000 and img.shape[:2] == (200, 200)
    assert decode_image(str(big)).shape[:2] == (400, 400)
    (tmp_path / "huge.png").write_bytes(png_declaring(13000, 13000))
    with pytest.raises(DecodeError, match=r"13000x13000 \(169.0 megapixels\), above the 64-megapixel limit"):
        decode_image(str(tmp_path / "huge.png"))
    assert "max_pixels" not in ReadOptions().config()                     # old caches keep their configs
    assert ReadOptions(max_pixels=10).config()["max_pixels"] == 10


def test_npz_scan_reads_headers_only(tmp_path):
    from featx.sources.npz import read_npz_headers
    p = npz_declaring(tmp_path / "bomb.npz", (4000, 1000, 1000))
    h = read_npz_headers(p)["train_images"]
    assert h.shape == (4000, 1000, 1000) and h.data_bytes == 4_000_000_000
    res = scan_sources([p])
    assert not res.samples and "4.0 GB of pixels, above the 1.1 GB limit" in res.failures[0].reason
    p2 = npz_declaring(tmp_path / "short.npz", (10, 8, 8))
    assert "truncated" in scan_sources([p2]).failures[0].reason


def test_dicom_declared_sizes_checked_before_frames_are_made(tmp_path):
    frames = dicom_with(tmp_path / "f.dcm", NumberOfFrames=3_000_000)
    bits = dicom_with(tmp_path / "b.dcm", BitsAllocated=12)
    res = scan_sources([frames, bits])
    assert not res.samples
    reasons = {Path(f.path).name: f.reason for f in res.failures}
    assert reasons["f.dcm"].startswith("DICOM declares 3000000 frames of 512x512x1 at 16 bits (1.6 TB) but holds")
    assert reasons["b.dcm"] == "DICOM declares BitsAllocated=12; expected 1, 8, 16, 32 or 64"
