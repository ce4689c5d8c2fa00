"""Shared machinery of the handcrafted descriptors: image checks, gray conversion, quantization,
spec naming and configs.

Input images follow docs/CONTRACTS.md: ``numpy.ndarray`` of dtype float32 with values in [0, 1],
shape ``(H, W)`` or ``(H, W, 3)``. For convenience :func:`to_gray` also takes integer images
(scaled to [0, 1] by their dtype's maximum: uint8 by 255, uint16 by 65535, so 16-bit data is never
squeezed through 8 bits), bool images (0/1) and ``(H, W, 1)`` arrays. RGB is converted to gray
with :func:`skimage.color.rgb2gray` (ITU-R BT.709 luma: 0.2125 R + 0.7154 G + 0.0721 B).

Quantization rule (GLCM, LBP, first-order entropy/uniformity): a gray value ``x`` in [0, 1] maps to
the integer level ``min(floor(x * levels), levels - 1)``, i.e. ``levels`` equal-width bins over
the fixed range [0, 1] (the last bin is closed). The range is fixed, not the image's own min..max,
so levels mean the same intensity in every image. For 8-bit data and ``levels=256`` this gives back
the original 8-bit value exactly; for 16-bit data the levels are taken from the full 16-bit range
(there is no 8-bit truncation or wrap-around anywhere).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar

import numpy as np
import skimage
from skimage.color import rgb2gray

from featx.errors import FeatxError

#: Bumped whenever a descriptor's computation changes in a way that changes its output, so that
#: caches made by an older featx never look interchangeable with new ones (it is part of config()).
IMPL_VERSION = 1

#: Float images may stray this far outside [0, 1] (resampling overshoot) and are clipped; further
#: out is an error, since it means the image was not scaled (e.g. a float image in [0, 255]).
FLOAT_TOLERANCE = 1e-3

#: Longest readable name suffix; longer ones are replaced by a short hash of the parameters.
MAX_SUFFIX_LEN = 40


class ImageInputError(FeatxError, ValueError):
    """An image (or batch of images) handed to a handcrafted descriptor is not usable.

    It is a :class:`featx.errors.FeatxError` for featx's CLI and a ``ValueError`` for
    scikit-learn's conventions on bad input.
    """


def unit_float(arr: np.ndarray, what: str = "image") -> np.ndarray:
    """A float image checked to be finite and within [0, 1] (:data:`FLOAT_TOLERANCE` beyond it
    is clipped, more is refused with :class:`ImageInputError` naming ``what``); same dtype."""
    if not np.isfinite(arr).all():
        raise ImageInputError(f"{what} has NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -FLOAT_TOLERANCE or hi > 1.0 + FLOAT_TOLERANCE:
        raise ImageInputError(f"float {what} values span [{lo:.4g}, {hi:.4g}]; expected [0, 1] (scale it first)")
    return np.clip(arr, 0.0, 1.0) if lo < 0.0 or hi > 1.0 else arr


def to_gray(image: Any) -> np.ndarray:
    """Return ``image`` as a 2-D float64 gray image with values in [0, 1].

    Accepts ``(H, W)``, ``(H, W, 1)`` and ``(H, W, 3)`` arrays of float, integer or bool dtype.
    Integer images are divided by their dtype's maximum (signed integers must not be negative).
    Float images must lie in [0, 1] (within :data:`FLOAT_TOLERANCE`, then clipped) and be finite.
    Raises :class:`ImageInputError` otherwise.
    """
    arr = np.asarray(image)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ImageInputError(f"image dtype {arr.dtype} is not a numeric image type")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] != 3:
        raise ImageInputError(
            f"image of shape {arr.shape} has {arr.shape[2]} channels; expected (H, W) or (H, W, 3)"
        )
    if arr.ndim not in (2, 3):
        raise ImageInputError(f"image of shape {arr.shape} is not (H, W) or (H, W, 3)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageInputError(f"image of shape {arr.shape} is empty")

    if arr.dtype == np.bool_:
        arr = arr.astype(np.float64)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0 and arr.min() < 0:
            raise ImageInputError(f"integer image of dtype {arr.dtype} has negative values")
        arr = arr.astype(np.float64) / float(info.max)
    else:
        arr = unit_float(arr.astype(np.float64, copy=False))
    if arr.ndim == 3:
        arr = rgb2gray(arr)
    return arr


def quantize(gray: np.ndarray, levels: int) -> np.ndarray:
    """Map a [0, 1] gray image to integer levels ``min(floor(x * levels), levels - 1)``.

    Returns uint8 when ``levels <= 256``, else uint16.
    """
    q = np.floor(gray * levels)
    np.clip(q, 0, levels - 1, out=q)
    return q.astype(np.uint8 if levels <= 256 else np.uint16)


# --------------------------------------------------------------------------------------------
# coercion helpers used by the specs' __post_init__ (they raise FeatxError with one-line text)


def _bad(descriptor: str, field: str, value: Any, expected: str) -> FeatxError:
    return FeatxError(f"{descriptor}: {field}={value!r} is invalid; expected {expected}")


def as_int(descriptor: str, field: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise _bad(descriptor, field, value, f"an integer >= {lo}")
    if float(value) != int(value):
        raise _bad(descriptor, field, value, f"an integer >= {lo}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise _bad(descriptor, field, value, f"an integer {rng}")
    return v


def as_pair(descriptor: str, field: str, value: Any, lo: int = 1) -> tuple[int, int]:
    """An int n becomes (n, n); a 2-sequence of ints stays a pair."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) != 2:
            raise _bad(descriptor, field, value, "an integer or a pair of integers")
        return (as_int(descriptor, field, value[0], lo), as_int(descriptor, field, value[1], lo))
    v = as_int(descriptor, field, value, lo)
    return (v, v)


def as_choice(descriptor: str, field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _bad(descriptor, field, value, "one of " + ", ".join(choices))
    return value


def as_bool(descriptor: str, field: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise _bad(descriptor, field, value, "true or false")


# --------------------------------------------------------------------------------------------
# name suffixes


def format_value(value: Any) -> str:
    """Compact, filesystem/HDF5-safe text for a parameter value in a name suffix."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        text = str(int(v)) if v.is_integer() else repr(v)
        return text.replace(".", "p").replace("-", "m")
    if isinstance(value, str):
        return "".join(ch for ch in value.lower() if ch.isalnum())
    if isinstance(value, (tuple, list)):
        return "-".join(format_value(v) for v in value)
    return format_value(str(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


class HandcraftedSpec:
    """Base of the descriptor specs (each a frozen, picklable dataclass).

    Subclasses define ``descriptor`` (the default name), ``ABBREV`` (field -> short prefix used
    in name suffixes) and ``_compute_gray(gray) -> 1-D float array`` plus ``feature_names()``.
    """

    descriptor: ClassVar[str] = ""
    ABBREV: ClassVar[dict[str, str]] = {}

    # ----- naming ------------------------------------------------------------------------
    def _default_value(self, field: dataclasses.Field) -> Any:
        if field.default is not dataclasses.MISSING:
            return field.default
        return field.default_factory()  # type: ignore[misc]

    def non_default_params(self) -> dict[str, Any]:
        """Parameters whose values differ from the defaults, in field order."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value != self._default_value(f):
                out[f.name] = value
        return out

    def _fmt_param(self, field: str, value: Any) -> str:
        return format_value(value)

    @property
    def name(self) -> str:
        """``"<descriptor>"`` at default parameters, else ``"<descriptor>_<suffix>"``.

        The suffix lists the non-default parameters as ``<abbrev><value>`` joined by ``_`` in
        field order (e.g. ``hog_o12_ppc8``, ``glcm_q32_d1-2``; sequences join with ``-``, HOG's
        pairs print once when equal and as ``8x16`` otherwise, LBP's (P, R) pairs as ``8r1``;
        words keep only letters and digits; decimal points print as ``p``). If that is longer than 40 characters, it is replaced by
        ``h`` + the first 10 hex digits of the SHA-1 of the non-default parameters' JSON.
        """
        nd = self.non_default_params()
        if not nd:
            return self.descriptor
        suffix = "_".join(self.ABBREV.get(k, k) + self._fmt_param(k, v) for k, v in nd.items())
        if len(suffix) > MAX_SUFFIX_LEN:
            blob = json.dumps({k: _jsonable(v) for k, v in nd.items()}, sort_keys=True)
            suffix = "h" + hashlib.sha1(blob.encode()).hexdigest()[:10]
        return f"{self.descriptor}_{suffix}"

    # ----- config --------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Every parameter, JSON-ready (tuples as lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def config(self) -> dict[str, Any]:
        """Complete, JSON-serializable description: equal configs mean interchangeable features."""
        cfg: dict[str, Any] = {
            "kind": "handcrafted",
            "descriptor": self.descriptor,
            "name": self.name,
            "skimage_version": skimage.__version__,
            "impl_version": IMPL_VERSION,
            "input": "gray float in [0,1]; RGB via skimage.color.rgb2gray",
        }
        cfg.update(self.params())
        cfg["n_features"] = self.n_features
        return cfg

    # ----- computing ----------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.feature_names())

    def feature_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute_gray(self, gray: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self, image: np.ndarray) -> np.ndarray:
        """Image (see module doc) -> 1-D float32 vector of length ``n_features``, all finite."""
        return self.compute_gray(to_gray(image))

    def compute_gray(self, gray: np.ndarray) -> np.ndarray:
        """Like :meth:`compute` for an image already passed through :func:`to_gray`."""
        vec = np.asarray(self._compute_gray(gray), dtype=np.float64).ravel()
        if vec.shape[0] != self.n_features:  # pragma: no cover - a bug, not bad input
            raise FeatxError(
                f"{self.name}: produced {vec.shape[0]} values, expected {self.n_features}"
            )
        if not np.isfinite(vec).all():  # pragma: no cover - each descriptor guards its cases
            raise FeatxError(f"{self.name}: produced non-finite values for this image")
        return vec.astype(np.float32)
