"""Readers: folder, manifest, npz, DICOM and image decoding, on real files and generated bad inputs."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from featx.errors import SourceError
from featx.sources import ReadOptions, scan_sources
from featx.sources.dicom import WINDOW_PRESETS, decode_dicom, read_hu
from featx.sources.images import decode_image
from tests.support import BREAST_NPZ, write_png


def test_npz_breastmnist_keeps_split_and_labels():
    res = scan_sources([BREAST_NPZ])
    assert len(res.samples) == 780 and not res.failures
    assert len({s.id for s in res.samples}) == 780
    splits = [s.split for s in res.samples]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (546, 78, 156)
    z = np.load(BREAST_NPZ)
    test = [s for s in res.samples if s.split == "test"]
    assert [int(s.label) for s in test] == list(z["test_labels"])
    img = test[5].load()
    assert img.shape == (28, 28) and img.dtype == np.float32
    np.testing.assert_allclose(img, z["test_images"][5] / 255.0, atol=1e-7)


def test_ids_are_content_hashes_stable_across_copies(tmp_path, image_folder):
    a = scan_sources([image_folder]).samples
    import shutil
    shutil.copytree(image_folder, tmp_path / "copy")
    b = scan_sources([tmp_path / "copy"]).samples
    assert [s.id for s in a] == [s.id for s in b]
    assert {s.label for s in a} == {"benign", "malignant"}


def test_folder_with_split_folders(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in ("NORMAL", "PNEUMONIA"):
            for i in range(2):
                write_png(tmp_path / split / c / f"{split}{c}{i}.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    res = scan_sources([tmp_path])
    assert len(res.samples) == 8
    assert {(s.split, s.label) for s in res.samples} == {(sp, c) for sp in ("train", "test") for c in ("NORMAL", "PNEUMONIA")}


def _split_class_counts(samples) -> dict:
    counts: dict = {}
    for s in samples:
        counts[(s.split, s.label)] = counts.get((s.split, s.label), 0) + 1
    return counts


def test_real_chest_folder_keeps_split_and_marks_duplicates(chest_dir):
    res = scan_sources([chest_dir])
    assert len(res.samples) == 140 and not res.failures
    assert _split_class_counts(res.samples) == {("train", "NORMAL"): 60, ("train", "PNEUMONIA"): 60,
                                                ("test", "NORMAL"): 10, ("test", "PNEUMONIA"): 10}
    # the subset holds two byte-identical pairs (see tests/data/SOURCE.md): the second of each is marked
    dups = {Path(s.path).name: s for s in res.samples if s.duplicate_of}
    assert sorted(dups) == ["NORMAL2-IM-0096-0001.jpeg", "person128_bacteria_607.jpeg"]
    by_id = {s.id: s for s in res.samples}
    for s in dups.values():
        first = by_id[s.duplicate_of]
        assert s.id == first.id + "~1" and Path(s.path).read_bytes() == Path(first.path).read_bytes()
    assert {Path(by_id[s.duplicate_of].path).name for s in dups.values()} == {"NORMAL2-IM-0095-0001.jpeg",
                                                                             "person128_bacteria_606.jpeg"}


def test_full_chest_folder_keeps_split(chest_full_dir):
    res = scan_sources([chest_full_dir])
    assert len(res.samples) == 5840
    assert _split_class_counts(res.samples) == {("train", "NORMAL"): 1341, ("train", "PNEUMONIA"): 3875,
                                                ("test", "NORMAL"): 234, ("test", "PNEUMONIA"): 390}
    dups = [s for s in res.samples if s.duplicate_of]
    assert dups and all(s.id.startswith(s.duplicate_of + "~") for s in dups)


def test_duplicate_bytes_are_kept_and_flagged(tmp_path):
    arr = np.arange(100, dtype=np.uint8).reshape(10, 10)
    write_png(tmp_path / "a" / "x.png", arr)
    write_png(tmp_path / "b" / "y.png", arr)
    res = scan_sources([tmp_path])
    assert len(res.samples) == 2
    first, second = res.samples
    assert second.duplicate_of == first.id and second.id == first.id + "~1"
    assert res.warnings and "same bytes" in res.warnings[0]


def test_manifest_paths_labels_groups_and_bad_rows(tmp_path):
    img = (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)
    for i in range(3):
        write_png(tmp_path / "data" / f"{i}.png", img + i)
    outside = write_png(tmp_path.parent / f"{tmp_path.name}_outside.png", img)
    csv = tmp_path / "data" / "manifest.csv"
    csv.write_text("path,label,group,split\n"
                   "0.png, yes ,P1,train\n"
                   "1.png,no,P2,test\n"
                   "1.png,no,P2,test\n"            # duplicate row
                   "missing.png,no,P3,train\n"     # does not exist
                   f"../../{outside.name},no,P4,train\n"  # outside the manifest folder
                   "2.png,yes,P5,holdout\n")       # unknown split
    res = scan_sources([csv])
    assert [(s.label, s.group, s.split) for s in res.samples] == [("yes", "P1", "train"), ("no", "P2", "test")]
    reasons = " | ".join(f.reason for f in res.failures)
    assert "duplicate" in reasons and "does not exist" in reasons and "outside" in reasons and "unknown split" in reasons
    res2 = scan_sources([csv], allow_outside=True)
    assert any(s.path.endswith(outside.name) for s in res2.samples)


def test_manifest_without_path_column_is_a_clear_error(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,label\na.png,1\n")
    with pytest.raises(SourceError, match=r"m\.csv: manifest has no 'path' column"):
        scan_sources([csv])


def test_bad_files_are_reported_not_raised(tmp_path):
    good = write_png(tmp_path / "c" / "good.png", np.zeros((8, 8), np.uint8) + 7)
    (tmp_path / "c" / "empty.png").write_bytes(b"")
    (tmp_path / "c" / "notes.txt").write_text("not an image")
    jpg = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(jpg, "JPEG")
    (tmp_path / "c" / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    res = scan_sources([tmp_path])
    by = {f.path.rsplit("/", 1)[-1]: f.reason for f in res.failures}
    assert "empty" in by["empty.png"] and "not an image" in by["notes.txt"]
    truncated = [s for s in res.samples if s.path.endswith("truncated.jpg")][0]
    from featx.errors import DecodeError
    with pytest.raises(DecodeError, match=r"truncated\.jpg: .*(truncated|corrupt|cannot decode)"):
        truncated.load()
    assert [s for s in res.samples if s.path == str(good)][0].load().max() == pytest.approx(7 / 255)


def test_png_named_jpg_is_read_by_content(tmp_path):
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8)
    p = tmp_path / "x.jpg"
    Image.fromarray(arr).save(p, format="PNG")
    (s,) = scan_sources([p]).samples
    np.testing.assert_allclose(s.load(), arr / 255.0, atol=1e-7)


def test_sixteen_bit_png_keeps_precision(tmp_path):
    ramp = np.linspace(1000, 4000, 64 * 64).astype(np.uint16).reshape(64, 64)  # 12-bit data in 16 bits
    p = tmp_path / "r16.png"
    Image.fromarray(ramp).save(p)
    out = decode_image(str(p))
    assert out.dtype == np.float32 and len(np.unique(out)) > 1000  # no 8-bit round trip
    np.testing.assert_allclose(out, (ramp - 1000) / 3000.0, atol=1e-6)  # auto: min-max for >8-bit data
    by_dtype = decode_image(str(p), intensity="dtype")
    np.testing.assert_allclose(by_dtype, ramp / 65535.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "1", "LA", "I;16", "F"])
def test_image_modes_decode_to_unit_range(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(2).random((12, 10, 3)) * 255).astype(np.uint8))
    im = rgb.convert(mode) if mode not in ("I;16", "F") else rgb.convert("L").convert("I").convert(mode)
    p = tmp_path / ("x.tif" if mode in ("CMYK", "F", "I;16") else "x.png")
    im.save(p)
    out = decode_image(str(p))
    assert out.dtype == np.float32 and out.shape[:2] == (12, 10) and out.ndim in (2, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_decompression_bomb_is_refused(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(p)  # 400 Mpx declared, tiny file
    from featx.errors import DecodeError
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(str(p))


def test_real_ct_dicom_in_hu_with_patient_groups(ct_dir):
    res = scan_sources([ct_dir])
    assert len(res.samples) == 12 and not res.failures
    # groups are the PatientIDs as pydicom reads them: 10 patients, two of them with both labels
    truth = {p.name: str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in ct_dir.glob("*.dcm")}
    assert {Path(s.path).name: s.group for s in res.samples} == truth
    assert len(set(truth.values())) == 10
    assert {s.group for s in res.samples if "CONTRAST_1" in s.path} & {s.group for s in res.samples
                                                                     if "CONTRAST_0" in s.path} == {
        "TCGA-92-7340", "TCGA-34-5231"}
    signed = 0
    for sample in res.samples:  # uint16 SIEMENS and int16 GE slices, implicit and explicit VR
        hu, ds = read_hu(sample.file)
        assert hu.dtype == np.float32 and hu.shape == (512, 512)
        raw = ds.pixel_array
        signed += raw.dtype == np.int16
        expected = raw.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(hu, expected, rtol=0, atol=1e-3)  # float32 rounding of a non-unit slope
    assert 0 < signed < 12
    hu, _ = read_hu(res.samples[0].file)
    # air around the body is about -1000 HU; rescale intercept -1024 was applied
    assert -1100 < np.percentile(hu, 1) < -900 and hu.max() > 200
    lung = decode_dicom(res.samples[0].file, window="lung")
    c, w = WINDOW_PRESETS["lung"]
    np.testing.assert_allclose(lung, np.clip((hu - (c - w / 2)) / w, 0, 1), atol=1e-6)
    own = res.samples[0].load(ReadOptions())
    assert own.shape == (512, 512) and 0 <= own.min() and own.max() <= 1


def test_full_ct_dicom_set_has_54_patient_groups(ct_full_dir):
    res = scan_sources([ct_full_dir])
    assert len(res.samples) == 100 and not res.failures
    assert len({s.group for s in res.samples}) == 54 and all(s.group.startswith("TCGA-") for s in res.samples)


def test_dicom_monochrome1_is_inverted_and_missing_pixels_reported(tmp_path, ct_dir):
    src = sorted(ct_dir.glob("*.dcm"))[0]
    ds = pydicom.dcmread(src)
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = tmp_path / "mono1.dcm"
    ds.save_as(mono1)
    np.testing.assert_allclose(decode_dicom(str(mono1), window="bone"), 1.0 - decode_dicom(str(src), window="bone"), atol=1e-6)
    ds = pydicom.dcmread(src)
    del ds.PixelData
    nopix = tmp_path / "nopix.dcm"
    ds.save_as(nopix)
    (s,) = scan_sources([nopix]).samples
    from featx.errors import DecodeError
    with pytest.raises(DecodeError, match=r"nopix\.dcm: DICOM has no pixel data"):
        s.load()


def test_missing_source_is_reported(tmp_path):
    res = scan_sources([tmp_path / "nope"])
    assert not res.samples and "does not exist" in res.failures[0].reason
