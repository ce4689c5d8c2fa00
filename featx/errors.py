"""featx's exception types.

Library code raises these with the offending file and the reason in the message; the CLI turns
them into one line on stderr and an exit code. Nothing in featx raises a bare Exception for bad
input.
"""
from __future__ import annotations


class FeatxError(Exception):
    """Base class of every error featx raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, path: object | None = None):
        self.path = None if path is None else str(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class SourceError(FeatxError):
    """An input (folder, manifest, npz, DICOM, image) cannot be read or makes no sense."""


class DecodeError(SourceError):
    """One image could not be decoded; extraction records it in /failures and goes on."""


class WeightsError(FeatxError):
    """Pretrained weights are missing, unreadable or do not fit the backbone."""


class BackboneError(FeatxError):
    """An unknown backbone name, layer or pooling."""


class CacheError(FeatxError):
    """The HDF5 cache is unreadable, of an unknown layout version, locked, or inconsistent."""


class CacheLockedError(CacheError):
    """Another process holds the cache's lock."""


class ConfigMismatchError(FeatxError):
    """Features were made with a different extractor config than a model expects."""


class ModelError(FeatxError):
    """A model bundle is missing, untrusted, or does not fit the data."""
