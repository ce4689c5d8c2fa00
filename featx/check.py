"""Consistency checks of a featx cache's structure (layout versions 1 and 2, see featx.cache).

``structure_problems(f)`` is what featx.cache runs every time it opens a cache: each problem is
one line saying what is wrong (an ``_ok`` mask of the wrong length, a config that is not JSON, a
label beyond the class names, ...), so a damaged cache is one CacheError line, not a traceback
deep inside a run. ``check_cache(path)`` lists every problem of a file, including feature rows
whose stored chunks can no longer be read (bit flips), rows holding NaN or infinity and, in
layout 2, shard files that are missing or do not open; an empty list means the cache is healthy. ``featx check CACHE`` prints them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LAYOUT_VERSION = 2
SAMPLE_FIELDS = ("id", "path", "label", "group", "split")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _json(value, expect: type):
    """Decoded JSON of an attribute, or None if it is not JSON of the expected type."""
    try:
        out = json.loads(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return out if isinstance(out, expect) else None


def version_problem(f) -> str | None:
    """Why the file's featx_layout_version makes it unreadable here, or None."""
    version = f.attrs.get("featx_layout_version")
    if version is None:
        return "not a featx cache (no featx_layout_version attribute)"
    try:
        v = int(np.asarray(version).item())
        if v != np.asarray(version).item():
            raise ValueError
    except (TypeError, ValueError):
        return f"featx_layout_version is {version!r}, not a layout version number"
    if v > LAYOUT_VERSION:
        return f"cache layout version {v} is newer than this featx reads ({LAYOUT_VERSION}); upgrade featx"
    if v < 1:
        return f"featx_layout_version is {v}; layout versions start at 1"
    return None


def _dataset(f, name: str):
    import h5py
    obj = f.get(name)
    return obj if isinstance(obj, h5py.Dataset) else None


def _samples_problems(f, labels: bool = True) -> tuple[list[str], int | None]:
    import h5py
    out: list[str] = []
    if "samples" not in f:
        return out, None
    if not isinstance(f["samples"], h5py.Group):
        return ["/samples is not a group"], None
    n = None
    for key in SAMPLE_FIELDS:
        ds = _dataset(f, f"samples/{key}")
        if ds is None:
            out.append(f"/samples/{key} is missing" if key not in f["samples"] else f"/samples/{key} is not a dataset")
        elif ds.ndim != 1:
            out.append(f"/samples/{key} has shape {ds.shape}; expected one value per sample")
        elif n is None:
            n = ds.shape[0]
        elif ds.shape[0] != n:
            out.append(f"/samples/{key} has {ds.shape[0]} rows but /samples/id has {n}")
    dup = f["samples"].get("duplicate_of")
    if dup is not None and n is not None and (not isinstance(dup, h5py.Dataset) or dup.shape != (n,)):
        out.append(f"/samples/duplicate_of does not have one value per sample ({n})")
    label = _dataset(f, "samples/label")
    if label is not None and label.ndim == 1:
        names = _json(label.attrs.get("class_names", "[]"), list)
        if names is None or not all(isinstance(c, str) for c in names):
            out.append("/samples/label attribute class_names is not a JSON list of names")
        elif not np.issubdtype(label.dtype, np.integer):
            out.append(f"/samples/label has dtype {label.dtype}; expected integers")
        elif labels:
            values = label[()]
            bad = (values < -1) | (values >= len(names))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                out.append(f"/samples/label row {i} is {int(values[i])} but there are {len(names)} class names "
                           f"({int(bad.sum())} rows out of range)")
    return out, n


def _features_problems(f, n: int | None) -> list[str]:
    import h5py
    out: list[str] = []
    if "features" not in f:
        return out
    if not isinstance(f["features"], h5py.Group):
        return ["/features is not a group"]
    if n is None:
        return ["/features exists but /samples does not"] if len(f["features"]) else []
    names = list(f["features"])
    for name in names:
        where = f"/features/{name}"
        if name.endswith("_ok"):
            if name[:-3] not in f["features"]:
                out.append(f"{where} has no feature set {name[:-3]!r}")
            continue
        ds = f["features"][name]
        if not isinstance(ds, h5py.Dataset):
            out.append(f"{where} is not a dataset")
            continue
        if ds.ndim != 2 or not np.issubdtype(ds.dtype, np.floating):
            out.append(f"{where} has shape {ds.shape} and dtype {ds.dtype}; expected float rows")
        elif ds.shape[0] != n:
            out.append(f"{where} has {ds.shape[0]} rows but there are {n} samples")
        if _json(ds.attrs.get("config"), dict) is None:
            out.append(f"{where} attribute config is missing or not a JSON object")
        if "requests" in ds.attrs and _json(ds.attrs["requests"], list) is None:
            out.append(f"{where} attribute requests is not a JSON list")
        ok = f["features"].get(name + "_ok")
        if ok is None:
            out.append(f"{where}_ok (which rows are computed) is missing")
        elif not isinstance(ok, h5py.Dataset) or ok.ndim != 1:
            out.append(f"{where}_ok is not a one-dimensional dataset")
        elif ok.shape[0] != n:
            out.append(f"{where}_ok has {ok.shape[0]} rows but there are {n} samples")
    return out


def _failures_problems(f) -> list[str]:
    import h5py
    if "failures" not in f:
        return []
    if not isinstance(f["failures"], h5py.Group):
        return ["/failures is not a group"]
    lengths = {}
    for key in ("path", "reason", "stage"):
        ds = _dataset(f, f"failures/{key}")
        if ds is None or ds.ndim != 1:
            return [f"/failures/{key} is missing or not a list"]
        lengths[key] = ds.shape[0]
    if len(set(lengths.values())) > 1:
        return [f"/failures datasets have different lengths ({lengths})"]
    return []


def shard_folder(f) -> Path:
    """The folder holding a layout-2 cache's shards (named by the index, beside it)."""
    path = Path(f.filename)
    name = f.attrs.get("shards_dir", "") or path.name + ".shards"
    return path.parent / (name.decode() if isinstance(name, bytes) else str(name))


def _shards_problems(f) -> list[str]:
    """Layout 2: the block and shard tables agree, and every shard they name is a file."""
    import h5py
    for key in ("blocks/start", "blocks/stop", "shards/block", "shards/what", "shards/file"):
        if not isinstance(f.get(key), h5py.Dataset) or f[key].ndim != 1:
            return [f"/{key} is missing or not a list (layout 2 index)"]
    starts, stops = f["blocks/start"][()], f["blocks/stop"][()]
    if len(starts) != len(stops) or (len(starts) and (starts[0] != 0 or (stops <= starts).any()
                                                      or (starts[1:] != stops[:-1]).any())):
        return ["/blocks do not tile the rows (each block must start where the previous one stops)"]
    n = int(stops[-1]) if len(stops) else 0
    if "samples/id" in f and f["samples/id"].shape[0] != n:
        return [f"/samples has {f['samples/id'].shape[0]} rows but /blocks cover {n}"]
    blocks, files = f["shards/block"][()], f["shards/file"][()]
    whats = f["shards/what"][()]
    if not (len(blocks) == len(files) == len(whats)):
        return ["/shards datasets have different lengths"]
    if len(blocks) and ((blocks < 0) | (blocks >= len(starts))).any():
        return ["/shards/block names a block that does not exist"]
    have_samples = {int(b) for b, w in zip(blocks, whats) if (w.decode() if isinstance(w, bytes) else w) == ""}
    if have_samples != set(range(len(starts))):
        return ["a block has no samples shard in /shards"]
    folder, out = shard_folder(f), []
    for name in files:
        name = name.decode() if isinstance(name, bytes) else str(name)
        if "/" in name or name in ("", ".", ".."):
            out.append(f"/shards/file names {name!r}, not a file in the shards folder")
        elif not (folder / name).is_file():
            out.append(f"shard {folder.name}/{name} is missing (a layout-2 cache is CACHE.h5 plus its "
                       f"{folder.name}/ folder: copy or move both, or use featx.cache.copy_cache)")
    return out


def structure_problems(f, labels: bool = True) -> list[str]:
    """Every structural problem of an open cache (h5py.File), one line each; [] if consistent.

    Reads attributes, shapes and (unless ``labels`` is False) the labels, never the feature values.
    A commit skips the labels: they are the only part whose check reads every row, and a commit
    writes labels only as indices of the class names it writes with them."""
    problem = version_problem(f)
    if problem:
        return [problem]
    if int(np.asarray(f.attrs["featx_layout_version"]).item()) >= 2:
        problems = _shards_problems(f)
        if problems:
            return problems
    out, n = _samples_problems(f, labels)
    out += _features_problems(f, n)
    out += _failures_problems(f)
    return out


def nonfinite_rows(ds, rows: np.ndarray | None = None, block_bytes: int = 64 << 20) -> np.ndarray:
    """Boolean [n]: which rows of a 2-D feature dataset hold NaN or infinity, read block by block."""
    n, d = ds.shape
    bad = np.zeros(n, dtype=bool)
    step = max(1, block_bytes // max(1, 4 * d))
    for a in range(0, n, step):
        if rows is not None and not rows[a:a + step].any():
            continue
        bad[a:a + step] = ~np.isfinite(ds[a:a + step]).all(axis=1)
    return bad


def _shard_file_problems(f) -> list[str]:
    """Layout 2: every shard file opens and every value in it reads."""
    import h5py
    if "shards" not in f:
        return []
    out, folder = [], shard_folder(f)
    for name in f["shards/file"][()]:
        name = name.decode() if isinstance(name, bytes) else str(name)
        try:
            with h5py.File(folder / name, "r") as s:
                for key in s:
                    s[key][()] if s[key].ndim < 2 else nonfinite_rows(s[key])
        except Exception as e:
            out.append(f"shard {folder.name}/{name} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
    return out


def check_cache(path: str | Path) -> list[str]:
    """Every problem of the cache at ``path``, one line each (empty list: healthy).

    Beyond :func:`structure_problems` it reads every stored value, so damaged chunks and feature
    rows holding NaN or infinity are found too."""
    import h5py
    path = Path(path)
    from featx.safeio import not_regular_reason
    reason = not_regular_reason(path)
    if reason:
        return [f"cache {reason}"]
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != HDF5_SIGNATURE:
                return ["not an HDF5 file (its first bytes are not the HDF5 signature)"]
        f = h5py.File(path, "r")
    except OSError as e:
        return [f"not a readable HDF5 file ({' '.join(str(e).split())})"]
    problems: list[str] = []
    with f:
        try:
            problems = structure_problems(f)
        except Exception as e:  # a damaged object header
            return [f"cannot read the cache's structure ({type(e).__name__}: {' '.join(str(e).split())})"]
        if problems and problems[0].startswith(("not a featx", "cache layout", "featx_layout")):
            return problems
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                try:
                    obj[()] if obj.ndim < 2 else nonfinite_rows(obj)
                except Exception as e:
                    problems.append(f"/{name} cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        try:
            f.visititems(visit)
        except Exception as e:
            problems.append(f"cannot walk the cache ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        if problems:
            return problems
        problems = _shard_file_problems(f)
        if problems:
            return problems
        for name in f.get("features", {}):
            if name.endswith("_ok"):
                continue
            ok = f["features"][name + "_ok"][()].astype(bool)
            bad = nonfinite_rows(f["features"][name], ok) & ok
            if bad.any():
                problems.append(f"/features/{name} has {int(bad.sum())} computed rows holding NaN or infinity "
                                f"(first: row {int(np.flatnonzero(bad)[0])}); `featx extract` recomputes them")
    return problems
