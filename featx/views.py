"""Test-time views: features averaged over flipped / cropped copies of each preprocessed image.

:class:`ViewAveraged` wraps a feature model (``featx.backbones.taps.FeatureModel``: a batch ->
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

import torch
import torch.nn.functional as F
from torch import nn

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


def five_crops(x: torch.Tensor, fraction: float = CROP_FRACTION) -> list[torch.Tensor]:
    """The 4 corner crops and the centre crop of a (B, C, H, W) batch, resized back to (H, W)."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    tops = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    out = []
    for top, left in tops:
        crop = x[..., top:top + ch, left:left + cw]
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return out


def view_batches(x: torch.Tensor, views: Sequence[str]):
    """Yield the identity then each view of batch ``x`` (B, C, H, W)."""
    yield x
    for v in views:
        if v == "flip":
            yield torch.flip(x, dims=[-1])
        elif v == "vflip":
            yield torch.flip(x, dims=[-2])
        elif v == "crop5":
            yield from five_crops(x)


class ViewAveraged(nn.Module):
    """``feature_model`` run on each view of the batch; returns ``{tap: mean over views}``."""

    def __init__(self, feature_model: nn.Module, views: Sequence[str] = ("flip",)):
        super().__init__()
        self.feature_model = feature_model
        self.views = parse_views(list(views))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        total: dict[str, torch.Tensor] = {}
        count = 0
        for batch in view_batches(x, self.views):
            out = self.feature_model(batch)
            for tap, feats in out.items():
                feats = feats.float()
                total[tap] = feats if tap not in total else total[tap] + feats
            count += 1
        return {tap: t / count for tap, t in total.items()}
