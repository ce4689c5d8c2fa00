"""Extraction throughput: featx against the loop people write, the model-only ceiling, and a cache re-run.

In one process, on the same images, same backbone and batch size:
  (a) naive   torchvision ImageFolder + DataLoader(num_workers=2) + model.eval(), fp32, NCHW -> numpy
  (b) featx   featx.extract end to end, files -> HDF5 (fresh cache)
  (c) ceiling forward passes only, on pre-decoded tensors, at the precision featx used
  (d) rerun   featx.extract again on the unchanged set
Image sets: the real chest X-rays (224 px JPEG) and generated large radiograph-like images
(2048x2048 8-bit JPEG and 16-bit PNG). Backbones: resnet50 (random init; speed only) and
efficientnet_lite0 (real weights). Last line:
  RESULT featx_vs_naive=<a/b> featx_vs_ceiling=<b/c> cache_rerun_speedup=<b_time/d_time>
for resnet50 on the chest X-rays. Then the memory check: peak RSS of featx extract for 1,000 and
10,000 images in fresh processes.

    .venv/bin/python bench/extract_throughput.py --quick      # < 10 minutes on 2 cores
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("FEATX_SHARED_DATA", ROOT.parent / "shared" / "data"))
CHEST = SHARED / "chest-xray-pneumonia-224"

from featx.backbones.precision import keep_sensitive_layers_fp32  # noqa: E402
from featx.backbones.registry import build  # noqa: E402
from featx.backbones.inference import run_model  # noqa: E402
from featx.extraction import extract  # noqa: E402
from featx.runtime import make_runtime  # noqa: E402


def chest_subset(dst: Path, n: int) -> Path:
    """n real chest X-rays (half per class, from train), as symlinks in ImageFolder layout."""
    per = n // 2
    for c in ("NORMAL", "PNEUMONIA"):
        (dst / c).mkdir(parents=True)
        for p in sorted((CHEST / "train" / c).glob("*.jpeg"))[:per]:
            (dst / c / p.name).symlink_to(p)
    return dst


def large_images(dst: Path, n: int, kind: str) -> Path:
    """Radiograph-like 2048x2048 images: smooth anatomy-ish blobs + noise, 8-bit JPEG or 16-bit PNG."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2048, 0:2048].astype(np.float32) / 2048
    for c in ("a", "b"):
        (dst / c).mkdir(parents=True)
    for i in range(n):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        body = np.exp(-(((xx - cx) / 0.35) ** 2 + ((yy - cy) / 0.45) ** 2))
        img = 0.7 * body + 0.05 * np.sin(40 * yy + i) + 0.05 * rng.standard_normal((2048, 2048)).astype(np.float32)
        img = np.clip(img, 0, 1)
        folder = dst / ("a" if i % 2 else "b")
        if kind == "jpeg":
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
        else:
            Image.fromarray((img * 4095).astype(np.uint16)).save(folder / f"{i}.png")  # 12-bit in 16-bit
    return dst


def naive(folder: Path, model_name: str, weights, batch: int) -> float:
    """The loop users write: ImageFolder + DataLoader(2 workers) + fp32 NCHW model."""
    import torchvision
    from torchvision import transforms as T
    bb = build(model_name, weights=weights)
    p = bb.preprocess
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[p.interpolation]
    tf = T.Compose([T.Grayscale(3), T.Resize(p.resize_size, interpolation=interp), T.CenterCrop(p.crop_size),
                    T.ToTensor(), T.Normalize(p.mean, p.std)])

    def loader(path):  # 16-bit PNGs need this much to even open in the naive loop
        im = Image.open(path)
        if im.mode.startswith("I"):
            a = np.asarray(im).astype(np.float32)
            im = Image.fromarray(((a - a.min()) / max(1.0, a.max() - a.min()) * 255).astype(np.uint8))
        return im.convert("RGB")
    ds = torchvision.datasets.ImageFolder(str(folder), transform=tf, loader=loader)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=2)
    model = bb.model.eval()
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    out = []
    with torch.inference_mode():
        for x, _ in dl:
            out.append(model(x)["head"].numpy())
    return len(ds) / (time.perf_counter() - t)


def ceiling(model_name: str, weights, n: int, batch: int, precision: str) -> tuple[float, str]:
    runtime = make_runtime("auto", precision)
    bb = build(model_name, weights=weights)
    if runtime.precision != "fp32":  # the very network featx runs, precision policy included
        keep_sensitive_layers_fp32(bb.model.model)
    model = bb.model.to(memory_format=torch.channels_last) if runtime.channels_last else bb.model
    x = torch.randn(batch, 3, *bb.preprocess.crop_size)
    run_model(model, x, runtime)  # warm-up
    t = time.perf_counter()
    done = 0
    while done < n:
        run_model(model, x, runtime)
        done += batch
    return done / (time.perf_counter() - t), runtime.describe()


def featx_run(folder: Path, cache: Path, model_name: str, weights, batch: int) -> tuple[float, float, float, str]:
    t = time.perf_counter()
    s = extract([folder], cache, backbones=[model_name], weights=weights, batch_size=batch, progress=False)
    first = time.perf_counter() - t
    t = time.perf_counter()
    s2 = extract([folder], cache, backbones=[model_name], weights=weights, batch_size=batch, progress=False)
    rerun = time.perf_counter() - t
    assert s2.ok == 0, "re-run recomputed something"
    return s.ok / first, first, rerun, s.runtime


def peak_rss_mb(folder: Path, cache: Path) -> float:
    code = ("import resource, sys; from featx.extraction import extract; "
            f"extract([{str(folder)!r}], {str(cache)!r}, backbones=['timm/test_efficientnet'], weights='none', "
            "precision='fp32', progress=False); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def small_pngs(dst: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (dst / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(dst / ("a" if i % 2 else "b") / f"{i}.png")
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images (the run stays under 10 minutes)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    n_chest = 640 if args.quick else 1600
    n_large = 40 if args.quick else 96
    tmp = Path(tempfile.mkdtemp(prefix="featx-bench-"))
    try:
        sets = {"chest-224-jpeg": chest_subset(tmp / "chest", n_chest),
                "2048-jpeg": large_images(tmp / "jpeg", n_large, "jpeg"),
                "2048-png16": large_images(tmp / "png16", n_large, "png16")}
        backbones = [("resnet50", "none"), ("efficientnet_lite0", None)]
        print(f"{'backbone':<20}{'images':<16}{'n':>6}{'naive':>9}{'featx':>9}{'ceiling':>9}"
              f"{'f/naive':>9}{'f/ceil':>8}{'rerun s':>9}{'first/rerun':>12}  runtime")
        result = None
        for name, weights in backbones:
            for label, folder in sets.items():
                n = sum(1 for _ in folder.rglob("*.*"))
                a = naive(folder, name, weights, args.batch_size)
                b, first, rerun, rt = featx_run(folder, tmp / f"{name}-{label}.h5", name, weights, args.batch_size)
                c, _ = ceiling(name, weights, max(n, 4 * args.batch_size), args.batch_size, "auto")
                print(f"{name:<20}{label:<16}{n:>6}{a:>9.1f}{b:>9.1f}{c:>9.1f}{b / a:>9.2f}{b / c:>8.2f}"
                      f"{rerun:>9.2f}{first / rerun:>12.0f}  {rt}", flush=True)
                if name == "resnet50" and label == "chest-224-jpeg":
                    result = (b / a, b / c, first / rerun)
        if not args.no_memory:
            m1 = peak_rss_mb(small_pngs(tmp / "m1k", 1000), tmp / "m1k.h5")
            m10 = peak_rss_mb(small_pngs(tmp / "m10k", 10000), tmp / "m10k.h5")
            print(f"MEMORY peak_rss_1k={m1:.0f}MB peak_rss_10k={m10:.0f}MB delta={m10 - m1:+.0f}MB (target <= +300MB)")
        if result:
            print(f"RESULT featx_vs_naive={result[0]:.2f} featx_vs_ceiling={result[1]:.2f} "
                  f"cache_rerun_speedup={result[2]:.0f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
