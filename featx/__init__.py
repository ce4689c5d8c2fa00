"""featx: frozen pretrained CNN and handcrafted features, cached in HDF5, with classical heads.

The public API::

    from featx import extract, load_features            # the extraction stage and its cache
    from featx import DeepFeatures, HOGFeatures, ...    # the same as scikit-learn transformers
    from featx import ELMClassifier, ELMRegressor       # extreme learning machines

Heavy modules (torch, timm) are imported only when used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from featx.errors import (  # noqa: F401
    BackboneError,
    CacheError,
    ConfigMismatchError,
    DecodeError,
    FeatxError,
    ModelError,
    SourceError,
    WeightsError,
)

_LAZY = {
    "extract": ("featx.extraction", "extract"),
    "ExtractConfig": ("featx.extraction", "ExtractConfig"),
    "load_features": ("featx.cache", "load_features"),
    "FeatureTable": ("featx.cache", "FeatureTable"),
    "DeepFeatures": ("featx.deep", "DeepFeatures"),
    "HOGFeatures": ("featx.handcrafted.estimators", "HOGFeatures"),
    "LBPFeatures": ("featx.handcrafted.estimators", "LBPFeatures"),
    "GLCMFeatures": ("featx.handcrafted.estimators", "GLCMFeatures"),
    "FirstOrderFeatures": ("featx.handcrafted.estimators", "FirstOrderFeatures"),
    "ELMClassifier": ("featx.heads.elm", "ELMClassifier"),
    "ELMRegressor": ("featx.heads.elm", "ELMRegressor"),
}

__all__ = sorted(list(_LAZY) + ["FeatxError", "SourceError", "DecodeError", "WeightsError", "BackboneError",
                                "CacheError", "ConfigMismatchError", "ModelError", "__version__"])


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'featx' has no attribute {name!r}")


def __dir__():
    return __all__
