"""Writing CSV files that are safe to open in a spreadsheet.

A text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (CSV injection). :func:`write_csv` prefixes such
cells with a single quote, the neutralisation those tools document; numbers are left alone.
Every CSV featx writes (predictions, reports, leaderboards) goes through it.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from featx.safeio import atomic_write

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """``value`` with a leading single quote if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (no index) to ``path`` with every text cell and header passed through
    :func:`safe_cell`; the frame itself is not changed."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(safe_cell)
    out.columns = [safe_cell(str(c)) for c in out.columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, mode="w") as fh:  # a reader never sees half a file; a crash leaves the old one
        out.to_csv(fh, index=False)
    return path
