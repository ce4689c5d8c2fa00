"""Turning a Sample into pixels: one reader per kind of file, chosen when the source was scanned."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from featx.errors import DecodeError
from featx.sources.base import ReadOptions, Sample
from featx.sources.dicom import decode_dicom
from featx.sources.images import decode_image, scale_to_unit, too_many_pixels


@lru_cache(maxsize=2)  # one array at a time (at most 1 GB each, see featx.sources.npz)
def _npz_array(file: str, key: str) -> np.ndarray:
    with np.load(file, allow_pickle=False) as z:
        return z[key]


def load(sample: Sample, options: ReadOptions = ReadOptions()) -> np.ndarray:
    """Decode a sample to float32 [0, 1], (H, W) or (H, W, 3); raises DecodeError naming the file."""
    if sample.reader == "image":
        return decode_image(sample.file, options.intensity, options.draft_size, options.max_pixels)
    if sample.reader == "dicom":
        frame = int(sample.index) if sample.index is not None else None
        return decode_dicom(sample.file, frame, options.window, options.max_pixels)
    if sample.reader == "npz":
        key, _, i = (sample.index or "").rpartition("/")
        try:
            img = _npz_array(sample.file, f"{key}_images")[int(i)]
        except Exception as e:
            raise DecodeError(f"cannot read {key}_images[{i}] ({e})", sample.file) from None
        if img.ndim >= 2 and img.shape[0] * img.shape[1] > options.max_pixels:
            raise DecodeError(too_many_pixels(img.shape[1], img.shape[0], options.max_pixels), sample.file)
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim == 3 and img.shape[-1] not in (3,):
            raise DecodeError(f"npz image {sample.index} has shape {img.shape}; expected (H, W) or (H, W, 3)",
                              sample.file)
        return scale_to_unit(img, options.intensity)
    raise DecodeError(f"no reader for kind {sample.reader!r}", sample.file)
