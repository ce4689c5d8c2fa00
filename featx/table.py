"""The in-memory feature table: what ``featx.load_features`` returns and what ``featx.fit`` works on.

Every row operation returns a new table through :meth:`FeatureTable.take` (rows) or
:meth:`FeatureTable.select_sets` (columns), so no caller rebuilds one field by field.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from featx.errors import CacheError, FeatxError


@dataclass
class FeatureTable:
    """Rows computed in every requested set; unpacks as ``X, y, groups, ids``.

    Also the in-memory table of featx.fit (:meth:`from_arrays`)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    ids: np.ndarray
    splits: np.ndarray
    paths: np.ndarray
    class_names: list[str]
    set_slices: dict[str, slice]
    configs: dict[str, dict]
    source: str | None = None          # the cache it came from, for messages
    duplicate_of: np.ndarray | None = None

    def __iter__(self):
        return iter((self.X, self.y, self.groups, self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_arrays(cls, X, y, *, sets: dict[str, int] | None = None, groups=None, splits=None, ids=None,
                    paths=None, class_names=None, configs=None, source: str | None = None) -> "FeatureTable":
        """A table from arrays. ``sets`` maps set name -> number of columns, in column order
        (default: one set "features" with all columns); ``class_names`` default to "0", "1", ..."""
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        n, d = X.shape
        if y.shape != (n,):
            raise FeatxError(f"y has shape {y.shape}, expected ({n},)")
        sets = dict(sets or {"features": d})
        if sum(sets.values()) != d:
            raise FeatxError(f"sets cover {sum(sets.values())} columns but X has {d}")
        slices, start = {}, 0
        for name, width in sets.items():
            slices[name] = slice(start, start + int(width))
            start += int(width)

        def column(values, fill):
            return np.array([fill] * n if values is None else [("" if v is None else v) for v in values],
                            dtype=object)

        if class_names is None:
            class_names = [str(i) for i in range(int(y.max()) + 1)] if (y >= 0).any() else []
        return cls(X, y, column(groups, ""), column(ids if ids is not None else [str(i) for i in range(n)], ""),
                   column(splits, ""), column(paths, ""), [str(c) for c in class_names], slices,
                   {k: dict((configs or {}).get(k, {})) for k in sets}, source)

    # -- columns ---------------------------------------------------------------------------

    def select_sets(self, sets: Sequence[str], names: Sequence[str] | None = None) -> "FeatureTable":
        """The columns of ``sets`` (in that order) as a new table; ``names`` renames them (the
        model's names for sets the cache holds under others)."""
        missing = [s for s in sets if s not in self.set_slices]
        if missing:
            raise FeatxError(f"feature set(s) {', '.join(missing)} not in the table "
                             f"(has {', '.join(self.set_slices)})", path=self.source)
        names = list(sets) if names is None else list(names)
        blocks = [self.X[:, self.set_slices[s]] for s in sets]
        X = np.hstack(blocks) if blocks else np.zeros((len(self), 0), np.float32)
        slices, start = {}, 0
        for s, name in zip(sets, names):
            width = self.set_slices[s].stop - self.set_slices[s].start
            slices[name] = slice(start, start + width)
            start += width
        return replace(self, X=X, set_slices=slices,
                       configs={name: dict(self.configs.get(s, {})) for s, name in zip(sets, names)})

    def set_dims(self) -> dict[str, int]:
        """Columns per set."""
        return {name: int(sl.stop - sl.start) for name, sl in self.set_slices.items()}

    # -- rows ------------------------------------------------------------------------------

    def take(self, rows) -> "FeatureTable":
        """The rows ``rows`` (indices or a boolean mask), in that order, as a new table."""
        rows = np.asarray(rows)
        dup = None if self.duplicate_of is None else np.asarray(self.duplicate_of, dtype=object)[rows]
        return replace(self, X=np.asarray(self.X)[rows], y=np.asarray(self.y)[rows],
                       groups=np.asarray(self.groups, dtype=object)[rows],
                       ids=np.asarray(self.ids, dtype=object)[rows],
                       splits=np.asarray(self.splits, dtype=object)[rows],
                       paths=np.asarray(self.paths, dtype=object)[rows], duplicate_of=dup)

    def nonfinite_rows(self) -> tuple[np.ndarray, list[str]]:
        """Boolean mask of rows with a NaN/Inf feature, and one problem line per set that has some."""
        bad_any = np.zeros(len(self), bool)
        problems = []
        for name, sl in self.set_slices.items():
            bad = ~np.isfinite(self.X[:, sl]).all(axis=1)
            if bad.any():
                first = np.flatnonzero(bad)[0]
                problems.append(f"set '{name}' has {int(bad.sum())} of {bad.size} rows with NaN/Inf "
                                f"(first: {self.paths[first] or self.ids[first]})")
                bad_any |= bad
        return bad_any, problems

    def check_finite(self, drop: bool = False) -> tuple["FeatureTable", int]:
        """Raise CacheError (one line, naming each set and its row count) if any feature is NaN or
        Inf; with ``drop=True`` return the table without those rows instead, and the number dropped."""
        bad, problems = self.nonfinite_rows()
        if not problems:
            return self, 0
        if not drop:
            raise CacheError("; ".join(problems) + "; featx never stores such rows as computed, so the features were edited or made "
                             "outside featx (`featx check CACHE` lists them); pass --drop-nonfinite to leave them out",
                             path=self.source)
        return self.take(~bad), int(bad.sum())

    def effective_groups(self) -> np.ndarray:
        """The groups, with byte-identical copies (``duplicate_of``) kept together: a copy without
        a group takes its cluster's group, or all copies of an ungrouped image share the group
        ``dup:<id>``, so copies never land on both sides of a split or fold."""
        groups = np.array(["" if g is None else str(g) for g in self.groups], dtype=object)
        if self.duplicate_of is None:
            return groups
        orig = np.array([str(d) if d else str(i) for d, i in zip(self.duplicate_of, self.ids)], dtype=object)
        keys, counts = np.unique(orig, return_counts=True)
        shared = set(keys[counts > 1])
        if not shared:
            return groups
        first_group: dict[str, str] = {}
        for o, g in zip(orig, groups):
            if o in shared and g and o not in first_group:
                first_group[o] = g
        for k in range(groups.size):
            if not groups[k] and orig[k] in shared:
                groups[k] = first_group.get(orig[k], "dup:" + orig[k])
        return groups

    def label_names(self) -> list[str]:
        """Each row's class name from the table's own class list ("" where unknown)."""
        names = self.class_names
        return [names[v] if 0 <= v < len(names) else "" for v in np.asarray(self.y)]
