"""Backbones: pretrained networks by name, their weights, preprocessing, taps and precision policy.

    >>> from featx.backbones import build, prepare_model, resolve, check_backbone
    >>> bb = build("timm/test_efficientnet", weights="none")          # doctest: +SKIP

Modules: ``registry`` (names -> built networks), ``weights`` (weight files and packages),
``preprocess`` (the weights' own resize/crop/normalisation), ``taps`` (where features are taken
and how they are pooled), ``precision`` (which layers stay fp32 under bf16/fp16) and ``inference``
(a network ready to run, one batch through it). Names are imported lazily: importing this package
does not import torch.
"""
from __future__ import annotations

import importlib

#: how a feature map or a transformer's tokens become a vector (featx.backbones.taps.pool):
#: avg/max/gem over a CNN map's positions; cls (the class token), avg (the patch tokens' mean) or
#: cls+avg (both, concatenated) over a transformer's tokens
POOLINGS = ("avg", "max", "gem", "cls", "cls+avg")

_LAZY = {
    "ALIASES": "featx.backbones.registry",
    "DEFAULT_BACKBONE": "featx.backbones.registry",
    "Backbone": "featx.backbones.registry",
    "BackboneSpec": "featx.backbones.registry",
    "build": "featx.backbones.registry",
    "BackboneInfo": "featx.backbones.catalogue",
    "LayerInfo": "featx.backbones.catalogue",
    "list_backbones": "featx.backbones.catalogue",
    "list_layers": "featx.backbones.catalogue",
    "check_backbone": "featx.backbones.registry",
    "layer_names": "featx.backbones.registry",
    "resolve": "featx.backbones.registry",
    "suggest_backbones": "featx.backbones.registry",
    "PreparedModel": "featx.backbones.inference",
    "prepare_model": "featx.backbones.inference",
    "run_model": "featx.backbones.inference",
    "PreprocessConfig": "featx.backbones.preprocess",
    "FeatureModel": "featx.backbones.taps",
    "POLICY": "featx.backbones.precision",
    "keep_sensitive_layers_fp32": "featx.backbones.precision",
    "WeightsInfo": "featx.backbones.weights",
    "package_weights_path": "featx.backbones.weights",
    "read_state_dict": "featx.backbones.weights",
}

__all__ = sorted([*_LAZY, "POOLINGS"])


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featx.backbones' has no attribute {name!r}")


def __dir__():
    return __all__
