"""The ``featx`` command line: thin click doors onto featx's library functions.

The library core (everything in ``featx`` outside this package) never imports click.
"""
from featx.cli.main import main

__all__ = ["main"]
