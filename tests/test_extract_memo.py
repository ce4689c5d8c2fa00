"""A re-run reads only what changed: featx extract trusts the cache's memo of (size, mtime, ctime,
inode) -> content id for unchanged files, re-hashes a changed file, and --rehash reads them all."""
from __future__ import annotations

import os
import shutil

import numpy as np
from PIL import Image

import featx.sources as sources
import featx.sources.base as base
from featx import cache as C
from featx.extraction import extract
from featx.sources import scan_sources
from tests.support.images import make_class_folders
from tests.support.paths import CT_DICOM

HAND = dict(backbones=[], handcrafted="firstorder", progress=False, workers=0)


def test_rerun_hashes_only_changed_files_and_rehash_hashes_all(image_folder, tmp_path, hash_calls):
    cache = tmp_path / "c.h5"
    first = extract([image_folder], cache, **HAND)
    assert first.ok == 12
    calls = hash_calls
    calls.clear()   # count from here on
    again = extract([image_folder], cache, **HAND)
    assert calls == [] and again.reused == 12 and again.ok == 0

    changed = image_folder / "benign" / "benign_0.png"
    old_ids = set(C.read_state(cache).ids)
    Image.fromarray(np.full((40, 48, 3), 7, np.uint8)).save(changed)   # new bytes, new content id
    third = extract([image_folder], cache, **HAND)
    assert [p for p in calls] == [str(changed)]
    assert third.ok == 1 and third.reused == 11
    new_ids = set(C.read_state(cache).ids) - old_ids
    assert new_ids == {base.sha256_file(changed)}                      # the changed file got its new id

    calls.clear()
    extract([image_folder], cache, rehash=True, **HAND)
    assert len(calls) == 12


def _two_frame_dicom(src, dst):
    import pydicom
    ds = pydicom.dcmread(src)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(dst)
    return dst


def test_memo_rebuilds_unchanged_files_unopened_and_a_changed_file_never_keeps_its_id(tmp_path, monkeypatch,
                                                                                     hash_calls):
    folder = make_class_folders(tmp_path / "imgs", per_class=3)
    (folder / "ct").mkdir()
    dcm = sorted(CT_DICOM.glob("*.dcm"))
    shutil.copy(dcm[0], folder / "ct" / "one.dcm")
    _two_frame_dicom(dcm[1], folder / "ct" / "two.dcm")
    cache = tmp_path / "c.h5"
    assert extract([folder], cache, **HAND).ok == 6 + 1 + 2
    fresh = scan_sources([folder])                                   # no memo: every file read and hashed
    two = [s for s in fresh.samples if s.file.endswith("two.dcm")]
    import pydicom
    patient = str(pydicom.dcmread(dcm[1], stop_before_pixels=True).PatientID)
    assert [s.id[-2:] for s in two] == ["#0", "#1"] and {s.group for s in two} == {patient} and patient

    def never(*a, **k):
        raise AssertionError("an unchanged file was opened")
    with monkeypatch.context() as m:
        m.setattr(sources, "_head", never)
        m.setattr(sources.dicom, "read_header", never)
        hash_calls.clear()
        again = scan_sources([folder], memo=C.read_memo(cache))
    assert again.samples == fresh.samples and hash_calls == []     # ids, paths, labels, groups, frames alike

    png = folder / "benign" / "benign_0.png"
    old = {s.file: s.id for s in fresh.samples}
    st = png.stat()
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))              # ctime moves, nothing else
    copy = folder / "benign" / "benign_1.png"
    shutil.copy2(copy, tmp_path / "b1")
    os.replace(tmp_path / "b1", copy)                               # same bytes and mtime, a new inode
    dicom_file = folder / "ct" / "one.dcm"
    st = dicom_file.stat()
    data = bytearray(dicom_file.read_bytes())
    data[-1] ^= 0xFF                                                # same size, new bytes, mtime put back
    dicom_file.write_bytes(bytes(data))
    os.utime(dicom_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    hash_calls.clear()
    third = scan_sources([folder], memo=C.read_memo(cache))
    assert sorted(hash_calls) == sorted(map(str, (png, copy, dicom_file)))
    got = {s.file: s.id for s in third.samples}
    assert got[str(png.resolve())] == old[str(png.resolve())] == base.sha256_file(png)
    assert got[str(copy.resolve())] == old[str(copy.resolve())]
    assert got[str(dicom_file.resolve())] == base.sha256_file(dicom_file) != old[str(dicom_file.resolve())]


def test_compact_keeps_the_memo_whole(tmp_path, hash_calls):
    folder = make_class_folders(tmp_path / "imgs", per_class=2)
    cache = tmp_path / "c.h5"
    extract([folder], cache, **HAND)
    extract([make_class_folders(tmp_path / "more", per_class=2, seed=1)], cache, **HAND)   # a second block
    before = C.read_memo(cache)
    assert C.compact(cache)["shards_after"] == 2 and C.read_memo(cache) == before
    assert {v[5] for v in before.values()} == {"image"} and len(before) == 8
    hash_calls.clear()
    assert extract([folder], cache, **HAND).reused == 4 and hash_calls == []
