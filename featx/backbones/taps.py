"""Where features are taken from a network (taps) and how each is pooled to a vector.

The default tap, ``head``, is the network's own penultimate pooled vector (timm's pre-logits,
torchvision's input to the last Linear). Other taps are named modules (``layer3``,
``blocks.4``, or for timm a stage index from ``feature_info``), captured with forward hooks and
pooled with avg, max or GeM; when only early taps are asked for, the forward pass stops once the
last of them has run.

Transformers (timm models with ``num_prefix_tokens``: ViT, DeiT, EVA, ...; and Swin-style models
whose maps are channels-last) take their stage taps through timm's ``forward_intermediates``.
A token model's taps are pooled over its tokens: ``cls`` (the class token), ``avg`` (the mean of
the patch tokens, leaving out the class token and registers, timm's ``num_prefix_tokens``) or
``cls+avg`` (both, concatenated); its ``head`` pools the final normed tokens the same way.
"""
from __future__ import annotations

import torch
from torch import nn

from featx.backbones import POOLINGS
from featx.errors import BackboneError

GEM_P = 3.0
GEM_EPS = 1e-6
#: poolings of CNN feature maps
CNN_POOLINGS = ("avg", "max", "gem")


def token_poolings(model) -> tuple[str, ...] | None:
    """The poolings a transformer with prefix tokens accepts, or None for a model of feature maps."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if prefix is None:
        return None
    has_cls = int(prefix) > 0 and getattr(model, "cls_token", None) is not None
    return ("cls", "avg", "cls+avg") if has_cls else ("avg",)


def pooling_error(model, pooling: str, name: str) -> str | None:
    """Why ``pooling`` does not apply to ``model`` (one line), or None when it does."""
    if pooling not in POOLINGS:
        return f"unknown pooling {pooling!r} ({', '.join(POOLINGS)})"
    tokens = token_poolings(model)
    if tokens is None and pooling not in CNN_POOLINGS:
        return (f"pooling {pooling!r} needs a transformer with a class token; {name!r} gives feature maps "
                f"(use {', '.join(CNN_POOLINGS)})")
    if tokens is not None and pooling not in tokens:
        return f"pooling {pooling!r} does not apply to the tokens of {name!r} (use {', '.join(tokens)})"
    return None


def pool(t: torch.Tensor, how: str, prefix_tokens: int | None = None) -> torch.Tensor:
    """(B, C, H, W) maps or (B, N, C) tokens -> (B, C) vectors; (B, C) passes through.

    ``prefix_tokens`` (a token model's class token and registers, first in the sequence) are left
    out of ``avg`` and give ``cls``; None keeps every token (models of maps)."""
    if t.ndim == 2:
        return t
    if how in ("cls", "cls+avg"):
        if t.ndim != 3 or not prefix_tokens:
            raise BackboneError(f"cannot take a class token from a tensor of shape {tuple(t.shape)}")
        if how == "cls":
            return t[:, 0]
        return torch.cat([t[:, 0], t[:, prefix_tokens:].mean(dim=1)], dim=1)
    if t.ndim == 3:  # tokens of a transformer: pool over the token axis
        if prefix_tokens:
            t = t[:, prefix_tokens:]
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
    raise BackboneError(f"unknown pooling {how!r} ({', '.join(POOLINGS)})")


def pool_module_output(model, output, how: str) -> torch.Tensor:
    """A hooked module's output (its first element if a tuple) pooled as ``model`` lays out its
    tensors: channels-last maps (Swin) permuted, a token model's prefix tokens known."""
    t = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(t, torch.Tensor):
        raise BackboneError(f"a module output of type {type(t).__name__} is not a tensor")
    if getattr(model, "output_fmt", "NCHW") == "NHWC" and t.ndim == 4:
        t = t.permute(0, 3, 1, 2)
    return pool(t, how, getattr(model, "num_prefix_tokens", None))


class _Stop(Exception):
    pass


def intermediate_taps(model) -> dict[str, int]:
    """Tap name -> ``forward_intermediates`` index for transformers (token models and models of
    channels-last maps such as Swin); empty for other models (their taps are hooked)."""
    channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
    if not hasattr(model, "forward_intermediates") or (token_poolings(model) is None and not channels_last):
        return {}
    info = getattr(model, "feature_info", None) or []
    try:
        return {f["module"]: i for i, f in enumerate(info)}
    except (TypeError, KeyError):
        return {}


class FeatureModel(nn.Module):
    """Runs a frozen backbone and returns ``{tap: (B, D) float tensor}``.

    ``head_fn(model, x)`` computes the default tap; ``final_fn(model, x)`` the last feature map
    (used for ``head`` with max/GeM pooling, and for a token model's ``head``); ``taps`` are
    module names, hooked or (transformer stages) taken from ``forward_intermediates``.
    """

    def __init__(self, model: nn.Module, taps: list[str], pooling: str, head_fn, final_fn):
        super().__init__()
        self.model = model
        self.taps = list(taps)
        self.pooling = pooling
        self._head_fn = head_fn
        self._final_fn = final_fn
        self._prefix = getattr(model, "num_prefix_tokens", None)
        stage_index = intermediate_taps(model)
        self._intermediate = {t: stage_index[t] for t in self.taps if t in stage_index}
        modules = dict(model.named_modules())
        self._hooked = [t for t in self.taps if t != "head" and t not in self._intermediate]
        for t in self._hooked:
            if t not in modules:
                raise BackboneError(f"no layer named {t!r} in this backbone")
        self._captured: dict[str, torch.Tensor] = {}
        self._running = False
        self._handles = [modules[t].register_forward_hook(self._make_hook(t)) for t in self._hooked]

    def with_taps(self, taps: list[str], pooling: str) -> "FeatureModel":
        """The same network with other taps and pooling (its own hooks; see remove_hooks)."""
        return FeatureModel(self.model, taps, pooling, self._head_fn, self._final_fn)

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        return pool_module_output(self.model, t, self.pooling)

    def _make_hook(self, name: str):
        def hook(_module, _inputs, output):
            if not self._running:  # another FeatureModel on the same network (with_taps) is running
                return
            self._captured[name] = self._pool(output)
            if "head" not in self.taps and not self._intermediate and len(self._captured) == len(self._hooked):
                raise _Stop()
        return hook

    def _run_intermediates(self, x: torch.Tensor, out: dict) -> torch.Tensor | None:
        """Stage taps through timm's forward_intermediates; returns the final tokens/map when the
        head is wanted too (one pass for both)."""
        indices = sorted(set(self._intermediate.values()))
        with_prefix = bool(self._prefix)
        kw = {"return_prefix_tokens": True, "output_fmt": "NLC"} if with_prefix else {"output_fmt": "NCHW"}
        full = "head" in self.taps or bool(self._hooked)  # the whole pass (hooked modules run in it)
        res = self.model.forward_intermediates(x, indices=indices, norm=False, stop_early=not full,
                                               intermediates_only=not full, **kw)
        final, inter = (res if full else (None, res))
        by_index = {}
        for i, t in zip(indices, inter):
            if with_prefix:
                spatial, prefix = t
                t = torch.cat([prefix, spatial], dim=1)
                by_index[i] = pool(t, self.pooling, self._prefix)
            else:
                by_index[i] = pool(t, self.pooling)
        for tap, i in self._intermediate.items():
            out[tap] = by_index[i]
        return final

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        out: dict[str, torch.Tensor] = {}
        self._running = True
        try:
            final = self._run_intermediates(x, out) if self._intermediate else None
            if "head" in self.taps:
                if self._prefix is not None:  # a token model: its normed final tokens, pooled
                    out["head"] = pool(final if final is not None else self._final_fn(self.model, x),
                                       self.pooling, self._prefix)
                elif self.pooling == "avg":
                    out["head"] = self._head_fn(self.model, x)
                else:
                    out["head"] = self._pool(final if final is not None else self._final_fn(self.model, x))
            elif self._hooked and not self._intermediate:
                self.model(x)
        except _Stop:
            pass
        finally:
            self._running = False
        for t in self._hooked:
            if t not in self._captured:
                raise BackboneError(f"layer {t!r} did not run in the forward pass")
            out[t] = self._captured[t]
        self._captured = {}
        return {k: out[k].float().flatten(1) for k in self.taps}
