"""featx compact: fold a cache's shards into one block (one file per feature set)."""
from __future__ import annotations

import click

COMPACT_EPILOG = """\b
Examples:
  featx compact cache.h5        (cache.h5 + cache.h5.shards/ with one samples file and one file per set)
"""


@click.command("compact", epilog=COMPACT_EPILOG)
@click.argument("cache", type=click.Path(dir_okay=True))
def compact_cmd(cache):
    """Fold the shards of CACHE together: one samples shard and one shard per feature set.

    Every commit adds shards (cheap to write, one more file to open when reading); compact
    rewrites them once. Readers of CACHE should be closed while it runs."""
    from featx.cache import compact

    out = compact(cache)
    click.echo(f"{cache}: {out['rows']} rows; {out['shards_before']} shard files -> {out['shards_after']}")
