"""featx info: what a cache holds."""
from __future__ import annotations

import json

import click

from featx.cli.common import handle_errors


@click.command("info")
@click.argument("cache", type=click.Path(dir_okay=False))
@click.option("--config", "show_config", is_flag=True, help="Print each set's full config.")
@handle_errors
def info_cmd(cache, show_config):
    """Samples, classes, splits, feature sets and failures of CACHE."""
    from featx.cache import read_state
    st = read_state(cache)
    if not st.ids and not st.sets:
        from featx.errors import CacheError
        raise CacheError("cache does not exist or is empty", cache)
    click.echo(f"{cache}: {len(st.ids)} samples, classes {st.class_names}, {len(st.failures)} failures")
    for name, cfg in st.sets.items():
        click.echo(f"  {name}: {len(st.done[name])} rows, kind {cfg.get('kind')}"
                   + (f", {cfg.get('backbone')} {cfg.get('precision')} weights {str((cfg.get('weights') or {}).get('sha256'))[:12]}"
                      if cfg.get("kind") == "deep" else ""))
        if show_config:
            click.echo("    " + json.dumps(cfg, sort_keys=True))
    for p, r, s in st.failures[:20]:
        click.echo(f"  failed ({s}): {p}: {r}")
    if len(st.failures) > 20:
        click.echo(f"  ... and {len(st.failures) - 20} more failures")
