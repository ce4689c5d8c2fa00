"""Where features are taken from a network (taps) and how each is pooled to a vector.

The default tap, ``head``, is the network's own penultimate pooled vector (timm's pre-logits,
torchvision's input to the last Linear). Other taps are named modules (``layer3``,
``blocks.4``, or for timm a stage index from ``feature_info``), captured with forward hooks and
pooled with avg, max or GeM; when only early taps are asked for, the forward pass stops once the
last of them has run.
"""
from __future__ import annotations

import torch
from torch import nn

from featx.backbones import POOLINGS
from featx.errors import BackboneError
GEM_P = 3.0
GEM_EPS = 1e-6


def pool(t: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, H, W) maps or (B, N, C) tokens -> (B, C) vectors; (B, C) passes through."""
    if t.ndim == 2:
        return t
    if t.ndim == 3:  # tokens of a transformer: pool over the token axis
        dims = (1,)
    elif t.ndim == 4:
        dims = (2, 3)
    else:
        raise BackboneError(f"cannot pool a tensor of shape {tuple(t.shape)}")
    if how == "avg":
        return t.mean(dim=dims)
    if how == "max":
        return t.amax(dim=dims)
    if how == "gem":
        return t.float().clamp(min=GEM_EPS).pow(GEM_P).mean(dim=dims).pow(1.0 / GEM_P)
    raise BackboneError(f"unknown pooling {how!r} (avg, max, gem)")


class _Stop(Exception):
    pass


class FeatureModel(nn.Module):
    """Runs a frozen backbone and returns ``{tap: (B, D) float tensor}``.

    ``head_fn(model, x)`` computes the default tap; ``final_fn(model, x)`` the last feature map
    (used for ``head`` with max/GeM pooling); ``taps`` are module names to hook.
    """

    def __init__(self, model: nn.Module, taps: list[str], pooling: str, head_fn, final_fn):
        super().__init__()
        self.model = model
        self.taps = list(taps)
        self.pooling = pooling
        self._head_fn = head_fn
        self._final_fn = final_fn
        modules = dict(model.named_modules())
        self._hooked = [t for t in self.taps if t != "head"]
        for t in self._hooked:
            if t not in modules:
                raise BackboneError(f"no layer named {t!r} in this backbone")
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = [modules[t].register_forward_hook(self._make_hook(t)) for t in self._hooked]

    def _make_hook(self, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            self._captured[name] = pool(output, self.pooling)
            if "head" not in self.taps and len(self._captured) == len(self._hooked):
                raise _Stop()
        return hook

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        out: dict[str, torch.Tensor] = {}
        try:
            if "head" in self.taps:
                if self.pooling == "avg":
                    out["head"] = self._head_fn(self.model, x)
                else:
                    out["head"] = pool(self._final_fn(self.model, x), self.pooling)
            else:
                self.model(x)
        except _Stop:
            pass
        for t in self._hooked:
            if t not in self._captured:
                raise BackboneError(f"layer {t!r} did not run in the forward pass")
            out[t] = self._captured[t]
        self._captured = {}
        return {k: out[k].float().flatten(1) for k in self.taps}
