"""featx info: what a cache holds: samples per class and split, feature sets with their width."""
from __future__ import annotations

import json
from collections import Counter

import click

from featx.cli.common import require_cache

INFO_EPILOG = """\b
Examples:
  featx info breast.h5
  featx info breast.h5 --config        (each set's full extractor config)
"""

SPLIT_ORDER = ("train", "val", "test")


def set_widths(cache: str) -> dict[str, int]:
    """Feature-set name -> width d (columns of /features/<name>, see docs/CONTRACTS.md)."""
    import h5py

    with h5py.File(cache, "r") as f:
        group = f.get("features")
        if group is None:
            return {}
        return {name: int(group[name].shape[1]) for name in group if not name.endswith("_ok")}


def count_table(labels: list[str], splits: list[str]) -> list[list[str]]:
    """Rows of a class x split count table (with totals); "" labels show as (unlabelled), "" splits
    as (none). The first row is the header."""
    counts = Counter(zip(labels, splits))
    split_cols = [s for s in SPLIT_ORDER if s in set(splits)] + sorted(set(splits) - set(SPLIT_ORDER) - {""})
    if "" in set(splits):
        split_cols.append("")
    classes = list(dict.fromkeys(sorted(set(labels) - {""}))) + ([""] if "" in set(labels) else [])
    show_splits = split_cols != [""]
    header = ["class"] + ([s or "(none)" for s in split_cols] if show_splits else []) + ["total"]
    rows = [header]
    for c in classes:
        per = [counts[(c, s)] for s in split_cols]
        rows.append([c or "(unlabelled)"] + ([str(n) for n in per] if show_splits else []) + [str(sum(per))])
    totals = [sum(counts[(c, s)] for c in classes) for s in split_cols]
    rows.append(["total"] + ([str(n) for n in totals] if show_splits else []) + [str(sum(totals))])
    return rows


def format_table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            for r in rows]


@click.command("info", epilog=INFO_EPILOG)
@click.argument("cache", type=click.Path(exists=True))
@click.option("--config", "show_config", is_flag=True, help="Print each set's full config.")
def info_cmd(cache, show_config):
    """Samples per class and split, feature sets (width, rows computed) and failures of CACHE."""
    from featx.cache import read_state
    from featx.errors import CacheError

    require_cache(cache)
    st = read_state(cache)
    if not st.ids and not st.sets:
        raise CacheError("the cache is empty", cache)
    classes = [c for c in st.class_names if c]
    click.echo(f"{cache}: {len(st.ids)} samples, {len(classes)} classes, {len(st.sets)} feature sets, "
               f"{len(st.failures)} failures")
    for line in format_table(count_table(st.labels, st.splits)):
        click.echo(line)
    widths = set_widths(cache)
    for name, cfg in st.sets.items():
        click.echo(f"  {name}: d={widths.get(name, '?')}, {len(st.done[name])} of {len(st.ids)} rows computed, "
                   f"kind {cfg.get('kind')}"
                   + (f", {cfg.get('backbone')} {cfg.get('precision')} weights {str((cfg.get('weights') or {}).get('sha256'))[:12]}"
                      if cfg.get("kind") == "deep" else ""))
        if show_config:
            click.echo("    " + json.dumps(cfg, sort_keys=True))
    for p, r, s in st.failures[:20]:
        click.echo(f"  failed ({s}): {p}: {r}")
    if len(st.failures) > 20:
        click.echo(f"  ... and {len(st.failures) - 20} more failures")
