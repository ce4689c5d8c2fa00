"""First-order (intensity histogram) statistics, following pyradiomics' ``firstorder`` class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from featx.handcrafted.base import HandcraftedSpec, as_int, quantize

#: Output order of the statistics.
STATS = (
    "mean",
    "std",
    "variance",
    "skewness",
    "kurtosis",
    "entropy",
    "uniformity",
    "min",
    "p10",
    "p25",
    "median",
    "p75",
    "p90",
    "max",
    "range",
    "iqr",
    "mad",
    "robust_mad",
    "energy",
    "rms",
)


@dataclass(frozen=True)
class FirstOrderSpec(HandcraftedSpec):
    """20 first-order statistics of the gray values x (in [0, 1]) of all N pixels.

    As in pyradiomics' first-order features (with no voxel-array shift, intensities in [0, 1]):
      - mean, std and variance (population, ddof=0);
      - skewness = m3 / m2**1.5 and kurtosis = m4 / m2**2 with central moments m_k (kurtosis is
        *not* excess: a Gaussian gives 3). For a constant image (m2 = 0) both are defined as 0,
        as pyradiomics does for flat regions;
      - entropy = -sum p_i log2 p_i and uniformity = sum p_i**2 over a histogram of ``bins``
        bins. Deviation from pyradiomics: the bins are fixed over [0, 1] (the module's
        quantization rule, level = min(floor(x * bins), bins - 1)) instead of spanning each
        image's own min..max, so values compare across images;
      - min, 10th, 25th, 50th (median), 75th and 90th percentile (numpy linear interpolation),
        max, range = max - min, iqr = p75 - p25;
      - mad = mean |x - mean|; robust_mad = the same over the pixels with p10 <= x <= p90,
        about their own mean;
      - energy = sum x**2 (a sum over pixels, like pyradiomics: it grows with the pixel count),
        rms = sqrt(mean x**2). pyradiomics' "TotalEnergy" (energy x voxel volume) is left out,
        pixels here have no physical size.

    Defaults: bins 64.
    """

    bins: int = 64

    descriptor: ClassVar[str] = "firstorder"
    ABBREV: ClassVar[dict[str, str]] = {"bins": "b"}

    def __post_init__(self) -> None:
        object.__setattr__(self, "bins", as_int(self.descriptor, "bins", self.bins, 2, 65536))

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["stats"] = list(STATS)
        cfg["quantization"] = "min(floor(x*bins), bins-1) over [0,1] (entropy, uniformity)"
        return cfg

    def feature_names(self) -> list[str]:
        return [f"{self.name}_{s}" for s in STATS]

    def _compute_gray(self, gray: np.ndarray) -> np.ndarray:
        x = np.asarray(gray, dtype=np.float64).ravel()
        n = x.size
        mean = x.mean()
        dev = x - mean
        dev2 = dev * dev
        m2 = dev2.mean()
        lo, hi = float(x.min()), float(x.max())
        if hi == lo:  # flat image: moments ratios undefined -> 0 (pyradiomics' convention)
            skew = kurt = 0.0
            m2 = 0.0
        else:
            skew = float(np.mean(dev2 * dev) / m2**1.5)
            kurt = float(np.mean(dev2 * dev2) / m2**2)
        counts = np.bincount(quantize(x, self.bins).astype(np.int64), minlength=self.bins)
        p = counts[counts > 0] / n
        entropy = float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0 for flat images
        uniformity = float((p**2).sum())
        p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
        inner = x[(x >= p10) & (x <= p90)]
        robust_mad = float(np.mean(np.abs(inner - inner.mean()))) if inner.size else 0.0
        energy = float(np.dot(x, x))
        return np.array(
            [
                mean,
                np.sqrt(m2),
                m2,
                skew,
                kurt,
                entropy,
                uniformity,
                lo,
                p10,
                p25,
                p50,
                p75,
                p90,
                hi,
                hi - lo,
                p75 - p25,
                np.mean(np.abs(dev)),
                robust_mad,
                energy,
                np.sqrt(energy / n),
            ],
            dtype=np.float64,
        )
