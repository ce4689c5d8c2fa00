"""HOG + LBP throughput: featx.extract (worker processes, HDF5 cache) against a plain loop.

Both sides compute the same descriptors with the same scikit-image calls on the same images of
the chest X-ray folder, in the same run:

  * baseline: one process, for each file PIL open -> 8-bit gray -> float in [0, 1] ->
    ``hog(resize(gray, (128, 128), anti_aliasing=True), 9, (16, 16), (2, 2), "L2-Hys")`` and
    ``local_binary_pattern(gray8, P, R, "uniform")`` for (8, 1), (16, 2), (24, 3), each turned
    into a normalized histogram of P + 2 bins (featx's defaults for "hog" and "lbp");
  * featx: ``featx.extract(files, <temp cache>, backbones=[], handcrafted=["hog", "lbp"])``,
    timed end to end (scan and hashing of the files, decoding, worker processes, journal, the
    HDF5 commit).

Imports (torch, which featx's data loader needs, and scikit-image) happen before either clock
starts, and every file is read once beforehand so both sides find it in the page cache. After
timing, featx's cached vectors are checked against the baseline's (to 1e-5; featx stores
float32). The loop's gray pixels pass through float32 as featx's decoded images do: HOG bins
orientations hard, so float32 vs float64 rounding of the same pixels moves a few gradients to the
next bin.

    .venv/bin/python bench/handcrafted_throughput.py [--limit 800] [--repeat 1] [--data DIR]
                                                      [--workers N]

The last line is ``RESULT handcrafted_speedup=<featx images/s / loop images/s>``.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path("/work/shared/data/chest-xray-pneumonia-224")
LBP_PR = [(8, 1), (16, 2), (24, 3)]


def list_images(root: Path, limit: int) -> list[Path]:
    """Up to ``limit`` JPEGs, taken round-robin from the class folders so both classes appear."""
    per_dir = [sorted(p for p in d.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
               for d in sorted(x for x in root.glob("*/*") if x.is_dir())]
    if not per_dir:
        per_dir = [sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))]
    out: list[Path] = []
    i = 0
    while len(out) < limit and any(i < len(d) for d in per_dir):
        for d in per_dir:
            if i < len(d) and len(out) < limit:
                out.append(d[i])
        i += 1
    return out


def baseline_one(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from skimage.feature import hog, local_binary_pattern
    from skimage.transform import resize

    with Image.open(path) as im:
        gray8 = np.asarray(im.convert("L"))
    gray = (gray8.astype(np.float32) / 255.0).astype(np.float64)  # float32 pixels, like featx's
    h = hog(resize(gray, (128, 128), anti_aliasing=True), orientations=9,
            pixels_per_cell=(16, 16), cells_per_block=(2, 2), block_norm="L2-Hys")
    hists = []
    for P, R in LBP_PR:
        codes = local_binary_pattern(gray8, P, R, method="uniform").astype(np.int64).ravel()
        hists.append(np.bincount(codes, minlength=P + 2) / codes.size)
    return h, np.concatenate(hists)


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (featx's loader workers are reaped)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of images")
    ap.add_argument("--limit", type=int, default=800, help="number of images (default 800)")
    ap.add_argument("--workers", type=int, default=None, help="featx workers (default: featx's own)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate both sides this many times and keep each side's best run")
    args = ap.parse_args(argv)

    files = list_images(args.data, args.limit)
    if not files:
        print(f"no images under {args.data}", file=sys.stderr)
        return 2
    for f in files:  # warm the page cache for both sides
        f.read_bytes()

    t = time.perf_counter()
    import skimage  # noqa: F401
    import torch  # noqa: F401  (featx's data loader)

    import featx
    from featx.cache import load_features
    from featx.extraction import extract
    from featx.runtime import usable_cpus
    print(f"images: {len(files)} from {args.data}; cpus: {usable_cpus()}; "
          f"featx {featx.__version__}, scikit-image {skimage.__version__}; "
          f"imports {time.perf_counter() - t:.1f} s (not timed)")

    load_before = os.getloadavg()[0]
    baseline_one(files[0])  # first-call overheads out of the loop's clock
    loop_runs, featx_runs = [], []
    base: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    worst_hog = worst_lbp = 0.0
    for rep in range(args.repeat):  # alternate the two sides; keep each side's best run
        t, c = time.perf_counter(), _cpu_seconds()
        base = {str(f): baseline_one(f) for f in files}
        loop_runs.append((time.perf_counter() - t, _cpu_seconds() - c))
        print(f"  run {rep + 1}: loop {loop_runs[-1][0]:.2f} s", end="", flush=True)

        with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
            cache = Path(tmp) / "bench.h5"
            t, c = time.perf_counter(), _cpu_seconds()
            summary = extract([str(f) for f in files], cache, backbones=[],
                              handcrafted=["hog", "lbp"], workers=args.workers, progress=False)
            featx_runs.append((time.perf_counter() - t, _cpu_seconds() - c))
            print(f", featx {featx_runs[-1][0]:.2f} s")
            if summary.ok != len(files) or summary.failed:
                print(f"featx extracted {summary.ok} of {len(files)} ({summary.failed} failed): "
                      f"{summary.failures[:3]}", file=sys.stderr)
                return 1
            table = load_features(cache, ["hog", "lbp"])
            hog_sl, lbp_sl = table.set_slices["hog"], table.set_slices["lbp"]
            for path, row in zip(table.paths, table.X):
                h, lb = base[os.fspath(path)]
                worst_hog = max(worst_hog, float(np.abs(row[hog_sl] - h).max()))
                worst_lbp = max(worst_lbp, float(np.abs(row[lbp_sl] - lb).max()))
            if len(table.paths) != len(files) or worst_lbp > 1e-5 or worst_hog > 1e-5:
                print(f"MISMATCH: rows {len(table.paths)}/{len(files)}, max |diff| hog "
                      f"{worst_hog:.2e}, lbp {worst_lbp:.2e}", file=sys.stderr)
                return 1

    n = len(files)
    t_loop, c_loop = min(loop_runs)
    t_featx, c_featx = min(featx_runs)
    loop_ips, featx_ips = n / t_loop, n / t_featx
    best = f"best of {args.repeat}" if args.repeat > 1 else "1 run"
    print(f"plain scikit-image loop (1 process, {best}): {n} images in {t_loop:.2f} s "
          f"= {loop_ips:.1f} images/s ({1000 * c_loop / n:.1f} ms CPU/image)")
    print(f"featx.extract hog+lbp ({summary.runtime}, {best}): {n} images in {t_featx:.2f} s "
          f"= {featx_ips:.1f} images/s ({1000 * c_featx / n:.1f} ms CPU/image, all processes)")
    print(f"1-min load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"(other work on the machine lowers the parallel gain)")
    print(f"vectors agree: max |diff| hog {worst_hog:.1e}, lbp {worst_lbp:.1e}")
    print(f"RESULT handcrafted_speedup={featx_ips / loop_ips:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
