"""Execution engines: where extraction and fitting run.

``local`` is featx's own pipeline (featx.extraction, featx.fit). ``ray`` (featx.engines.ray) runs the
same stages on a Ray cluster and writes the same cache and bundles; it needs ``pip install
'featx[ray]'``.
"""
from __future__ import annotations

from featx.errors import FeatxError

RAY_HINT = "pip install 'featx[ray]'"


class EngineUnavailableError(FeatxError):
    """An engine was asked for whose packages are not installed."""


def require_ray():
    """Import ray, or raise a one-line featx error saying how to install it."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise EngineUnavailableError(f"--engine ray needs Ray, which is not installed ({e.msg}); "
                                     f"run: {RAY_HINT}") from None
    return ray

