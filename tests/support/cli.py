"""Running the featx CLI in a subprocess, the way a user meets it, and reading what it printed."""
from __future__ import annotations

import subprocess
import sys
import time

from tests.support.paths import ROOT, TINY_ARGS


def cli_argv(*args, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "featx.cli", *map(str, args)]


def run_cli(*args, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """``featx ARGS...`` from the repo root; text output captured."""
    return subprocess.run(cli_argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def extract_argv(src, cache, *extra, batch_size: int = 8, python: str | None = None) -> list[str]:
    """``featx extract SRC -o CACHE`` on the tiny random network, quiet."""
    return cli_argv("extract", src, "-o", cache, *TINY_ARGS, "--batch-size", batch_size, "-q", *extra,
                    python=python)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("featx: error:")]


def assert_clean_stderr(stderr: str) -> None:
    """No traceback, and every message is one line of its own."""
    assert "Traceback" not in stderr
    for line in stderr.splitlines():
        assert line.startswith(("featx: ", "note: ")), f"stray line in stderr: {line!r}"


def wait_for(pred, proc, timeout: float = 120.0, step: float = 0.005) -> None:
    """Poll ``pred`` until true while ``proc`` runs; fails if the run ended first."""
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None and not pred():
        time.sleep(step)
    assert proc.poll() is None, "the run ended before the fault could be injected"
