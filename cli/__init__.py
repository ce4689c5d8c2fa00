"""The ``featx`` command line: thin click doors onto featx's library functions."""
