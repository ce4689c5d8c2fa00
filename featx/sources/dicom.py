"""DICOM reading with pydicom: stored values -> Hounsfield units (or modality units) -> window -> [0, 1].

RescaleSlope/RescaleIntercept are applied by pydicom's modality LUT; the window is a preset
(``--window lung``), an explicit ``(center, width)``, or the file's own WindowCenter/WindowWidth;
without any, the slice's own min-max is used. MONOCHROME1 images are inverted so that higher
values are always brighter. PatientID becomes the sample's group.
"""
from __future__ import annotations

import numpy as np

from featx.errors import DecodeError

# (center, width) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (40.0, 350.0),
    "liver": (60.0, 160.0),
}


def _one_line(e: Exception) -> str:
    """An exception's text on one line (pydicom lists its plugins' errors on several)."""
    return " ".join(str(e).split())


def is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_header(path: str):
    import pydicom
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:
        raise DecodeError(f"cannot read DICOM header ({type(e).__name__}: {_one_line(e)})", path) from None


def n_frames(ds) -> int:
    try:
        return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or getattr(value, "VM", 1) > 1:
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def resolve_window(ds, window) -> tuple[float, float] | None:
    if window is None:
        c, w = _first(getattr(ds, "WindowCenter", None)), _first(getattr(ds, "WindowWidth", None))
        return (c, w) if c is not None and w is not None and w > 0 else None
    if isinstance(window, str):
        if window in ("minmax", "none"):
            return None
        if window not in WINDOW_PRESETS:
            raise ValueError(f"unknown window preset {window!r}; known: {', '.join(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[window]
    c, w = window
    return float(c), float(w)


def apply_window(hu: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        lo, hi = float(hu.min()), float(hu.max())
    else:
        c, w = window
        lo, hi = c - w / 2.0, c + w / 2.0
    if hi <= lo:
        return np.zeros(hu.shape, np.float32)
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def read_hu(path: str, frame: int | None = None) -> tuple[np.ndarray, object]:
    """Pixel data in modality units (HU for CT), float32, and the dataset (no windowing, no inversion)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise DecodeError(f"cannot read DICOM ({type(e).__name__}: {_one_line(e)})", path) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError("DICOM has no pixel data", path)
    try:
        arr = ds.pixel_array
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", ts)
        hint = ("; install a decoder such as pylibjpeg[all] or gdcm for compressed DICOM"
                if getattr(ts, "is_compressed", False) else "")
        raise DecodeError(f"cannot decode DICOM pixel data (transfer syntax {name}: {_one_line(e)}){hint}",
                          path) from None
    if n_frames(ds) > 1:
        arr = arr[frame or 0]
    if arr.ndim == 3 and arr.shape[-1] == 3:  # colour DICOM (e.g. RGB ultrasound)
        return arr.astype(np.float32), ds
    return apply_modality_lut(arr, ds).astype(np.float32), ds


def decode_dicom(path: str, frame: int | None = None, window=None) -> np.ndarray:
    hu, ds = read_hu(path, frame)
    if hu.ndim == 3:  # colour
        return np.clip(hu / 255.0, 0.0, 1.0).astype(np.float32)
    try:
        win = resolve_window(ds, window)
    except ValueError as e:
        raise DecodeError(str(e), path) from None
    out = apply_window(hu, win)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright; invert after windowing
    return out
