"""featx backbones / featx layers: the backbone catalogue and the taps of one backbone."""
from __future__ import annotations

import click

BACKBONES_EPILOG = """\b
Examples:
  featx backbones --offline            (what runs here now with pretrained weights)
  featx backbones --filter vit
"""

LAYERS_EPILOG = """\b
Examples:
  featx layers efficientnet_lite0
  featx extract data.npz -o cache.h5 --backbone efficientnet_lite0 --layers blocks.4
"""

WEIGHT_WORDS = {"package": "offline package", "cache": "local download cache", "download": "needs download",
                "none": "no pretrained weights"}


def _preprocess_text(pre) -> str:
    if pre is None:
        return "-"
    h, w = pre.crop_size
    mean = ",".join(f"{m:.3g}" for m in pre.mean)
    std = ",".join(f"{s:.3g}" for s in pre.std)
    return f"resize {pre.resize_size} {pre.interpolation}, crop {h}x{w} ({pre.crop_mode}), mean {mean}, std {std}"


@click.command("backbones", epilog=BACKBONES_EPILOG)
@click.option("--offline", is_flag=True, help="Only backbones whose pretrained weights are here now (installed package or download cache).")
@click.option("--filter", "text", default=None, help="Only names containing TEXT (case-insensitive).")
def backbones_cmd(offline, text):
    """List the backbones featx accepts: its aliases, then torchvision and timm models, with where
    each one's weights come from and its preprocessing. Any of them also runs with --weights none
    (random init) or --weights FILE."""
    from featx.backbones.catalogue import list_backbones

    rows = list_backbones(offline=offline, filter=text)
    if not rows:
        click.echo("no backbone matches" + (" with pretrained weights here" if offline else ""))
        return
    width = max(len(b.name) for b in rows)
    lib_width = max(len(b.library) for b in rows)
    for b in rows:
        src = WEIGHT_WORDS[b.weights] + (f" ({b.weights_from})" if b.weights_from else "")
        click.echo(f"{b.name:<{width}}  {b.library:<{lib_width}}  {src}  |  {_preprocess_text(b.preprocess)}")
    click.echo(f"{len(rows)} backbone(s)")


@click.command("layers", epilog=LAYERS_EPILOG)
@click.argument("backbone")
@click.option("--weights", default=None, help="A local state-dict file, or 'none' for random init. Default: pretrained if here, else random init (widths do not depend on weights).")
def layers_cmd(backbone, weights):
    """List every tap featx accepts for BACKBONE (--layers values: head, stage names or their
    indices, module names) with the feature width each gives under each pooling."""
    from featx.backbones.catalogue import list_layers

    rows = list_layers(backbone, weights=weights)
    click.echo(f"{backbone}: weights {rows[0].weights}; widths measured on a dummy image")
    poolings = list(dict.fromkeys(p for r in rows for p in r.widths))
    width = max(len(r.tap) for r in rows)
    click.echo(f"{'tap':<{width}}  {'kind':<9}  " + "  ".join(f"{p:>7}" for p in poolings))
    stage = 0
    for r in rows:
        kind = r.kind
        if kind == "stage":
            kind, stage = f"stage {stage}", stage + 1
        click.echo(f"{r.tap:<{width}}  {kind:<9}  " + "  ".join(f"{r.widths.get(p, '-'):>7}" for p in poolings))
