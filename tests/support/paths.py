"""Where the test data lives, and the tiny network the mechanics tests use.

The committed subsets under tests/data are what the suite runs on by default; the full shared data
sets (``FEATX_SHARED_DATA``, else ``../shared/data`` beside the checkout) are only for tests marked
``shared_data``."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
BREAST_NPZ = ROOT / "featx" / "data" / "breastmnist.npz"   # the embedded copy of shared/data/breastmnist
CHEST = DATA / "chest-xray-pneumonia-224"                   # 140 real X-rays: train 60+60, test 10+10
CT_DICOM = DATA / "ct-contrast-dicom" / "dicom_dir"         # 12 real CT slices of 10 patients

SHARED_ENV = "FEATX_SHARED_DATA"
SHARED = Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared" / "data")
CHEST_FULL = SHARED / "chest-xray-pneumonia-224"            # 5840 X-rays
CT_DICOM_FULL = SHARED / "ct-contrast-dicom" / "dicom_dir"  # 100 CT slices of 54 patients

# A tiny random-init network for mechanics tests (fast on 2 cores); real weights are tested separately.
TINY = "timm/test_efficientnet"
TINY_ARGS = ["--backbone", TINY, "--weights", "none", "--precision", "fp32"]
TINY_SET = "test_efficientnet_random"   # the cache set name of TINY with weights="none"


def shared_data_missing() -> str | None:
    """Why the full shared data sets cannot be used (one line), or None when they are there."""
    missing = [p for p in (CHEST_FULL, CT_DICOM_FULL) if not p.is_dir()]
    if not missing:
        return None
    where = f"{SHARED_ENV}={os.environ[SHARED_ENV]}" if os.environ.get(SHARED_ENV) else f"{SHARED} (the default)"
    return (f"needs the full shared data sets; not found under {where}: set {SHARED_ENV} to the shared/data "
            "folder to run it")
