"""Test-time views: features averaged over flipped / cropped copies of each preprocessed image.

This module names and checks the views without importing torch (a cached re-run never builds a
network); the torch module that runs them is featx.backbones.tta.

``featx.backbones.tta.ViewAveraged`` wraps a feature model (``featx.backbones.taps.FeatureModel``: a batch ->
``{tap: (B, D) pooled features}``) and returns, per tap, the mean over the views of the batch:

* the identity (always),
* ``flip``: horizontal flip, ``vflip``: vertical flip,
* ``crop5``: the four corner crops and the centre crop, each ``crop_fraction`` of the height and
  width, resized back to the input size (bilinear).

The views are run one after another (memory as without views; time x the number of views). The
extractor records :func:`views_config` in the set's config and names the set with
:func:`views_suffix`, so averaged and plain features never mix.
"""
from __future__ import annotations

from typing import Sequence

from featx.errors import FeatxError

VIEWS = ("flip", "vflip", "crop5")
CROP_FRACTION = 0.875


def parse_views(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """ "flip,crop5" -> ("flip", "crop5"); None, "", "none" -> () (no test-time views).

    Raises FeatxError naming ``--tta`` for an unknown or repeated view."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    views = [t.strip().lower() for t in items if t.strip()]
    if views in ([], ["none"]):
        return ()
    for v in views:
        if v not in VIEWS:
            raise FeatxError(f"--tta: unknown view {v!r}; choose from {', '.join(VIEWS)} (comma-separated), or none")
    if len(set(views)) != len(views):
        raise FeatxError(f"--tta: a view is listed twice in {','.join(views)}")
    return tuple(v for v in VIEWS if v in views)  # canonical order: same views, same config


def views_config(views: Sequence[str]) -> dict:
    """The set config fragment: ``{"tta": [...]}`` with views, ``{}`` without (configs unchanged)."""
    views = parse_views(list(views))
    return {"tta": list(views)} if views else {}


def views_suffix(views: Sequence[str]) -> str:
    """The set-name suffix: "" without views, else "_tta-flip", "_tta-flip-crop5", ..."""
    views = parse_views(list(views))
    return "_tta-" + "-".join(views) if views else ""


def n_views(views: Sequence[str]) -> int:
    """Forward passes per batch: 1 (identity) + 1 per flip + 5 for crop5."""
    views = parse_views(list(views))
    return 1 + sum(5 if v == "crop5" else 1 for v in views)

