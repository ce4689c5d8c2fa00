"""Fault injection shared by the tests and bench/faults.py: hostile and odd input files, a cache
with a large filler set (so a commit lasts long enough to be hit), SIGKILL at chosen points, and
checks that a cache opens and holds the rows of an uninterrupted run."""
from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from tests.support.caches import journal_cache
from tests.support.paths import CHEST, CT_DICOM, ROOT, TINY_SET

FILLER_SET = "filler"


# ----------------------------------------------------------------------------------------------
# Inputs


def make_chest_folder(dst: Path, n: int, bad: bool = True, offset: int = 0,
                      chest: Path = CHEST) -> tuple[list[str], list[str]]:
    """``n`` real chest X-rays (symlinks to ``chest``/train, half NORMAL half PNEUMONIA, from the
    ``offset``-th file of each class) under ``dst``, plus an empty, a truncated and a non-image file when
    ``bad``. Returns (good paths, bad paths) as featx names them."""
    good, bads = [], []
    per = {"NORMAL": n // 2, "PNEUMONIA": n - n // 2}
    for c, k in per.items():
        (dst / c).mkdir(parents=True, exist_ok=True)
        files = sorted((chest / "train" / c).glob("*.jpeg"))[offset:offset + k]
        if len(files) < k:
            raise FileNotFoundError(f"{chest / 'train' / c}: fewer than {offset + k} chest X-rays")
        for p in files:
            (dst / c / p.name).symlink_to(p)
            good.append(str(dst / c / p.name))
    if bad:
        (dst / "NORMAL" / "empty.jpeg").write_bytes(b"")
        donor = sorted((chest / "test" / "NORMAL").glob("*.jpeg"))[0].read_bytes()  # not among the good ones
        (dst / "NORMAL" / "truncated.jpeg").write_bytes(donor[: len(donor) // 2])
        (dst / "PNEUMONIA" / "notes.txt").write_text("scanner log, not an image\n")
        bads = [str(dst / "NORMAL" / "empty.jpeg"), str(dst / "NORMAL" / "truncated.jpeg"),
                str(dst / "PNEUMONIA" / "notes.txt")]
    return good, bads


def make_filler_cache(cache: Path, rows: int = 6000, dim: int = 512, seed: int = 0) -> None:
    """A cache holding one large random set ``filler``, written through featx's own journal + commit."""
    rng = np.random.default_rng(seed)
    journal_cache(cache, rng.standard_normal((rows, dim)).astype(np.float32), set_name=FILLER_SET,
                  config={"kind": "filler", "seed": seed, "dim": dim}, ids=[f"filler-{i:06d}" for i in range(rows)],
                  paths=[f"filler/{i}" for i in range(rows)], rows_per_record=2000)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG declaring a huge size (10^10 pixels) with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def ct_slice(ct_dir: Path = CT_DICOM) -> Path:
    """The first real CT DICOM slice (by name) of ``ct_dir``."""
    files = sorted(ct_dir.glob("*.dcm"))
    if not files:
        raise FileNotFoundError(f"no CT DICOM in {ct_dir}")
    return files[0]


def compressed_dicom(dst: Path, syntax, ct_dir: Path = CT_DICOM) -> Path:
    """A real CT slice re-labelled with a compressed transfer syntax and garbage encapsulated pixels."""
    import pydicom
    from pydicom.encaps import encapsulate
    ds = pydicom.dcmread(ct_slice(ct_dir))
    ds.remove_private_tags()
    for _ in ds.iterall():  # turn raw (implicit VR) elements into ones with a known VR
        pass
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([os.urandom(4000)])
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_bad_inputs(root: Path, chest: Path = CHEST, ct_dir: Path = CT_DICOM) -> dict[str, str]:
    """A folder of hostile and odd inputs (two class subfolders). Returns {file name: expected outcome},
    the outcome being "ok" (decoded correctly and extracted) or "failed:<words in the reason>"."""
    from PIL import Image
    import pydicom
    from pydicom.uid import JPEG2000, JPEGLSLossless

    a, b = root / "a", root / "b"
    a.mkdir(parents=True, exist_ok=True)
    b.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    gray = (rng.random((64, 80)) * 255).astype(np.uint8)
    exp: dict[str, str] = {}

    def put(folder, name, outcome):
        exp[name] = outcome
        return folder / name

    put(a, "zero.jpg", "failed:empty").write_bytes(b"")
    put(a, "zero.dcm", "failed:empty").write_bytes(b"")
    xray = sorted((chest / "test" / "PNEUMONIA").glob("*.jpeg"))[0].read_bytes()
    put(a, "truncated.jpg", "failed:truncated").write_bytes(xray[: len(xray) // 3])
    buf = tempfile.SpooledTemporaryFile()
    Image.fromarray(rgb).save(buf, format="PNG")
    buf.seek(0)
    png = buf.read()
    put(a, "truncated.png", "failed:truncated").write_bytes(png[: len(png) // 2])
    put(a, "header_only.png", "failed:").write_bytes(png[:33])
    Image.fromarray(rgb).save(put(a, "png_named.jpg", "ok"), format="PNG")
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 128, np.uint8)]), "RGBA").save(put(a, "rgba.png", "ok"))
    Image.fromarray(gray).convert("P").save(put(a, "palette.png", "ok"))
    pal = Image.fromarray(gray).convert("P")
    pal.info["transparency"] = 0
    pal.save(put(a, "palette_transparent.png", "ok"), transparency=0)
    Image.fromarray(rgb).convert("CMYK").save(put(b, "cmyk.jpg", "ok"), format="JPEG", quality=95)
    Image.fromarray(gray > 127).convert("1").save(put(b, "onebit.png", "ok"))
    Image.fromarray((rng.random((64, 80)) * 4095).astype(np.uint16)).save(put(b, "sixteen.png", "ok"))
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(put(b, "one_by_one.png", "ok"))
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(put(b, "one_by_one_rgb.jpg", "ok"), format="JPEG")
    put(b, "bomb.png", "failed:decompression bomb").write_bytes(bomb_png())
    nan = np.full((16, 16), np.nan, np.float32)
    Image.fromarray(nan, "F").save(put(b, "nan.tif", "failed:nan"))
    put(b, "readme.txt", "failed:not an image").write_text("hello\n")
    put(b, "labels.csv", "failed:not an image").write_text("path,label\nx.png,a\n")
    put(b, "weights.bin", "failed:not an image").write_bytes(os.urandom(2048))
    put(b, "fake.jpg", "failed:not an image").write_text("<html>not a jpeg</html>")
    ds = pydicom.dcmread(ct_slice(ct_dir))
    del ds.PixelData
    ds.save_as(put(b, "no_pixels.dcm", "failed:no pixel data"))
    compressed_dicom(put(b, "jpeg2000.dcm", "failed:jpeg 2000"), JPEG2000, ct_dir)
    compressed_dicom(put(b, "jpegls.dcm", "failed:jpeg-ls"), JPEGLSLossless, ct_dir)
    ct = ct_slice(ct_dir).read_bytes()
    put(b, "truncated_header.dcm", "failed:dicom").write_bytes(ct[:200])
    put(b, "truncated_pixels.dcm", "failed:dicom").write_bytes(ct[: len(ct) // 2])
    return exp


# ----------------------------------------------------------------------------------------------
# Faults while a run is going on


def sigint_default() -> None:
    """preexec_fn: a background job (``cmd &``, nohup) starts with SIGINT ignored, and its children
    inherit that; give the child Python's usual Ctrl-C handling, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def commit_tmp_files(cache: Path) -> list[Path]:
    """The temporary files of a commit in progress: the new index (``CACHE.h5.tmp-featx-...``) and
    shards being written (``CACHE.h5.shards/*.h5.tmp``)."""
    return list(cache.parent.glob(cache.name + ".tmp-*")) + list(Path(str(cache) + ".shards").glob("*.tmp"))


def n_journal_records(cache: Path) -> int:
    d = Path(str(cache) + ".journal")
    try:
        return sum(1 for n in os.listdir(d) if n.endswith(".npz"))
    except OSError:
        return 0


def kill_during(argv, cache: Path, mode: str, rng: random.Random, horizon: float = 10.0,
                commit_s: float = 0.5, timeout: float = 300) -> dict:
    """Start ``argv`` and SIGKILL it: ``time`` after a random delay in [0.2, horizon] s; ``records``
    once the journal holds a random 1..4 records; ``commit`` a random moment inside the first commit
    (the file ``CACHE.h5.tmp-<pid>`` exists). Returns what was hit."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    hit = {"mode": mode, "killed": False, "in_commit": False, "records": 0}
    if mode == "time":
        deadline = t0 + rng.uniform(0.2, horizon)
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
    elif mode == "records":
        want = rng.randint(1, 4)
        while time.time() - t0 < timeout and proc.poll() is None and n_journal_records(cache) < want:
            time.sleep(0.005)
    elif mode == "commit":
        while time.time() - t0 < timeout and proc.poll() is None and not commit_tmp_files(cache):
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, commit_s))
    else:
        raise ValueError(mode)
    hit["records"] = n_journal_records(cache)
    hit["in_commit"] = bool(commit_tmp_files(cache))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        hit["killed"] = True
    proc.communicate()
    hit["returncode"] = proc.returncode
    hit["seconds"] = time.time() - t0
    return hit


# ----------------------------------------------------------------------------------------------
# Checks


def opens_with_h5py(cache: Path) -> bool:
    """The file opens with bare h5py and every dataset reads (or there is no file yet)."""
    import h5py
    if not cache.exists():
        return True
    try:
        with h5py.File(cache, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        return True
    except Exception:
        return False


def read_set(cache: Path, name: str) -> dict:
    """{"ids": [...], "X": rows, "ok": flags, "paths": [...], "failures": [(path, reason, stage)]}, read with bare h5py."""
    import h5py
    with h5py.File(cache, "r") as f:
        ids = [s.decode() for s in f["samples/id"][()]]
        paths = [s.decode() for s in f["samples/path"][()]]
        X = f["features"][name][()] if name in f["features"] else np.zeros((len(ids), 0), np.float32)
        ok = f["features"][name + "_ok"][()] if name in f["features"] else np.zeros(len(ids), bool)
        fails = list(zip(*(([s.decode() for s in f[f"failures/{k}"][()]]) for k in ("path", "reason", "stage"))))
    return {"ids": ids, "X": X, "ok": ok, "paths": paths, "failures": fails}


def compare(cache: Path, ref: dict, name: str = TINY_SET, filler: dict | None = None) -> dict:
    """Rows missing / duplicated / differing between ``cache`` and an uninterrupted run's ``ref``."""
    got = read_set(cache, name)
    dup = len(got["ids"]) - len(set(got["ids"]))
    have = {i: r for r, (i, o) in enumerate(zip(got["ids"], got["ok"])) if o}
    missing = [i for i in ref["ids"] if i not in have]
    extra = [i for i in have if i not in set(ref["ids"])]
    diff = 0.0
    common = [(r, have[i]) for r, i in enumerate(ref["ids"]) if i in have]
    if common:
        a = ref["X"][[r for r, _ in common]]
        b = got["X"][[r for _, r in common]]
        diff = float(np.abs(a - b).max())
    out = {"rows": len(have), "missing": len(missing), "duplicated": dup, "unexpected": len(extra),
           "max_diff": diff, "failures": len(got["failures"])}
    if filler is not None:
        f = read_set(cache, FILLER_SET)
        pos = {i: r for r, i in enumerate(f["ids"])}
        fr = [pos.get(i, -1) for i in filler["ids"]]
        out["filler_missing"] = sum(1 for r in fr if r < 0)
        out["filler_equal"] = bool(out["filler_missing"] == 0 and f["ok"][fr].all()
                                   and np.array_equal(f["X"][fr], filler["X"]))
    return out


def trial_ok(c: dict, ref_failures: int | None = None) -> bool:
    good = (c["missing"] == 0 and c["duplicated"] == 0 and c["unexpected"] == 0 and c["max_diff"] < 1e-5
            and c.get("filler_equal", True))
    return good and (ref_failures is None or c["failures"] == ref_failures)


# ----------------------------------------------------------------------------------------------
# Kills at exact points of a layout-2 commit

KILL_POINTS = ("shard-write", "index-write", "after-index-rename")


def arm(point: str) -> None:
    """SIGKILL this process at ``point`` of its first commit that writes rows: ``shard-write`` (a set
    shard's rows written, the file not closed), ``index-write`` (the new index written under its
    temporary name, not renamed), ``after-index-rename`` (the new index in place, the journal not
    yet deleted)."""
    import sys
    import featx.cache  # noqa: F401
    commit_mod = sys.modules["featx.cache.committing"]
    store = sys.modules["featx.cache.store"]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if point == "shard-write":
        put = store.SetShard.put
        store.SetShard.put = lambda self, *a, **k: (put(self, *a, **k), die())
    elif point == "index-write":
        sync = store.fsync_file
        store.fsync_file = lambda p: die() if ".tmp-featx-" in Path(p).name else sync(p)
    elif point == "after-index-rename":
        write = commit_mod.write_index
        commit_mod.write_index = lambda *a, **k: (write(*a, **k), die())
    else:
        raise ValueError(point)


def killing_argv(argv: list[str], point: str) -> list[str]:
    """``argv`` (``python -m featx.cli ...``) run with ``arm(point)`` first."""
    code = ("import runpy, sys; from tests.support.faults import arm; arm(sys.argv.pop(1)); "
            "sys.argv[0] = 'featx'; runpy.run_module('featx.cli', run_name='__main__')")
    return [argv[0], "-c", code, point, *argv[3:]]
