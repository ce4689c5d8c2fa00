"""featx check: is a cache consistent and readable?"""
from __future__ import annotations

import sys

import click

CHECK_EPILOG = """\b
Examples:
  featx check cache.h5          (exit 0: healthy; 2: one line per problem)
  featx check cache.h5 && featx fit cache.h5 --features efficientnet_lite0 -o m.joblib
"""


@click.command("check", epilog=CHECK_EPILOG)
@click.argument("cache", type=click.Path(dir_okay=True))
def check_cmd(cache):
    """List every problem of CACHE, one line each: exit 0 if healthy, 2 if not."""
    from featx.check import check_cache

    problems = check_cache(cache)
    if not problems:
        click.echo(f"{cache}: ok")
        return
    for p in problems:
        click.echo(f"featx: error: {cache}: {p}", err=True)
    sys.exit(2)
