"""CSV manifests: columns ``path`` (relative to the CSV), optional ``label``, ``group``, ``split``.

Paths must resolve inside the manifest's folder unless ``allow_outside`` is set, so a manifest
from elsewhere cannot make featx read arbitrary files.
"""
from __future__ import annotations

import csv
from pathlib import Path

from featx.errors import SourceError
from featx.safeio import not_regular_reason, open_regular
from featx.sources.base import Failure, ScanResult, normalize_split, path_problem, short


def scan_manifest(path: Path, allow_outside: bool = False, sniff=None) -> ScanResult:
    path = Path(path)
    root = path.parent.resolve()
    try:
        with open_regular(path, "r", what="manifest", error=SourceError, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(f, dialect=dialect)
            fields = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in fields:
                raise SourceError(f"manifest has no 'path' column (columns: {', '.join(fields) or 'none'})", path)
            rows = [{(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else "" for k, v in r.items()}
                    for r in reader]
    except SourceError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SourceError(f"cannot read manifest ({type(e).__name__}: {e})", path) from None
    result = ScanResult()
    seen: dict[str, int] = {}
    for lineno, row in enumerate(rows, start=2):
        rel = row.get("path", "")
        where = f"{path}:{lineno}"
        if not rel:
            result.failures.append(Failure(where, "empty path"))
            continue
        if any("\x00" in v for v in row.values()):
            result.failures.append(Failure(where, "row contains a NUL byte"))
            continue
        problem = path_problem(root / rel)
        if problem:
            result.failures.append(Failure(where, f"path {short(rel)!r}: {problem}"))
            continue
        target = (root / rel).resolve()
        if not allow_outside and not target.is_relative_to(root):
            result.failures.append(Failure(where, f"path {short(rel)!r} is outside the manifest's folder (use --allow-outside)"))
            continue
        if str(target) in seen:
            result.failures.append(Failure(where, f"duplicate of line {seen[str(target)]}; kept the first"))
            continue
        seen[str(target)] = lineno
        problem = not_regular_reason(target)
        if problem:
            result.failures.append(Failure(str(target), f"listed in {where} but {problem}"))
            continue
        raw_split = row.get("split", "")
        split = normalize_split(raw_split)
        if raw_split and not split:
            result.failures.append(Failure(where, f"unknown split {raw_split!r} (train, val, test)"))
            continue
        kw = {"label": row.get("label") or None, "group": row.get("group", ""), "split": split}
        sub = sniff(target, **kw)
        result.samples.extend(sub.samples)
        result.failures.extend(sub.failures)
    return result
