"""Folders: one subfolder per class (ImageFolder convention), searched recursively.

A folder whose subfolders are named train/val/test (or training/validation/testing) keeps that
split, with class subfolders inside each. Files directly in a class-less folder get no label.
"""
from __future__ import annotations

import os
from pathlib import Path

from featx.sources.base import SPLIT_ALIASES, Failure, normalize_split


def walk_files(root: Path) -> list[Path]:
    """Every regular file below root, sorted, hidden files and folders skipped."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                out.append(Path(dirpath) / name)
    return out


def plan_folder(root: Path) -> tuple[list[tuple[Path, str | None, str]], list[Failure]]:
    """(file, label, split) for every file below root, by the folder convention."""
    root = Path(root)
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    plan: list[tuple[Path, str | None, str]] = []
    failures: list[Failure] = []
    if split_dirs:
        bases = [(d, normalize_split(d.name)) for d in split_dirs]
        for d in subdirs:
            if d not in split_dirs:
                failures.append(Failure(str(d), "folder beside split folders train/val/test is not used"))
    else:
        bases = [(root, "")]
    for base, split in bases:
        for f in walk_files(base):
            rel = f.relative_to(base)
            label = rel.parts[0] if len(rel.parts) > 1 else None
            plan.append((f, label, split))
    if not plan:
        failures.append(Failure(str(root), "folder has no files"))
    return plan, failures
