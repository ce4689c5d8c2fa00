"""Reading a cache (layout 1 or 2: both present /samples and /features as (n,) and (n, d) datasets)."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from featx.cache.base import decoded_strs, open_read, reading
from featx.check import nonfinite_rows
from featx.errors import CacheError
from featx.table import FeatureTable


@dataclass
class CacheState:
    """What a cache holds, without the feature values."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)   # class names, "" = unknown
    groups: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    sets: dict[str, dict] = field(default_factory=dict)          # name -> config
    done: dict[str, set[str]] = field(default_factory=dict)      # name -> ids computed
    requests: dict[str, str] = field(default_factory=dict)       # request key -> set name
    failures: list[tuple[str, str, str]] = field(default_factory=list)


def read_state(path: str | Path) -> CacheState:
    """The cache's samples, sets, configs and which rows are done (empty state if no file).

    A row whose features hold NaN or infinity is not done, so the next extraction recomputes it."""
    path = Path(path)
    st = CacheState()
    if not os.path.lexists(path):
        return st
    with open_read(path) as f, reading(path):
        layout = int(np.asarray(f.attrs["featx_layout_version"]).item())
        if "samples" in f:
            st.ids = list(decoded_strs(f["samples/id"]))
            st.paths = list(decoded_strs(f["samples/path"]))
            st.class_names = json.loads(f["samples/label"].attrs.get("class_names", "[]"))
            st.labels = [st.class_names[k] if k >= 0 else "" for k in f["samples/label"][()]]
            st.groups = list(decoded_strs(f["samples/group"]))
            st.splits = list(decoded_strs(f["samples/split"]))
        for name, cfg, ok in _iter_sets(f):
            st.sets[name] = cfg
            ok = ok.astype(bool)
            if layout < 2:  # layout 2 stores a row holding NaN or infinity as not computed
                ok &= ~nonfinite_rows(f["features"][name], ok)
            st.done[name] = {i for i, o in zip(st.ids, ok) if o}
            for key in json.loads(f["features"][name].attrs.get("requests", "[]")):
                st.requests[key] = name
        if "failures" in f:
            st.failures = list(zip(decoded_strs(f["failures/path"]), decoded_strs(f["failures/reason"]),
                                   decoded_strs(f["failures/stage"])))
    return st


def _iter_sets(f):
    if "features" not in f:
        return
    for name in f["features"]:
        if name.endswith("_ok"):
            continue
        ds = f["features"][name]
        yield name, json.loads(ds.attrs["config"]), f["features"][name + "_ok"][()]


def list_sets(path: str | Path) -> dict[str, dict]:
    """Feature-set names and their configs."""
    with open_read(path) as f, reading(path):
        return {name: cfg for name, cfg, _ in _iter_sets(f)}


def parse_sets(sets: str | Sequence[str]) -> list[str]:
    if isinstance(sets, str):
        sets = sets.replace("+", ",").split(",")
    return [s.strip() for s in sets if s and s.strip()]


def load_features(cache: str | Path, sets: str | Sequence[str]) -> FeatureTable:
    """Features of one or more sets, concatenated in the order given, with labels and groups.

    Only rows computed in every requested set are returned. ``sets`` is a list of names or a
    string ``"a,b"`` / ``"a+b"``.
    """
    names = parse_sets(sets)
    if not names:
        raise CacheError("no feature set named", cache)
    with open_read(cache) as f, reading(cache):
        available = [n for n in f.get("features", {}) if not n.endswith("_ok")]
        for n in names:
            if n not in available:
                raise CacheError(f"no feature set {n!r} (available: {', '.join(available) or 'none'})", cache)
        ok = np.ones(f["samples/id"].shape[0], dtype=bool)
        for n in names:
            ok &= f["features"][n + "_ok"][()].astype(bool)
        rows = np.flatnonzero(ok)
        blocks, slices, configs, start = [], {}, {}, 0
        for n in names:
            ds = f["features"][n]
            block = ds[()][rows] if len(rows) > ds.shape[0] // 2 else ds[rows] if len(rows) else np.zeros((0, ds.shape[1]), np.float32)
            blocks.append(np.asarray(block, dtype=np.float32))
            slices[n] = slice(start, start + ds.shape[1])
            start += ds.shape[1]
            configs[n] = json.loads(ds.attrs["config"])
        label = f["samples/label"]
        return FeatureTable(
            X=np.hstack(blocks) if blocks else np.zeros((len(rows), 0), np.float32),
            y=label[()][rows].astype(np.int64),
            groups=decoded_strs(f["samples/group"])[rows],
            ids=decoded_strs(f["samples/id"])[rows],
            splits=decoded_strs(f["samples/split"])[rows],
            paths=decoded_strs(f["samples/path"])[rows],
            class_names=json.loads(label.attrs.get("class_names", "[]")),
            set_slices=slices, configs=configs, source=str(cache),
            duplicate_of=decoded_strs(f["samples/duplicate_of"])[rows] if "samples/duplicate_of" in f else None,
        )


def read_memo(cache: str | Path) -> dict[str, tuple]:
    """The scan memo a cache keeps: resolved source file -> (size, mtime_ns, ctime_ns, inode,
    content id, reader, frames, header group) -- see featx.sources.base.memo_samples.

    Read column by column from the samples shards of a layout-2 cache (a layout-1 cache has none:
    {}). The content id is the file's sha256 (a sample id without its ``#<index>`` / ``~<k>``
    suffix). A cache that cannot be read gives {}: the scan then hashes every file, as without a memo."""
    import h5py
    from featx.check import shard_folder
    cache = Path(cache)
    memo: dict[str, tuple] = {}
    if not os.path.lexists(cache):
        return memo
    try:
        with open_read(cache) as f:
            if "shards" not in f:
                return memo
            folder = shard_folder(f)
            names = [str(n) for n, w in zip(decoded_strs(f["shards/file"]), decoded_strs(f["shards/what"])) if w == ""]
        for name in names:
            with h5py.File(folder / name, "r") as s:
                _add_memo_rows(s, memo)
    except (CacheError, OSError, KeyError, ValueError):
        return {}
    return memo


_SUFFIX = re.compile("[#~]")


def _add_memo_rows(shard, memo: dict) -> None:
    """Add a samples shard's memo entries: one per file (the rows of one npz or multi-frame DICOM
    are consecutive and share it, so only the first of each run is read into Python objects)."""
    files = shard["file"].asstr()[()]
    stats = shard["file_stat"][()].reshape(-1, 4)
    keep = (stats[:, 0] >= 0) & (files != "")
    keep[1:] &= files[1:] != files[:-1]
    rows = np.flatnonzero(keep)
    if not len(rows):
        return
    few = len(rows) < len(files) // 8   # an npz's rows: read just the first of each file's run

    def column(key, default, text=True):
        if key not in shard:   # the reader, frames and group columns are absent in older shards
            return [default] * len(rows)
        ds = shard[key].asstr() if text else shard[key]
        return ds[rows] if few else ds[()][rows]
    ids, readers, groups = column("id", ""), column("file_reader", ""), column("file_group", "")
    frames = [int(v) for v in column("file_frames", 1, text=False)]
    for k, (r, st) in enumerate(zip(rows.tolist(), stats[rows].tolist())):
        sid = ids[k]
        if "#" in sid or "~" in sid:
            sid = _SUFFIX.split(sid, maxsplit=1)[0]
        memo[files[r]] = (*st, sid, readers[k], frames[k], groups[k])
