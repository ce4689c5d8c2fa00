"""Classical heads on top of cached features.

``elm`` holds the extreme learning machine estimators; ``wrappers`` the sklearn wrappers featx adds
(XGBoost, calibration, ELM with class weights); ``zoo`` the head registry (one :class:`HeadSpec` per
head) and the factories ``featx.fit`` uses. Imports are lazy so that reading the registry is cheap.
"""
from __future__ import annotations

__all__ = ["ELMClassifier", "ELMRegressor"]


def __getattr__(name):
    if name in __all__:
        from featx.heads import elm
        return getattr(elm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
