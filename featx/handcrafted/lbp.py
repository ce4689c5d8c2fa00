"""Local binary pattern histograms (Ojala et al. 2002) via
:func:`skimage.feature.local_binary_pattern`."""
from __future__ import annotations

from dataclasses import Field, dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from skimage.feature import local_binary_pattern

from featx.errors import FeatxError
from featx.handcrafted.base import HandcraftedSpec, format_value, as_choice, as_int, quantize

METHODS = ("uniform", "ror", "nri_uniform")

#: Default (P, R) pairs per method. "ror" histograms have one bin per rotation class of P bits
#: (36 for P=8, 4116 for P=16, ~7e5 for P=24), so its default keeps P=8 at three radii.
DEFAULT_POINTS_RADII: dict[str, tuple[tuple[int, float], ...]] = {
    "uniform": ((8, 1.0), (16, 2.0), (24, 3.0)),
    "nri_uniform": ((8, 1.0), (16, 2.0), (24, 3.0)),
    "ror": ((8, 1.0), (8, 2.0), (8, 3.0)),
}
MAX_P = {"uniform": 64, "nri_uniform": 64, "ror": 16}


@lru_cache(maxsize=None)
def ror_codes(P: int) -> np.ndarray:
    """Sorted values a "ror" LBP with P points can take (the minimal rotation of each P-bit code)."""
    codes = np.arange(2**P, dtype=np.int64)
    best = codes.copy()
    rot = codes
    for _ in range(P - 1):
        rot = (rot >> 1) | ((rot & 1) << (P - 1))
        np.minimum(best, rot, out=best)
    return np.unique(best)


def n_bins(method: str, P: int) -> int:
    """Histogram length of one (P, R) pair: uniform P+2, nri_uniform P(P-1)+3, ror #rotation classes."""
    if method == "uniform":
        return P + 2
    if method == "nri_uniform":
        return P * (P - 1) + 3
    return int(ror_codes(P).shape[0])


@dataclass(frozen=True)
class LBPSpec(HandcraftedSpec):
    """Concatenated normalized LBP code histograms, one per (P, R) pair.

    The gray image is quantized to ``levels`` integer levels by
    ``min(floor(x * levels), levels - 1)`` (default 256, i.e. exactly the 8-bit values for 8-bit
    data; 16-bit data uses its full range, no 8-bit wrap-around) and given to
    ``skimage.feature.local_binary_pattern(q, P, R, method)`` as an integer image, which avoids
    skimage's sign noise on tiny float differences. Each code image becomes a histogram with a
    fixed bin count (``uniform``: P+2 bins for codes 0..P+1; ``nri_uniform``: P(P-1)+3;
    ``ror``: one bin per rotation class of P bits, P <= 16) divided by the pixel count, so each
    histogram sums to 1 whatever the image size. Pixels whose circle leaves the image compare
    against 0 (skimage's constant border).

    Defaults: method "uniform", (P, R) = (8, 1), (16, 2), (24, 3) -> 10 + 18 + 26 = 54 values.
    ``points_radii=None`` means the method's default (for "ror": (8, 1), (8, 2), (8, 3)).
    """

    points_radii: Any = None
    method: str = "uniform"
    levels: int = 256

    descriptor: ClassVar[str] = "lbp"
    ABBREV: ClassVar[dict[str, str]] = {"points_radii": "pr", "method": "m", "levels": "q"}

    def __post_init__(self) -> None:
        d = self.descriptor
        method = as_choice(d, "method", self.method, METHODS)
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "levels", as_int(d, "levels", self.levels, 2, 65536))
        pr = DEFAULT_POINTS_RADII[method] if self.points_radii is None else self.points_radii
        object.__setattr__(self, "points_radii", self._coerce_pr(pr, method))

    @staticmethod
    def _coerce_pr(pr: Any, method: str) -> tuple[tuple[int, float], ...]:
        expected = "a sequence of (P, R) pairs, e.g. ((8, 1), (16, 2))"
        if isinstance(pr, (str, bytes)) or not hasattr(pr, "__len__") or len(pr) == 0:
            raise FeatxError(f"lbp: points_radii={pr!r} is invalid; expected {expected}")
        out = []
        for item in pr:
            if not hasattr(item, "__len__") or len(item) != 2:
                raise FeatxError(f"lbp: points_radii={pr!r} is invalid; expected {expected}")
            P = as_int("lbp", "points_radii P", item[0], 1, MAX_P[method])
            try:
                R = float(item[1])
            except (TypeError, ValueError):
                raise FeatxError(f"lbp: radius {item[1]!r} is invalid; expected a number > 0")
            if not np.isfinite(R) or R <= 0:
                raise FeatxError(f"lbp: radius {item[1]!r} is invalid; expected a number > 0")
            out.append((P, R))
        if len(set(out)) != len(out):
            raise FeatxError(f"lbp: points_radii={pr!r} repeats a (P, R) pair")
        return tuple(out)

    def _default_value(self, field: Field) -> Any:
        if field.name == "points_radii":
            return DEFAULT_POINTS_RADII[self.method]
        return super()._default_value(field)

    def _fmt_param(self, field: str, value: Any) -> str:
        if field == "points_radii":
            return "-".join(f"{P}r{format_value(R)}" for P, R in value)
        return super()._fmt_param(field, value)

    @property
    def n_features(self) -> int:
        return sum(n_bins(self.method, P) for P, _ in self.points_radii)

    def feature_names(self) -> list[str]:
        names = []
        for P, R in self.points_radii:
            labels = ror_codes(P) if self.method == "ror" else range(n_bins(self.method, P))
            names += [f"{self.name}_P{P}_R{format_value(R)}_{int(c)}" for c in labels]
        return names

    def histogram(self, q: np.ndarray, P: int, R: float) -> np.ndarray:
        """Normalized code histogram of one (P, R) pair on a quantized image ``q``."""
        codes = local_binary_pattern(q, P, R, self.method).astype(np.int64).ravel()
        nb = n_bins(self.method, P)
        if self.method == "ror":
            table = ror_codes(P)
            idx = np.searchsorted(table, codes)
            codes = idx  # every ror code is in the table (tested)
        hist = np.bincount(codes, minlength=nb).astype(np.float64)
        return hist / codes.size

    def _compute_gray(self, gray: np.ndarray) -> np.ndarray:
        q = quantize(gray, self.levels)
        return np.concatenate([self.histogram(q, P, R) for P, R in self.points_radii])
