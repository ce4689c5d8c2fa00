"""featx: frozen pretrained CNN and handcrafted features, cached in HDF5, with classical heads."""
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
