"""featx's test suite. A regular package so ``tests.support`` imports the same way under ``pytest`` and
``python -m pytest`` (and a stray top-level ``tests`` package in site-packages cannot shadow it)."""
