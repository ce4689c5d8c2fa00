"""Cache scale: what a commit costs as the cache grows (layout 2), and a no-op re-scan with the memo.

Builds caches of synthetic 1280-wide rows through the path extraction uses (Journal + commit),
then times adding 100 rows to each (the median of ADDS, interleaved), the peak RSS of that commit at the large size (in a fresh
process), and a re-scan of many small files whose ids come from the cache's memo.

    python bench/cache_scale.py [--quick] [--work DIR]

Prints ``RESULT add100_small_s= add100_large_s= growth= noop_rerun_s= commit_peak_rss_mb=``.
Targets: add100_large_s < 1, growth < 1.5, noop_rerun_s < 10 (100k files), commit_peak_rss_mb < 500.
The full run writes about 5 GB (1M x 1280 float32) under --work (default /work/bench-cache-scale).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WIDTH = 1280
ADDS = 3     # add-100 commits timed at each size (the median is reported)
SET = "synthetic"
CONFIG = {"kind": "synthetic", "width": WIDTH}


def sample_id(text: str) -> str:
    """A sample id as featx makes them (a sha256 in hex: 64 characters)."""
    return hashlib.sha256(text.encode()).hexdigest()


def _record(C, ids, rng):
    n = len(ids)
    X = rng.standard_normal((n, WIDTH)).astype(np.float32)
    return C.BatchRecord(ids=ids, paths=[f"/data/{i}.png" for i in ids], labels=["a" if k % 2 else "b" for k in range(n)],
                         groups=[""] * n, splits=[""] * n, duplicate_of=[""] * n,
                         sets=[C.SetRows(SET, CONFIG, "deep", ids, X)])


def build(cache: Path, rows: int, commit_rows: int, record_rows: int = 10_000) -> float:
    from featx import cache as C
    rng = np.random.default_rng(rows)
    t0 = time.perf_counter()
    journal = C.Journal(cache)
    for a in range(0, rows, commit_rows):
        for b in range(a, min(rows, a + commit_rows), record_rows):
            journal.append(_record(C, [sample_id(str(k)) for k in range(b, min(rows, a + commit_rows, b + record_rows))],
                                   rng))
        with C.CacheLock(cache):
            C.commit(cache)
    return time.perf_counter() - t0


ADD = """
import sys, time, numpy as np
sys.path[:0] = [{root!r}, {root!r} + "/bench"]
from featx import cache as C
from cache_scale import _record, sample_id
import h5py, numpy.ma  # imported before the clock: the time is the commit's own (imports cost the same at any size)
cache = {cache!r}
t0 = time.perf_counter()
C.Journal(cache).append(_record(C, [sample_id("add-%s-%06d" % ({tag!r}, k)) for k in range(100)], np.random.default_rng(1)))
with C.CacheLock(cache):
    C.commit(cache)
took = time.perf_counter() - t0
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork + exec on Linux)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(took, hwm / 1024)
"""


def add100(cache: Path, tag: str) -> tuple[float, float]:
    """Seconds to journal and commit 100 rows, and the committing process's peak RSS (MB)."""
    r = subprocess.run([sys.executable, "-c", ADD.format(root=str(ROOT), cache=str(cache), tag=tag)],
                       capture_output=True, text=True, check=True)
    s, rss = r.stdout.split()
    return float(s), float(rss)


def _png(k: int) -> bytes:
    def chunk(kind, data):
        import struct
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    import struct
    raw = b"".join(b"\0" + bytes([(k >> s) & 255 for s in (0, 8, 16, 24)]) for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def noop_rerun(work: Path, n_files: int) -> float:
    """A re-scan of ``n_files`` small files already in the cache: memo read + scan, nothing hashed."""
    from featx import cache as C
    from featx.sources import scan_sources
    folder = work / "files"
    if not folder.is_dir():
        for k in range(n_files):
            sub = folder / f"{k // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{k}.png").write_bytes(_png(k))
    cache = work / "files.h5"
    if not cache.exists():
        scan = scan_sources([folder])
        rec = C.BatchRecord()
        for s in scan.samples:
            rec.add_sample(s)
        C.Journal(cache).append(rec)
        with C.CacheLock(cache):
            C.commit(cache)
    t0 = time.perf_counter()
    memo = C.read_memo(cache)
    scan = scan_sources([folder], memo=memo)
    took = time.perf_counter() - t0
    assert len(scan.samples) == n_files and len(memo) == n_files
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="30k and 100k rows, 20k files (a smoke run)")
    ap.add_argument("--work", default="/work/bench-cache-scale")
    ap.add_argument("--keep", action="store_true", help="keep the caches for the next run")
    a = ap.parse_args()
    small, large, files = (30_000, 100_000, 20_000) if a.quick else (30_000, 1_000_000, 100_000)
    work = Path(a.work) / ("quick" if a.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    built = {}
    for rows in (small, large):
        cache = work / f"c{rows}.h5"
        if not cache.exists():
            built[rows] = build(cache, rows, commit_rows=min(rows, 100_000))
    smalls, larges, rsss = [], [], []
    for k in range(ADDS):   # interleaved, so a busy spell of the machine hits both sizes alike
        tag = f"{time.time_ns()}-{k}"   # new ids on every run, also over caches kept by --keep
        s, _ = add100(work / f"c{small}.h5", tag)
        big, rss = add100(work / f"c{large}.h5", tag)
        smalls.append(s), larges.append(big), rsss.append(rss)
    t_small, t_large, rss = float(np.median(smalls)), float(np.median(larges)), max(rsss)
    t_noop = noop_rerun(work, files)
    info = {"small_rows": small, "large_rows": large, "files": files, "add100_small_s": [round(v, 3) for v in smalls],
            "add100_large_s": [round(v, 3) for v in larges],
            "build_s": {str(k): round(v, 1) for k, v in built.items()}}
    print(json.dumps(info))
    print(f"RESULT add100_small_s={t_small:.3f} add100_large_s={t_large:.3f} growth={t_large / t_small:.2f} "
          f"noop_rerun_s={t_noop:.2f} commit_peak_rss_mb={rss:.0f}")
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
