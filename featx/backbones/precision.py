"""Which layers stay in fp32 when a run uses reduced precision (bf16 / fp16 autocast).

Measured per layer on real EfficientNet-Lite0 weights and 100 BreastMNIST test images (worst
image's cosine similarity of bf16 features to fp32 ones; bench numbers in README, "Precision"):

    plain bf16                                   0.951
    stem conv in fp32                            0.969
    every depthwise conv in fp32 (no stem)       0.967
    stem + first depthwise conv                  0.993
    stem + depthwise convs at output stride <= 4 0.998   <- this policy (4 of 49 convs)
    stem + every depthwise conv (old policy)     0.998   (17 of 49 convs)

The error comes from the first layers, where the features still carry raw pixel detail: the stem
sees the normalised pixels and the early depthwise convs sum only k x k products of one channel
at high resolution, so bf16 rounding is not averaged away and every later layer inherits it. The
later depthwise convs (output stride 8 and beyond) add nothing measurable, so they now run in
bf16 with the pointwise and dense convolutions, which carry almost all the FLOPs. The policy is
recorded in every feature set's config (``precision_policy``).
"""
from __future__ import annotations

import torch
from torch import nn

POLICY = "fp32 stem and depthwise convs at output stride <= 4"

#: depthwise convolutions whose output is at most this many times smaller than the input image
#: stay in fp32
FP32_DEPTHWISE_MAX_STRIDE = 4


class FP32(nn.Module):
    """Runs the wrapped module in fp32 with autocast off."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.inner(x.float())


def keep_sensitive_layers_fp32(model: nn.Module) -> int:
    """Wrap the first convolution and the early depthwise convolutions (output stride <=
    FP32_DEPTHWISE_MAX_STRIDE, the output stride being the product of the strides of the
    convolutions met so far in module order) in FP32; returns how many."""
    targets = []
    first = True
    stride = 1
    for name, mod in model.named_modules():
        if isinstance(mod, FP32):
            return 0  # already applied
        if isinstance(mod, nn.Conv2d):
            stride *= mod.stride[0] if isinstance(mod.stride, tuple) else mod.stride
            depthwise = mod.groups > 1 and mod.groups == mod.in_channels
            if first or (depthwise and stride <= FP32_DEPTHWISE_MAX_STRIDE):
                targets.append(name)
            first = False
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FP32(getattr(parent, child)))
    return len(targets)
