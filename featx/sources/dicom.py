"""DICOM reading with pydicom: stored values -> Hounsfield units (or modality units) -> window -> [0, 1].

RescaleSlope/RescaleIntercept are applied by pydicom's modality LUT; the window is a preset
(``--window lung``), an explicit ``(center, width)``, or the file's own WindowCenter/WindowWidth;
without any, the slice's own min-max is used. MONOCHROME1 images are inverted so that higher
values are always brighter. PatientID becomes the sample's group.
"""
from __future__ import annotations

import numpy as np

from featx.errors import DecodeError
from featx.sources.base import DEFAULT_MAX_PIXELS

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
    """The dataset without pixel data; raises DecodeError if its declared sizes cannot be right."""
    import os

    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:
        raise DecodeError(f"cannot read DICOM header ({type(e).__name__}: {_one_line(e)})", path) from None
    # a single frame's size is checked against its PixelData when it is decoded (the header alone
    # cannot tell a missing PixelData from a short one); many frames are checked here, before the
    # scan makes one sample per frame
    problem = declared_size_problem(ds, os.stat(path).st_size if n_frames(ds) > 1 else None)
    if problem:
        raise DecodeError(problem, path)
    return ds


def n_frames(ds) -> int:
    try:
        return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _int(ds, name: str, default: int) -> int | None:
    value = getattr(ds, name, None)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _size(n: float) -> str:
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


def declared_size_problem(ds, available_bytes: int | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why the header's Rows, Columns, NumberOfFrames, BitsAllocated and SamplesPerPixel cannot
    describe ``available_bytes`` of pixel data (the file's size, or the PixelData length; None:
    not checked), or None.

    Checked before anything is allocated or iterated, so a header claiming three million frames
    costs one line instead of three million samples."""
    if "Rows" not in ds and "Columns" not in ds:
        return None  # no image (decoding says so)
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames_raw = _int(ds, "NumberOfFrames", 1)
    bits, spp = _int(ds, "BitsAllocated", 16), _int(ds, "SamplesPerPixel", 1)
    if rows is None or cols is None or rows < 1 or cols < 1:
        return f"DICOM declares an image of {getattr(ds, 'Columns', '?')}x{getattr(ds, 'Rows', '?')} pixels"
    if frames_raw is None or frames_raw < 0:
        return f"DICOM declares NumberOfFrames={getattr(ds, 'NumberOfFrames', '?')!r}"
    frames = max(1, frames_raw)
    if bits not in (1, 8, 16, 32, 64):
        return f"DICOM declares BitsAllocated={getattr(ds, 'BitsAllocated', '?')}; expected 1, 8, 16, 32 or 64"
    if spp not in (1, 3, 4):
        return f"DICOM declares SamplesPerPixel={getattr(ds, 'SamplesPerPixel', '?')}; expected 1, 3 or 4"
    if rows * cols > max_pixels:
        return (f"DICOM declares {cols}x{rows} pixels per frame ({rows * cols / 1e6:.1f} megapixels), above "
                f"the {max_pixels / 1e6:g}-megapixel limit per image")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if getattr(ts, "is_compressed", False):
        need = frames * 8  # every compressed frame is at least one 8-byte item
    else:
        need = -(-rows * cols * spp * bits * frames // 8)
    if available_bytes is not None and need > available_bytes:
        return (f"DICOM declares {frames} frame{'s' if frames > 1 else ''} of {cols}x{rows}x{spp} at {bits} bits "
                f"({_size(need)}) but holds {_size(available_bytes)} of data")
    return None


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


def read_hu(path: str, frame: int | None = None,
            max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, object]:
    """Pixel data in modality units (HU for CT), float32, and the dataset (no windowing, no inversion)."""
    import os

    import pydicom
    from pydicom.pixels import apply_modality_lut
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise DecodeError(f"cannot read DICOM ({type(e).__name__}: {_one_line(e)})", path) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DecodeError("DICOM has no pixel data", path)
    data = ds.get("PixelData")
    problem = declared_size_problem(ds, len(data) if isinstance(data, (bytes, bytearray))
                                    else os.stat(path).st_size, max_pixels)
    if problem:
        raise DecodeError(problem, path)
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


def decode_dicom(path: str, frame: int | None = None, window=None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    hu, ds = read_hu(path, frame, max_pixels)
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
