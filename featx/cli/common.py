"""What every command shares: one-line errors, logging to stderr, option parsing helpers."""
from __future__ import annotations

import functools
import logging
import sys

import click

from featx.errors import FeatxError


class _LineFormatter(logging.Formatter):
    def format(self, record):
        level = {"WARNING": "warning", "ERROR": "error", "INFO": "info"}.get(record.levelname, record.levelname.lower())
        return f"featx: {level}: {record.getMessage()}"


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    log = logging.getLogger("featx")
    log.handlers[:] = []
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(_LineFormatter())
    log.addHandler(h)
    log.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def handle_errors(fn):
    """Turn featx's errors into one line on stderr and the error's exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FeatxError as e:
            click.echo(f"featx: error: {e}", err=True)
            sys.exit(e.exit_code)
    return wrapper


def split_list(values) -> list[str]:
    """Accept repeated options and comma-separated values alike."""
    out = []
    for v in values or ():
        out.extend(x.strip() for x in str(v).split(",") if x.strip())
    return out
