"""The torch side of test-time views (featx.views names and checks them): a feature model run on
each view of a batch, averaged per tap."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featx.views import CROP_FRACTION, parse_views

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
