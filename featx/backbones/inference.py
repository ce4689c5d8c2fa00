"""A backbone ready to run (built, precision policy, device, memory format) and one batch through it.

:func:`prepare_model` is what every caller of a network uses: local extraction, the Ray model
actors (featx.engines.ray) and the scikit-learn transformer (featx.deep.DeepFeatures), so the
three run the same model the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PreparedModel:
    backbone: object          # featx.backbones.registry.Backbone (name, preprocessing, weights, taps)
    model: object             # its FeatureModel on the runtime's device
    runtime: object           # featx.runtime.Runtime


def prepare_model(name: str, runtime, weights=None, layers=None, pooling: str = "avg") -> PreparedModel:
    """Build backbone ``name`` (see featx.backbones.registry.build), keep its precision-sensitive
    layers in fp32 when ``runtime`` runs reduced precision, move it to the runtime's device, in
    channels_last memory format where that pays."""
    import torch

    from featx.backbones.precision import keep_sensitive_layers_fp32
    from featx.backbones.registry import build
    layers = [layers] if isinstance(layers, str) else list(layers or ())
    bb = build(name, weights=weights, layers=layers or None, pooling=pooling)
    if runtime.precision != "fp32":
        keep_sensitive_layers_fp32(bb.model.model)
    model = bb.model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return PreparedModel(bb, model, runtime)


def run_model(model, x, runtime) -> dict[str, np.ndarray]:
    """One batch through a FeatureModel on the run's device and precision -> float32 numpy per tap."""
    import torch
    x = x.to(runtime.device, non_blocking=True)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        if runtime.autocast_dtype is not None:
            with torch.autocast(device_type=runtime.device_type, dtype=runtime.autocast_dtype):
                feats = model(x)
        else:
            feats = model(x)
    return {k: v.float().cpu().numpy() for k, v in feats.items()}
