"""Shared fixtures: the committed real-data subsets (tests/data), the full shared data sets for tests
marked ``shared_data``, small generated inputs, and one real-weights cache.

Helpers live in tests/support; import them as ``from tests.support import ...``. The names below
(ROOT, SHARED, BREAST_NPZ, CHEST, CT_DICOM, TINY, need, write_png) stay importable from here too."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support import (  # noqa: F401  (re-exported for tests that import them from conftest)
    BREAST_NPZ,
    CHEST,
    CHEST_FULL,
    CT_DICOM,
    CT_DICOM_FULL,
    ROOT,
    SHARED,
    TINY,
    make_class_folders,
    shared_data_missing,
    write_png,
)

# Hermetic machine-local caches: compiled graphs a user (or a benchmark) left in ~/.cache/featx would
# otherwise let `--compile auto` compile the 780-image fixtures, so a run's speed would depend on the
# machine's history. Each test session gets its own empty cache folder unless FEATX_CACHE_DIR is set.
if not os.environ.get("FEATX_CACHE_DIR"):
    os.environ["FEATX_CACHE_DIR"] = tempfile.mkdtemp(prefix="featx-test-cache-")

SHARED_DATA_FIXTURES = {"chest_full_dir", "ct_full_dir"}
SLOW_FIXTURES = {"breast_cache"}   # real EfficientNet-Lite0 over 780 images: ~25 s on 2 cores, once per session


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path}")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests that use the full data sets carry the ``shared_data`` marker (added here for users of
    ``chest_full_dir``/``ct_full_dir``) and are skipped, with one reason, when the data is absent.
    Users of ``breast_cache`` are marked ``slow``, so ``-m "not slow"`` never builds it."""
    reason = shared_data_missing()
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if SHARED_DATA_FIXTURES & used:
            item.add_marker(pytest.mark.shared_data)
        if SLOW_FIXTURES & used:
            item.add_marker(pytest.mark.slow)
        if reason and item.get_closest_marker("shared_data"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def chest_dir() -> Path:
    """140 real chest X-rays (tests/data): train NORMAL/PNEUMONIA 60 each, test 10 each incl. one duplicate pair."""
    return need(CHEST)


@pytest.fixture(scope="session")
def ct_dir() -> Path:
    """12 real CT DICOM slices of 10 patients (tests/data), 6 with contrast; 2 patients have both labels."""
    return need(CT_DICOM)


def _full(path: Path) -> Path:
    reason = shared_data_missing()
    if reason:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def chest_full_dir() -> Path:
    """The full chest X-ray set (5840 images) from the shared data; its tests are marked shared_data."""
    return _full(CHEST_FULL)


@pytest.fixture(scope="session")
def ct_full_dir() -> Path:
    """The full CT DICOM set (100 slices, 54 patients) from the shared data; its tests are marked shared_data."""
    return _full(CT_DICOM_FULL)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A class-per-folder tree of 12 small generated images (2 classes)."""
    return make_class_folders(tmp_path / "imgs")


@pytest.fixture(scope="session")
def breast_cache(tmp_path_factory) -> Path:
    """The embedded BreastMNIST through real EfficientNet-Lite0 weights (default settings), once per session."""
    from featx.extraction import extract
    cache = tmp_path_factory.mktemp("breast") / "breast.h5"
    extract([str(BREAST_NPZ)], cache, progress=False)
    return cache


@pytest.fixture
def hash_calls(monkeypatch) -> list[str]:
    """The paths featx hashes (sha256 of file bytes) from now on in this test, in order."""
    import featx.sources.base as source_base

    calls: list[str] = []
    real = source_base.sha256_file

    def counting(path, *a, **k):
        calls.append(str(path))
        return real(path, *a, **k)
    monkeypatch.setattr(source_base, "sha256_file", counting)
    return calls
