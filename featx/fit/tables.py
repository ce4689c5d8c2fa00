"""Feature tables for fitting: parsing set names, loading a table from a cache or a table,
and the checks every fit and compare makes on it."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from featx.errors import FeatxError
from featx.table import FeatureTable

#: the smallest class under this share of the labelled rows earns a note about imbalance
IMBALANCE_SHARE = 0.10


def table_from_arrays(X, y, *, sets: dict[str, int] | None = None, groups=None, splits=None,
                      ids=None, paths=None, class_names=None, configs=None) -> FeatureTable:
    """A :class:`~featx.table.FeatureTable` from arrays. ``sets`` maps set name -> number of
    columns, in column order (default: one set "features" with all columns)."""
    return FeatureTable.from_arrays(X, y, sets=sets, groups=groups, splits=splits, ids=ids, paths=paths,
                                    class_names=class_names, configs=configs)


def parse_sets(features: str | Sequence[str]) -> list[str]:
    """ "a,b" or ["a", "b"] or "a+b" -> ["a", "b"] (the sets fused into one model)."""
    if isinstance(features, str):
        parts = features.replace("+", ",").split(",")
    else:
        parts = [p for f in features for p in str(f).replace("+", ",").split(",")]
    sets = [p.strip() for p in parts if p.strip()]
    if not sets:
        raise FeatxError("no feature set given")
    if len(set(sets)) != len(sets):
        raise FeatxError(f"feature set listed twice in {','.join(sets)}")
    return sets


def parse_choices(features: str | Sequence) -> list[list[str]]:
    """Compare's choices: "A,B,A+B" -> [["A"], ["B"], ["A", "B"]]."""
    items = features.split(",") if isinstance(features, str) else list(features)
    out = []
    for item in items:
        sets = parse_sets(item) if isinstance(item, str) else parse_sets(list(item))
        if sets not in out:
            out.append(sets)
    if not out:
        raise FeatxError("no feature set given")
    return out


def load_table(cache, sets: Sequence[str]) -> FeatureTable:
    """The columns of ``sets`` from a cache path or an in-memory table; ``source`` names the
    cache (for messages and the bundle's training record)."""
    if isinstance(cache, (str, os.PathLike)):
        from featx.cache import load_features

        table = load_features(str(cache), list(sets))
        table.source = str(cache)
        return table
    return cache.select_sets(list(sets))


def subset_table(table: FeatureTable, sets: Sequence[str]) -> FeatureTable:
    """The columns of ``sets`` (in that order) of a loaded table."""
    return table.select_sets(list(sets))


def effective_groups(table: FeatureTable) -> np.ndarray:
    """:meth:`FeatureTable.effective_groups`: groups with byte-identical copies kept together."""
    return table.effective_groups()


def check_finite(table: FeatureTable, drop: bool = False) -> tuple[FeatureTable, int]:
    """:meth:`FeatureTable.check_finite`: raise on NaN/Inf features, or drop those rows."""
    return table.check_finite(drop)


def imbalance_note(y: np.ndarray, class_names: Sequence[str]) -> str | None:
    """A note when the smallest class is under :data:`IMBALANCE_SHARE` of the labelled rows."""
    y = np.asarray(y)
    labelled = y[y >= 0]
    if labelled.size == 0:
        return None
    classes, counts = np.unique(labelled, return_counts=True)
    k = int(np.argmin(counts))
    share = counts[k] / labelled.size
    if share >= IMBALANCE_SHARE:
        return None
    name = class_names[classes[k]] if 0 <= classes[k] < len(class_names) else str(classes[k])
    return (f"class '{name}' is {share:.1%} of the labelled rows ({int(counts[k])} of {labelled.size}); "
            "consider --class-weight balanced --scoring balanced_accuracy")
