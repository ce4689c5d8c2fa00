"""Gray-level co-occurrence (Haralick) texture properties via :func:`skimage.feature.graycomatrix`
and :func:`skimage.feature.graycoprops`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from skimage.feature import graycomatrix, graycoprops

from featx.errors import FeatxError
from featx.handcrafted.base import HandcraftedSpec, format_value, as_bool, as_choice, as_int, quantize

DEFAULT_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
PROPS = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "energy",
    "correlation",
    "ASM",
    "mean",
    "variance",
    "std",
    "entropy",
)
ANGLE_MODES = ("mean", "all", "mean_range")


@dataclass(frozen=True)
class GLCMSpec(HandcraftedSpec):
    """GLCM properties per distance, averaged over angles by default.

    The gray image is quantized to ``levels`` gray levels by ``min(floor(x * levels),
    levels - 1)`` over the fixed range [0, 1] (default 64; 16-bit data is binned from its full
    range, never truncated to 8 bits first). One co-occurrence matrix per (distance, angle) is
    built with ``graycomatrix(q, distances, angles, levels, symmetric=symmetric, normed=True)``
    (angles given in degrees, converted to radians; 0 = horizontal neighbour) and each property
    of ``props`` is read with ``graycoprops``.

    ``angle_mode`` decides the layout, prop-major then distance:
      - ``"mean"`` (default): each prop per distance, averaged over the angles, which makes the
        values (approximately) rotation invariant -> len(props) * len(distances) values
        (6 x 3 = 18 at defaults);
      - ``"all"``: each prop per distance x angle -> len(props) * len(distances) * len(angles);
      - ``"mean_range"``: the mean over angles and then the range (max - min) over angles, the
        classic Haralick pairing -> 2 * len(props) * len(distances).

    Degenerate images: for a constant image (or one where every co-occurring pair is equal)
    the standard deviations of the GLCM marginals are 0 and Pearson correlation is undefined;
    it is defined as 1.0 (perfectly predictable neighbour, as skimage does). When a distance
    does not fit in the image (e.g. a 1x1 or 2x2 image with distance 3) the matrix is empty:
    every prop is then 0 except correlation, 1.0. Any other non-finite value would be an error.

    Defaults: levels 64, distances (1, 2, 3), angles (0, 45, 90, 135) degrees, symmetric,
    props contrast, dissimilarity, homogeneity, energy, correlation, ASM, angle_mode "mean".
    """

    levels: int = 64
    distances: tuple[int, ...] = (1, 2, 3)
    angles_deg: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
    props: tuple[str, ...] = DEFAULT_PROPS
    symmetric: bool = True
    angle_mode: str = "mean"

    descriptor: ClassVar[str] = "glcm"
    ABBREV: ClassVar[dict[str, str]] = {
        "levels": "q",
        "distances": "d",
        "angles_deg": "a",
        "props": "p",
        "symmetric": "sym",
        "angle_mode": "am",
    }

    def __post_init__(self) -> None:
        d = self.descriptor
        set_ = object.__setattr__
        set_(self, "levels", as_int(d, "levels", self.levels, 2, 256))
        set_(self, "distances", tuple(as_int(d, "distances", v, 1) for v in _seq(self.distances, "distances")))
        angles = []
        for a in _seq(self.angles_deg, "angles_deg"):
            try:
                a = float(a)
            except (TypeError, ValueError):
                raise FeatxError(f"glcm: angle {a!r} is invalid; expected degrees as a number")
            if not np.isfinite(a):
                raise FeatxError(f"glcm: angle {a!r} is invalid; expected degrees as a number")
            angles.append(a)
        set_(self, "angles_deg", tuple(angles))
        props = tuple(as_choice(d, "props", p, PROPS) for p in _seq(self.props, "props"))
        set_(self, "props", props)
        set_(self, "symmetric", as_bool(d, "symmetric", self.symmetric))
        set_(self, "angle_mode", as_choice(d, "angle_mode", self.angle_mode, ANGLE_MODES))
        for field in ("distances", "angles_deg", "props"):
            vals = getattr(self, field)
            if len(set(vals)) != len(vals):
                raise FeatxError(f"glcm: {field}={vals!r} repeats a value")

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["normed"] = True
        cfg["quantization"] = "min(floor(x*levels), levels-1) over [0,1]"
        cfg["degenerate"] = "correlation=1 when undefined; empty GLCM -> 0 (correlation 1)"
        return cfg

    def feature_names(self) -> list[str]:
        names = []
        for p in self.props:
            for dist in self.distances:
                if self.angle_mode == "all":
                    names += [f"{self.name}_{p}_d{dist}_a{format_value(a)}" for a in self.angles_deg]
                elif self.angle_mode == "mean":
                    names.append(f"{self.name}_{p}_d{dist}_mean")
                else:
                    names += [f"{self.name}_{p}_d{dist}_mean", f"{self.name}_{p}_d{dist}_range"]
        return names

    def matrix(self, gray: np.ndarray) -> np.ndarray:
        """The normalized co-occurrence matrices, shape (levels, levels, n_dist, n_angle)."""
        q = quantize(gray, self.levels)
        return graycomatrix(
            q,
            distances=list(self.distances),
            angles=list(np.deg2rad(self.angles_deg)),
            levels=self.levels,
            symmetric=self.symmetric,
            normed=True,
        )

    def _compute_gray(self, gray: np.ndarray) -> np.ndarray:
        P = self.matrix(gray)
        out = []
        for p in self.props:
            vals = np.asarray(graycoprops(P, p), dtype=np.float64)  # (n_dist, n_angle)
            if p == "correlation":
                vals = np.where(np.isfinite(vals), vals, 1.0)
            if self.angle_mode == "all":
                out.append(vals.ravel())
            elif self.angle_mode == "mean":
                out.append(vals.mean(axis=1))
            else:
                out.append(np.stack([vals.mean(axis=1), np.ptp(vals, axis=1)], axis=1).ravel())
        return np.concatenate(out)


def _seq(value: Any, field: str) -> tuple:
    if isinstance(value, (str, bytes)):
        value = (value,)
    elif not hasattr(value, "__len__"):
        value = (value,)
    if len(value) == 0:
        raise FeatxError(f"glcm: {field} is empty")
    return tuple(value)
