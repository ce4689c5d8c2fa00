"""Helpers shared by the tests (and bench/faults.py): data locations, generated inputs, caches
written through featx's journal, the CLI in a subprocess, fault injection.

One import scheme everywhere: ``from tests.support import ...`` (tests/ is a package; pytest puts
the repo root on sys.path, see [tool.pytest.ini_options] pythonpath)."""
from tests.support.caches import journal_cache
from tests.support.cli import assert_clean_stderr, cli_argv, error_lines, extract_argv, run_cli, wait_for
from tests.support.images import make_class_folders, random_gray, write_png
from tests.support.paths import (
    BREAST_NPZ,
    CHEST,
    CHEST_FULL,
    CT_DICOM,
    CT_DICOM_FULL,
    DATA,
    ROOT,
    SHARED,
    SHARED_ENV,
    TINY,
    TINY_ARGS,
    TINY_SET,
    shared_data_missing,
)

__all__ = [
    "BREAST_NPZ", "CHEST", "CHEST_FULL", "CT_DICOM", "CT_DICOM_FULL", "DATA", "ROOT", "SHARED", "SHARED_ENV",
    "TINY", "TINY_ARGS", "TINY_SET", "assert_clean_stderr", "cli_argv", "error_lines", "extract_argv",
    "journal_cache", "make_class_folders", "random_gray", "run_cli", "shared_data_missing", "wait_for",
    "write_png",
]
