"""Folders: one subfolder per class (ImageFolder convention), searched recursively.

A folder whose subfolders are named train/val/test (or training/validation/testing) keeps that
split, with class subfolders inside each. Files directly in a class-less folder get no label.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from featx.sources.base import SPLIT_ALIASES, Failure, normalize_split, stat_key


class PlannedFile(NamedTuple):
    """One file of a folder source. ``resolved`` and ``key`` (its lstat's size, mtime_ns, ctime_ns,
    inode) come from the walk for a regular file reached without a symbolic link, else None."""

    path: str
    label: str | None
    split: str
    resolved: str | None
    key: tuple[int, int, int, int] | None


def _walk(path: str, resolved: str, label: str | None, split: str, top: bool, out: list[PlannedFile]) -> None:
    """Files of ``path`` (sorted, hidden names skipped), then each subfolder's, depth first: the
    order of os.walk(followlinks=False). A folder reached through a symbolic link is not entered;
    an unreadable folder is skipped."""
    try:
        with os.scandir(path) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return
    subdirs = []
    here, real = _prefix(path), _prefix(resolved)
    for e in entries:
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if not e.is_symlink():
                subdirs.append(e)
            continue
        key = None
        try:
            if not e.is_symlink():
                st = e.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    key = stat_key(st)
        except OSError:
            pass
        out.append(PlannedFile(here + e.name, label, split, real + e.name if key else None, key))
    for d in subdirs:
        _walk(here + d.name, real + d.name, d.name if top else label, split, False, out)


def _prefix(path: str) -> str:
    """What ``str(Path(path) / name)`` puts before ``name`` for a normalised ``path`` (no pathlib cost)."""
    return "" if path == "." else path if path.endswith(os.sep) else path + os.sep


def plan_folder(root: Path) -> tuple[list[PlannedFile], list[Failure]]:
    """A PlannedFile (path, label, split, ...) for every file below root, by the folder convention."""
    root = Path(root)
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    plan: list[PlannedFile] = []
    failures: list[Failure] = []
    if split_dirs:
        bases = [(d, normalize_split(d.name)) for d in split_dirs]
        for d in subdirs:
            if d not in split_dirs:
                failures.append(Failure(str(d), "folder beside split folders train/val/test is not used"))
    else:
        bases = [(root, "")]
    for base, split in bases:
        _walk(str(base), os.path.realpath(base), None, split, True, plan)
    if not plan:
        failures.append(Failure(str(root), "folder has no files"))
    return plan, failures
