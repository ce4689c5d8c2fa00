"""Decoding of ordinary image files (PNG, JPEG, TIFF, BMP, ...) into float arrays in [0, 1].

8-bit data is divided by 255; deeper integer data (16-bit PNG/TIFF, 32-bit integer TIFF) is
scaled straight to float without an 8-bit round trip; palette, RGBA, CMYK, LA and 1-bit images
are converted to RGB or gray first.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageFile

from featx.errors import DecodeError
from featx.sources.base import DEFAULT_MAX_PIXELS

# Refuse decompression bombs loudly instead of warning: PIL raises DecompressionBombError past 2x.
Image.MAX_IMAGE_PIXELS = 178_956_970  # PIL's default, stated so it is a visible decision
ImageFile.LOAD_TRUNCATED_IMAGES = False

# File signatures of the image formats we decode with PIL.
_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM", b"GIF87a", b"GIF89a",
    b"RIFF",  # WebP
)


def looks_like_image(head: bytes) -> bool:
    return any(head.startswith(m) for m in _IMAGE_MAGIC)


def scale_to_unit(arr: np.ndarray, intensity: str = "auto") -> np.ndarray:
    """Integer or float pixel data -> float32 in [0, 1] by the rule in ReadOptions.intensity."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8 and intensity != "minmax":
        return arr.astype(np.float32) / 255.0
    if intensity not in ("auto", "dtype", "minmax"):
        raise ValueError(f"unknown intensity rule {intensity!r} (auto, dtype, minmax)")
    # one float copy, then in place (a 2048² 16-bit image: ~3 ms instead of ~11 with temporaries)
    a = arr.astype(np.float64 if arr.dtype.itemsize > 2 else np.float32)
    use_minmax = intensity == "minmax" or (intensity == "auto" and arr.dtype != np.uint8)
    if use_minmax or not np.issubdtype(arr.dtype, np.integer):
        src = arr if np.issubdtype(arr.dtype, np.integer) else a   # integer min/max is exact and faster
        lo, hi = float(np.min(src)), float(np.max(src))
        if not np.isfinite(lo) or not np.isfinite(hi):
            raise DecodeError("image has NaN or infinite pixel values")
        if hi > lo:
            np.subtract(a, lo, out=a)
            np.divide(a, hi - lo, out=a)
        else:
            a.fill(0)
    else:
        info = np.iinfo(arr.dtype)
        np.subtract(a, info.min, out=a)
        np.divide(a, float(info.max) - info.min, out=a)
    np.clip(a, 0.0, 1.0, out=a)
    return a.astype(np.float32, copy=False)


def _pil_to_array(im: Image.Image, intensity: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float32)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
    elif mode == "L":
        arr = np.asarray(im)
    elif mode == "RGB":
        arr = np.asarray(im)
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in im.info):
        # Composite on black so transparent pixels don't keep arbitrary hidden colours.
        rgba = im.convert("RGBA")
        arr = np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB"))
    else:  # P, CMYK, YCbCr, LAB, HSV, ...
        arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        # An RGB image whose three channels are equal is gray: keep one channel.
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., 0]
    return scale_to_unit(arr, intensity)


def too_many_pixels(width: int, height: int, max_pixels: int) -> str:
    """The failure reason for an image or frame above the pixel limit."""
    return (f"image is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the "
            f"{max_pixels / 1e6:g}-megapixel limit per image (ReadOptions.max_pixels)")


def _fit_pixels(im: Image.Image, path: str, max_pixels: int) -> None:
    """Refuse an image above max_pixels before decoding it; a JPEG is drafted down to fit."""
    w, h = im.size
    if w * h <= max_pixels:
        return
    if im.format == "JPEG":
        for k in (2, 4, 8):  # libjpeg's DCT scaling
            if -(-w // k) * -(-h // k) <= max_pixels:
                im.draft(im.mode, (-(-w // k), -(-h // k)))
                if im.size[0] * im.size[1] <= max_pixels:
                    return
    raise DecodeError(too_many_pixels(w, h, max_pixels), path)


# PIL's modes of a 16-bit grayscale PNG ("I" in older Pillow); these go through _decode_png16
_PNG16_MODES = ("I;16", "I;16B", "I;16L", "I")


def _decode_png16(path: str) -> np.ndarray | None:
    """A 16-bit grayscale PNG as uint16 (H, W) via torchvision.io.decode_png (libpng, GIL
    released; ~15% less CPU than PIL on a 2048² image, same values: tests/test_fast_decode.py),
    or None when it cannot (no torchvision, a corrupt file: PIL then decodes and words the error).
    torchvision 0.29 deprecates its decoders in favour of torchcodec: the day they go, PIL decodes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_png, read_file
            t = decode_png(read_file(path), mode=ImageReadMode.UNCHANGED)
    except Exception:  # noqa: BLE001 - PIL takes over and reports what is wrong
        return None
    if t.dim() != 3 or t.shape[0] != 1:
        return None
    return t[0].numpy()


def decode_image(path: str, intensity: str = "auto", draft_size: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one image file to float32 [0, 1], shape (H, W) or (H, W, 3).

    An image above ``max_pixels`` is decoded at a reduced scale if it is a JPEG and refused
    otherwise (DecodeError), before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width < 1 or im.height < 1:
                    raise DecodeError(f"image has no pixels ({im.width}x{im.height})", path)
                if draft_size and im.format == "JPEG" and min(im.size) >= 2 * draft_size:
                    im.draft(im.mode, (draft_size, draft_size))
                _fit_pixels(im, path, max_pixels)
                if im.format == "PNG" and im.mode in _PNG16_MODES and "transparency" not in im.info:
                    arr = _decode_png16(path)
                    if arr is not None:
                        return scale_to_unit(arr, intensity)
                im.load()
                return _pil_to_array(im, intensity)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"refused as a decompression bomb ({e})", path) from None
    except OSError as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise DecodeError(f"truncated or corrupt image ({msg})", path) from None
        raise DecodeError(f"cannot decode image ({msg})", path) from None
    except Exception as e:  # PIL raises assorted errors on hostile files
        raise DecodeError(f"cannot decode image ({type(e).__name__}: {e})", path) from None
