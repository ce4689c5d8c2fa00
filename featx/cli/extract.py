"""featx extract: images -> features in an HDF5 cache."""
from __future__ import annotations

import sys

import click

from featx.cli.common import RegistryChoice, SuggestChoice, WholeNumber, split_list


def _window(value):
    if value is None:
        return None
    if "," in value:
        try:
            c, w = (float(x) for x in value.split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r}: needs a preset name or CENTER,WIDTH in HU (e.g. -600,1500)", param_hint="'--window'") from None
        return (c, w)
    return value


EXTRACT_EPILOG = """\b
Examples:
  featx extract images/ -o cache.h5                     (class subfolders give the labels)
  featx extract scans.csv -o ct.h5 --backbone efficientnet_lite0 --handcrafted hog,glcm --window lung
"""


@click.command("extract", epilog=EXTRACT_EPILOG)
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "cache", required=True, type=click.Path(dir_okay=False), help="HDF5 cache to create or extend.")
@click.option("--backbone", "backbones", multiple=True, help="Backbone name(s): a featx alias, torchvision or timm model (repeat or comma-separate). Default efficientnet_lite0; 'none' for handcrafted only.")
@click.option("--handcrafted", default=None, help="Handcrafted sets, e.g. hog,lbp,glcm,firstorder.")
@click.option("--layers", multiple=True, help="Taps: 'head' (default), stage indices (0..), module names, or 'stages'.")
@click.option("--concat-layers", is_flag=True, help="Store the taps concatenated as one set instead of one set each.")
@click.option("--pooling", type=RegistryChoice("featx.backbones.taps:POOLINGS", default="avg"), default="avg", show_default=True, help="CNN maps: avg, max or gem. Transformer tokens (ViT, DeiT, ...): cls, avg (patch tokens, without class token and registers) or cls+avg.")
@click.option("--weights", default=None, help="A local state-dict file (.pt/.pth/.ckpt/.safetensors; Lightning-style nesting is unwrapped), or 'none' for random init (recorded). Default: pretrained.")
@click.option("--arch", default=None, help="With --weights FILE: the timm or torchvision architecture of your checkpoint (instead of --backbone).")
@click.option("--device", default="auto", show_default=True, help="auto|cpu|cuda|cuda:N|mps")
@click.option("--precision", type=RegistryChoice("featx.runtime:PRECISIONS", default="auto"), default="auto", show_default=True)
@click.option("--batch-size", type=WholeNumber(1, "images per batch"), default=32, show_default=True)
@click.option("--workers", type=WholeNumber(0, "processes; 0 decodes in the main process"), default=None, help="Decoding worker processes (default: cores - 1 with a backbone, all cores without); with --engine ray, model actors (default: one per GPU, or one per 4 CPUs of each node).")
@click.option("--window", default=None, help="DICOM window: lung, mediastinum, bone, brain, abdomen, liver, or CENTER,WIDTH (HU). Default: the file's own.")
@click.option("--intensity", type=SuggestChoice(["auto", "dtype", "minmax"]), default="auto", show_default=True, help="How >8-bit data becomes [0, 1].")
@click.option("--no-jpeg-draft", is_flag=True, help="Decode large JPEGs at full size (slower; draft decoding is recorded in the config).")
@click.option("--name", default=None, help="Name for the feature set (default: the backbone's name).")
@click.option("--allow-outside", is_flag=True, help="Let a CSV manifest point outside its own folder.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any input failed.")
@click.option("--tta", default=None, help="Test-time views averaged per image, stored as their own set: flip, vflip, crop5 (comma-separated).")
@click.option("--rehash", is_flag=True, help="Read and hash every input file again instead of trusting the cache's memo of unchanged files (size, mtime, ctime, inode).")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--force", is_flag=True, help="Overwrite an existing output of another kind (never an input).")
@click.option("--engine", type=SuggestChoice(["local", "ray"]), default="local", show_default=True, help="ray: decode in Ray tasks and run the model in one Ray actor per GPU/CPU slot (--workers actors); needs featx[ray].")
@click.option("--address", default=None, help="Ray cluster for --engine ray: auto, HOST:PORT or ray://HOST:PORT (default: $RAY_ADDRESS, else a local Ray).")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="With --engine ray: stop a run that finishes no batch for this many seconds (default 300), keeping the rows already computed.")
@click.option("--compile", "compile_mode", type=SuggestChoice(["auto", "on", "off"]), default="auto", show_default=True, help="Run the backbone compiled by AOTInductor (faster after a one-off compile; the package is cached on disk under $FEATX_CACHE_DIR or ~/.cache/featx and loads in under a second). auto: only for runs long enough to repay it.")
def extract_cmd(sources, cache, backbones, handcrafted, layers, concat_layers, pooling, weights, arch, device, precision,
                batch_size, workers, window, intensity, no_jpeg_draft, name, allow_outside, strict, tta, rehash, quiet, force,
                engine, address, stall_timeout, compile_mode):
    """Extract features of SOURCES (folders, CSV manifests, .npz, DICOM or image files) into CACHE."""
    from featx.safeio import check_output

    check_output(cache, sources, kind="cache", force=force)
    if arch is not None:
        if not weights or weights.lower() == "none":
            raise click.UsageError("--arch names the architecture of a checkpoint: give the file with --weights FILE")
        if split_list(backbones) not in ([], [arch]):
            raise click.UsageError("--arch is the backbone of your checkpoint: give --arch or --backbone, not both")
        backbones = (arch,)
    bbs = split_list(backbones) or ["efficientnet_lite0"]
    if [b.lower() for b in bbs] == ["none"]:
        bbs = []
    try:
        from featx.extraction import extract

        run_on = None
        if engine == "ray":
            from featx.engines.ray import RayEngine
            run_on = RayEngine(address=address, **({} if stall_timeout is None else {"stall_timeout": stall_timeout}))
        summary = extract(list(sources), cache, backbones=bbs, handcrafted=handcrafted, layers=split_list(layers),
                          concat_layers=concat_layers, pooling=pooling, weights=weights, device=device,
                          precision=precision, batch_size=batch_size, workers=workers, strict=strict,
                          window=_window(window), intensity=intensity, jpeg_draft=not no_jpeg_draft,
                          allow_outside=allow_outside, name=name, progress=not quiet and sys.stderr.isatty(),
                          compile=compile_mode, engine=run_on, rehash=rehash, tta=tta)
    except KeyboardInterrupt:
        # Ctrl-C outside the batch loop (start-up, scanning, model building, a commit): nothing is
        # half-written (the cache is replaced atomically; computed rows wait in its journal).
        click.echo(f"interrupted: stopped before the run's summary -> {cache} (intact; rows already "
                   "computed are kept and the next run resumes)")
        sys.exit(130)
    click.echo(summary.line())
    if summary.interrupted:
        sys.exit(130)
    if summary.ok == 0 and summary.reused == 0:
        sys.exit(1)
