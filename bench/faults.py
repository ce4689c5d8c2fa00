"""Fault injection for ``featx extract``: kill -9 at random points (including inside the atomic
commit), Ctrl-C, a second writer, a full disk and a zoo of bad inputs; prints a reliability table.

    python bench/faults.py                      # 24 kill -9 trials + the other faults + the issue's check
    python bench/faults.py --trials 40 --seed 3
    python bench/faults.py --skip-issue-check   # without the 600-image run on the default backbone

Every kill trial works on a cache that already holds a large "filler" set (so the commit, which
rewrites the whole file, takes long enough to be hit), kills the CLI with SIGKILL at a point
chosen by the trial's kind, checks that the cache still opens with h5py, re-runs the same command
to completion and compares the result with an uninterrupted run: every row present exactly once,
fp32 features within 1e-5, the filler rows bit-identical.

The helpers here are also used by tests/test_reliability.py and tests/test_bad_inputs.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATX_SHARED_DATA", ROOT.parent / "shared" / "data"))
CHEST = SHARED / "chest-xray-pneumonia-224"
CT_DICOM = SHARED / "ct-contrast-dicom" / "dicom_dir"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
TINY_ARGS = ["--backbone", "timm/test_efficientnet", "--weights", "none", "--precision", "fp32"]
TINY_SET = "test_efficientnet_random"
FILLER_SET = "filler"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------------------------
# Inputs


def make_chest_folder(dst: Path, n: int, bad: bool = True, offset: int = 0) -> tuple[list[str], list[str]]:
    """``n`` real chest X-rays (symlinks, half NORMAL half PNEUMONIA) under ``dst``, plus an empty,
    a truncated and a non-image file when ``bad``. Returns (good paths, bad paths) as featx names them."""
    good, bads = [], []
    per = {"NORMAL": n // 2, "PNEUMONIA": n - n // 2}
    for c, k in per.items():
        (dst / c).mkdir(parents=True, exist_ok=True)
        files = sorted((CHEST / "train" / c).glob("*.jpeg"))[offset:offset + k]
        if len(files) < k:
            raise SystemExit(f"not enough chest X-rays in {CHEST / 'train' / c}")
        for p in files:
            (dst / c / p.name).symlink_to(p)
            good.append(str(dst / c / p.name))
    if bad:
        (dst / "NORMAL" / "empty.jpeg").write_bytes(b"")
        donor = sorted((CHEST / "test" / "NORMAL").glob("*.jpeg"))[0].read_bytes()  # not among the good ones
        (dst / "NORMAL" / "truncated.jpeg").write_bytes(donor[: len(donor) // 2])
        (dst / "PNEUMONIA" / "notes.txt").write_text("scanner log, not an image\n")
        bads = [str(dst / "NORMAL" / "empty.jpeg"), str(dst / "NORMAL" / "truncated.jpeg"),
                str(dst / "PNEUMONIA" / "notes.txt")]
    return good, bads


def make_filler_cache(cache: Path, rows: int = 6000, dim: int = 512, seed: int = 0) -> None:
    """A cache holding one large random set, written through featx's own journal + commit."""
    from featx import cache as C
    rng = np.random.default_rng(seed)
    ids = [f"filler-{i:06d}" for i in range(rows)]
    j = C.Journal(cache)
    for a in range(0, rows, 2000):
        b = min(rows, a + 2000)
        j.append(C.BatchRecord(ids=ids[a:b], paths=[f"filler/{i}" for i in range(a, b)], labels=[""] * (b - a),
                               groups=[""] * (b - a), splits=[""] * (b - a), duplicate_of=[""] * (b - a),
                               sets=[C.SetRows(FILLER_SET, {"kind": "filler", "seed": seed, "dim": dim}, "deep",
                                               ids[a:b], rng.standard_normal((b - a, dim)).astype(np.float32))]))
    C.commit(cache)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG declaring a huge size (10^10 pixels) with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _ct_slice() -> Path:
    files = sorted(CT_DICOM.glob("*.dcm"))
    if not files:
        raise FileNotFoundError(f"no CT DICOM in {CT_DICOM}")
    return files[0]


def compressed_dicom(dst: Path, syntax) -> Path:
    """A real CT slice re-labelled with a compressed transfer syntax and garbage encapsulated pixels."""
    import pydicom
    from pydicom.encaps import encapsulate
    ds = pydicom.dcmread(_ct_slice())
    ds.remove_private_tags()
    for elem in ds.iterall():  # turn raw (implicit VR) elements into ones with a known VR
        pass
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([os.urandom(4000)])
    ds["PixelData"].VR = "OB"
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_bad_inputs(root: Path) -> dict[str, str]:
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
    chest = sorted((CHEST / "test" / "PNEUMONIA").glob("*.jpeg"))[0].read_bytes()
    put(a, "truncated.jpg", "failed:truncated").write_bytes(chest[: len(chest) // 3])
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
    ds = pydicom.dcmread(_ct_slice())
    del ds.PixelData
    ds.save_as(put(b, "no_pixels.dcm", "failed:no pixel data"))
    compressed_dicom(put(b, "jpeg2000.dcm", "failed:jpeg 2000"), JPEG2000)
    compressed_dicom(put(b, "jpegls.dcm", "failed:jpeg-ls"), JPEGLSLossless)
    ct = _ct_slice().read_bytes()
    put(b, "truncated_header.dcm", "failed:dicom").write_bytes(ct[:200])
    put(b, "truncated_pixels.dcm", "failed:dicom").write_bytes(ct[: len(ct) // 2])
    return exp


# ----------------------------------------------------------------------------------------------
# Running and checking


def extract_argv(src, cache, *extra) -> list[str]:
    return [PY, "-m", "cli.main", "extract", str(src), "-o", str(cache), *TINY_ARGS,
            "--batch-size", "16", "-q", *extra]


def run(argv, timeout=600, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def sigint_default() -> None:
    """preexec_fn: a background job (``cmd &``, nohup) starts with SIGINT ignored, and its children
    inherit that; give the child Python's usual Ctrl-C handling, as in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _commit_tmp(cache: Path) -> list[Path]:
    return list(cache.parent.glob(cache.name + ".tmp-*"))


def _n_records(cache: Path) -> int:
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
        while time.time() - t0 < timeout and proc.poll() is None and _n_records(cache) < want:
            time.sleep(0.005)
    elif mode == "commit":
        while time.time() - t0 < timeout and proc.poll() is None and not _commit_tmp(cache):
            time.sleep(0.0005)
        time.sleep(rng.uniform(0.0, commit_s))
    else:
        raise ValueError(mode)
    hit["records"] = _n_records(cache)
    hit["in_commit"] = bool(_commit_tmp(cache))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        hit["killed"] = True
    proc.communicate()
    hit["returncode"] = proc.returncode
    hit["seconds"] = time.time() - t0
    return hit


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
    """{"ids": [...], "X": rows, "ok": flags, "paths": [...], "failures": [(path, reason, stage)]}."""
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
# The bench


def kill_trials(work: Path, n_trials: int, n_images: int, seed: int, log=print) -> dict:
    rng = random.Random(seed)
    src = work / "src"
    make_chest_folder(src, n_images)
    base = work / "base.h5"
    make_filler_cache(base, rows=6000, dim=512)
    filler = read_set(base, FILLER_SET)
    ref_cache = work / "ref.h5"
    shutil.copy(base, ref_cache)
    t = time.time()
    r = run(extract_argv(src, ref_cache))
    horizon = time.time() - t
    assert r.returncode == 0, r.stderr
    ref = read_set(ref_cache, TINY_SET)
    ref = {"ids": [i for i, o in zip(ref["ids"], ref["ok"]) if o], "X": ref["X"][ref["ok"]],
           "failures": len(ref["failures"])}
    # how long one commit of this cache takes, to spread kills over it
    t = time.time()
    probe = work / "probe.h5"
    shutil.copy(ref_cache, probe)
    from featx import cache as C
    C.Journal(probe).append(C.BatchRecord(failures=[("x", "probe", "source")]))
    C.commit(probe)
    commit_s = time.time() - t
    log(f"uninterrupted run: {horizon:.1f} s, {len(ref['ids'])} rows, {ref['failures']} failures; "
        f"one commit of this cache {commit_s * 1000:.0f} ms")
    kinds = ["time", "records", "commit", "recovery-commit"]
    stats = {"trials": 0, "passed": 0, "faults": {}, "rows_lost": 0, "dup_rows": 0, "unopenable": 0,
             "commit_hits": 0, "max_diff": 0.0, "rerun_failed": 0}
    for k in range(n_trials):
        kind = kinds[k % len(kinds)]
        cache = work / f"t{k}.h5"
        shutil.copy(base, cache)
        argv = extract_argv(src, cache)
        faults = []
        if kind == "recovery-commit":
            faults.append(kill_during(argv, cache, "records", rng))
            faults.append(kill_during(argv, cache, "commit", rng, commit_s=commit_s))  # the re-run's recovery commit
        else:
            faults.append(kill_during(argv, cache, kind, rng, horizon=horizon * 1.05, commit_s=commit_s))
        opened = all(opens_with_h5py(cache) for _ in [0])
        done = run(argv)
        c = compare(cache, ref, filler=filler)
        ok = opened and done.returncode == 0 and trial_ok(c, ref["failures"])
        stats["trials"] += 1
        stats["passed"] += ok
        for f in faults:
            if f["killed"]:
                stats["faults"][kind] = stats["faults"].get(kind, 0) + 1
                stats["commit_hits"] += f["in_commit"]
        stats["rows_lost"] += c["missing"]
        stats["dup_rows"] += c["duplicated"]
        stats["unopenable"] += not opened
        stats["rerun_failed"] += done.returncode != 0
        stats["max_diff"] = max(stats["max_diff"], c["max_diff"])
        log(f"trial {k + 1:2d} {kind:15s} " + ", ".join(
            f"killed={f['killed']} at {f['seconds']:.2f}s records={f['records']} in_commit={f['in_commit']}" for f in faults)
            + f" -> rerun rc={done.returncode} rows={c['rows']} missing={c['missing']} dup={c['duplicated']} "
              f"maxdiff={c['max_diff']:.1e} filler_equal={c.get('filler_equal')} {'OK' if ok else 'FAIL'}")
        for p in work.glob(f"t{k}.h5*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return stats


def sigint_trials(work: Path, n: int, seed: int, log=print) -> dict:
    rng = random.Random(seed)
    src = work / "sigint-src"
    make_chest_folder(src, 120, bad=False, offset=300)
    out = {"trials": 0, "passed": 0}
    for k in range(n):
        cache = work / f"s{k}.h5"
        proc = subprocess.Popen(extract_argv(src, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=sigint_default)
        want = rng.randint(1, 4)
        t0 = time.time()
        while proc.poll() is None and _n_records(cache) < want and time.time() - t0 < 120:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        so, se = proc.communicate(timeout=120)
        ok = (proc.returncode == 130 and "interrupted:" in so and "Traceback" not in se and opens_with_h5py(cache))
        out["trials"] += 1
        out["passed"] += ok
        log(f"ctrl-c {k + 1}: rc={proc.returncode} {so.strip()[:90]!r} {'OK' if ok else 'FAIL ' + se[-300:]}")
    return out


def second_writer(work: Path, log=print) -> dict:
    src = work / "sigint-src"
    cache = work / "w.h5"
    first = subprocess.Popen(extract_argv(src, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while first.poll() is None and _n_records(cache) < 1:
        time.sleep(0.01)
    second = run(extract_argv(src, cache))
    first.communicate()
    lines = [ln for ln in second.stderr.strip().splitlines() if ln.startswith("featx: error:")]
    ok = (second.returncode != 0 and "Traceback" not in second.stderr and len(lines) == 1 and "in use by another featx process" in lines[0]
          and first.returncode == 0 and opens_with_h5py(cache))
    log(f"second writer: rc={second.returncode} {lines!r} first rc={first.returncode} {'OK' if ok else 'FAIL'}")
    return {"trials": 1, "passed": int(ok)}


def disk_full(work: Path, log=print) -> dict:
    """The cache on a 3 MB tmpfs filled up to a few KB: a one-line error and the old cache intact."""
    mnt = work / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"disk full: skipped, cannot mount a tmpfs ({r.stderr.strip()})")
        return {"trials": 0, "passed": 0, "skipped": r.stderr.strip()}
    try:
        src1, src2 = work / "df1", work / "df2"
        make_chest_folder(src1, 40, bad=False, offset=500)
        make_chest_folder(src2, 40, bad=False, offset=540)
        cache = mnt / "c.h5"
        assert run(extract_argv(src1, cache)).returncode == 0
        before = read_set(cache, TINY_SET)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 8192))
        r = run(extract_argv(src2, cache))
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("featx: error:")]
        after = read_set(cache, TINY_SET)
        ok = (r.returncode == 2 and len(lines) == 1 and "No space left" in lines[0] and "Traceback" not in r.stderr
              and after["ids"] == before["ids"] and np.array_equal(after["X"], before["X"]))
        (mnt / "filler").unlink()
        r2 = run(extract_argv(src2, cache))
        ok = ok and r2.returncode == 0 and len(read_set(cache, TINY_SET)["ids"]) == 80
        log(f"disk full: rc={r.returncode} {lines!r}; after freeing space rc={r2.returncode} {'OK' if ok else 'FAIL'}")
        return {"trials": 1, "passed": int(ok)}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def bad_inputs(work: Path, log=print) -> dict:
    root = work / "bad"
    exp = make_bad_inputs(root)
    r = run(extract_argv(root, work / "bad.h5"))
    got = read_set(work / "bad.h5", TINY_SET)
    done = {Path(p).name for p, o in zip(got["paths"], got["ok"]) if o}
    failed = {Path(p).name: reason for p, reason, _ in got["failures"]}
    right = 0
    for name, outcome in exp.items():
        if outcome == "ok":
            right += name in done and name not in failed
        else:
            right += name in failed and outcome[7:] in failed[name].lower() and name not in done
    ok = right == len(exp) and "Traceback" not in r.stderr
    log(f"bad inputs: {len(exp)} kinds, {right} with the right outcome, rc={r.returncode} {'OK' if ok else 'FAIL'}")
    if not ok:
        for name, outcome in exp.items():
            log(f"   {name}: expected {outcome}, got {'ok' if name in done else failed.get(name)}")
    return {"kinds": len(exp), "right": right, "names": sorted(exp)}


def issue_check(work: Path, after: float = 25.0, log=print) -> dict:
    """The issue's scenario: 600 real chest X-rays + an empty, a truncated and a non-image file,
    default backbone, kill -9 after 25 s, re-run: 600 rows, each once, 3 failures."""
    src = work / "issue"
    good, bads = make_chest_folder(src, 600)
    cache = work / "issue.h5"
    argv = [PY, "-m", "cli.main", "extract", str(src), "-o", str(cache), "-q"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(after)
    still = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    records = _n_records(cache)
    t = time.time()
    r = run(argv)
    secs = time.time() - t
    import h5py
    with h5py.File(cache, "r") as f:
        name = [n for n in f["features"] if not n.endswith("_ok")][0]
        paths = [s.decode() for s in f["samples/path"][()]]
        ids = [s.decode() for s in f["samples/id"][()]]
        ok = f["features"][name + "_ok"][()]
        fails = [s.decode() for s in f["failures/path"][()]]
    res = {"killed_running": still, "journal_records_at_kill": records, "rerun_rc": r.returncode,
           "rerun_s": round(secs, 1), "rows": len(ids), "unique_ids": len(set(ids)), "all_ok": bool(ok.all()),
           "paths_match": sorted(paths) == sorted(good), "failures": sorted(Path(p).name for p in fails),
           "summary": r.stdout.strip(), "set": name}
    res["passed"] = (still and r.returncode == 0 and len(ids) == 600 and len(set(ids)) == 600 and res["all_ok"]
                     and res["paths_match"] and len(fails) == 3)
    log("issue check: " + json.dumps(res))
    return res


def table(k: dict, s: dict, w: dict, d: dict, b: dict, issue: dict | None) -> str:
    faults = ", ".join(f"{n} {kind}" for kind, n in sorted(k["faults"].items()))
    rows = [
        ("kill -9 trials (re-run completes, identical rows)", f"{k['passed']}/{k['trials']}"),
        ("kill -9 faults injected", f"{sum(k['faults'].values())} ({faults})"),
        ("kills that landed inside a commit", str(k["commit_hits"])),
        ("caches that failed to open after a kill", str(k["unopenable"])),
        ("rows lost / duplicated", f"{k['rows_lost']} / {k['dup_rows']}"),
        ("max abs feature difference vs uninterrupted run (fp32)", f"{k['max_diff']:.1e}"),
        ("Ctrl-C: exit 130, summary line, usable cache, no traceback", f"{s['passed']}/{s['trials']}"),
        ("second writer refused in one line, first unharmed", f"{w['passed']}/{w['trials']}"),
        ("disk full: one-line error, cache intact", f"{d['passed']}/{d['trials']}" if d["trials"] else "skipped"),
        ("bad-input kinds with the right outcome", f"{b['right']}/{b['kinds']}"),
    ]
    if issue is not None:
        rows.append(("600 X-rays + 3 bad, efficientnet_lite0, kill -9 at 25 s, re-run",
                     f"{issue['rows']} rows, {issue['unique_ids']} unique, {len(issue['failures'])} failures "
                     f"({'pass' if issue['passed'] else 'FAIL'})"))
    w1 = max(len(a) for a, _ in rows)
    w2 = max(len(v) for _, v in rows)
    out = [f"| {'check'.ljust(w1)} | {'result'.ljust(w2)} |", f"|{'-' * (w1 + 2)}|{'-' * (w2 + 2)}|"]
    out += [f"| {a.ljust(w1)} | {v.ljust(w2)} |" for a, v in rows]
    out.append("")
    out.append("bad inputs tried: " + ", ".join(b["names"]))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--images", type=int, default=200, help="chest X-rays per kill trial")
    ap.add_argument("--sigint", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-issue-check", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="featx-faults-"))
    t0 = time.time()
    try:
        k = kill_trials(work, a.trials, a.images, a.seed)
        s = sigint_trials(work, a.sigint, a.seed)
        w = second_writer(work)
        d = disk_full(work)
        b = bad_inputs(work)
        issue = None if a.skip_issue_check else issue_check(work)
        print()
        print(table(k, s, w, d, b, issue))
        print(f"\n({time.time() - t0:.0f} s, {os.cpu_count()} cpus)")
        passed = (k["passed"] == k["trials"] and s["passed"] == s["trials"] and w["passed"] == w["trials"]
                  and d["passed"] == d["trials"] and b["right"] == b["kinds"] and (issue is None or issue["passed"]))
        return 0 if passed else 1
    finally:
        if a.keep:
            print(f"work folder kept: {work}")
        else:
            subprocess.run(["umount", str(work / "tmpfs")], capture_output=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
