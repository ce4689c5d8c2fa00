"""Classical heads on top of cached features.

``elm`` holds the extreme learning machine estimators. (Head factories and default search grids
are planned for ``zoo``, beside it.)
"""
from __future__ import annotations

from featx.heads.elm import ELMClassifier, ELMRegressor

__all__ = ["ELMClassifier", "ELMRegressor"]
