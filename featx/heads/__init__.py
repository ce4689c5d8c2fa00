"""Classical heads on top of cached features.

``elm`` holds the extreme learning machine estimators; ``wrappers`` the sklearn wrappers featx adds
(XGBoost, calibration, ELM with class weights); ``zoo`` the head registry (:class:`HeadSpec` per head)
and the factories ``featx.fit`` uses.
"""
from __future__ import annotations

from featx.heads.elm import ELMClassifier, ELMRegressor

__all__ = ["ELMClassifier", "ELMRegressor"]
