"""featx check: is a cache consistent and readable?"""
from __future__ import annotations

import sys

import click

from featx.cli.common import handle_errors


@click.command("check")
@click.argument("cache", type=click.Path(dir_okay=True))
@handle_errors
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
