"""Histogram of oriented gradients (Dalal & Triggs 2005) via :func:`skimage.feature.hog`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from skimage.feature import hog as sk_hog
from skimage.transform import resize

from featx.errors import FeatxError
from featx.handcrafted.base import (
    HandcraftedSpec,
    as_bool,
    as_choice,
    as_int,
    as_pair,
)

BLOCK_NORMS = ("L2-Hys", "L2", "L1", "L1-sqrt")


@dataclass(frozen=True)
class HOGSpec(HandcraftedSpec):
    """HOG of the gray image after a resize to a fixed ``size``.

    Every image is first resized to ``size`` = (rows, cols) with
    ``skimage.transform.resize(gray, size, order=order, mode="reflect",
    anti_aliasing=anti_aliasing)`` (bilinear and Gaussian anti-aliasing when shrinking by
    default), so vectors have one length whatever the input size (a 1x1 image gives a constant
    128x128 image and an all-zero vector; a 4000x4000 one is shrunk first). Then
    ``skimage.feature.hog(resized, orientations, pixels_per_cell, cells_per_block, block_norm,
    transform_sqrt=transform_sqrt, feature_vector=True)``.

    Defaults: size (128, 128), 9 orientations, 16x16-pixel cells, 2x2-cell blocks, L2-Hys
    -> 7 x 7 blocks x 4 cells x 9 bins = 1764 values.
    """

    size: tuple[int, int] = (128, 128)
    orientations: int = 9
    pixels_per_cell: tuple[int, int] = (16, 16)
    cells_per_block: tuple[int, int] = (2, 2)
    block_norm: str = "L2-Hys"
    transform_sqrt: bool = False
    anti_aliasing: bool = True
    order: int = 1

    descriptor: ClassVar[str] = "hog"
    ABBREV: ClassVar[dict[str, str]] = {
        "size": "s",
        "orientations": "o",
        "pixels_per_cell": "ppc",
        "cells_per_block": "cpb",
        "block_norm": "bn",
        "transform_sqrt": "sqrt",
        "anti_aliasing": "aa",
        "order": "io",
    }

    def __post_init__(self) -> None:
        d = self.descriptor
        set_ = object.__setattr__
        set_(self, "size", as_pair(d, "size", self.size, 1))
        set_(self, "orientations", as_int(d, "orientations", self.orientations, 1))
        set_(self, "pixels_per_cell", as_pair(d, "pixels_per_cell", self.pixels_per_cell, 1))
        set_(self, "cells_per_block", as_pair(d, "cells_per_block", self.cells_per_block, 1))
        set_(self, "block_norm", as_choice(d, "block_norm", self.block_norm, BLOCK_NORMS))
        set_(self, "transform_sqrt", as_bool(d, "transform_sqrt", self.transform_sqrt))
        set_(self, "anti_aliasing", as_bool(d, "anti_aliasing", self.anti_aliasing))
        set_(self, "order", as_int(d, "order", self.order, 0, 5))
        br, bc = self._blocks()
        if br < 1 or bc < 1:
            raise FeatxError(
                f"hog: size={self.size} holds no {self.cells_per_block} block of "
                f"{self.pixels_per_cell}-pixel cells; use a larger size or smaller cells"
            )

    def _fmt_param(self, field: str, value: Any) -> str:
        if field in ("size", "pixels_per_cell", "cells_per_block"):
            a, b = value
            return str(a) if a == b else f"{a}x{b}"
        return super()._fmt_param(field, value)

    def _blocks(self) -> tuple[int, int]:
        cells = [s // p for s, p in zip(self.size, self.pixels_per_cell)]
        return (cells[0] - self.cells_per_block[0] + 1, cells[1] - self.cells_per_block[1] + 1)

    @property
    def n_features(self) -> int:
        br, bc = self._blocks()
        return br * bc * self.cells_per_block[0] * self.cells_per_block[1] * self.orientations

    def feature_names(self) -> list[str]:
        return [f"{self.name}_{i}" for i in range(self.n_features)]

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["resize"] = "skimage.transform.resize(mode='reflect', preserve_range=True)"
        return cfg

    def resized(self, gray: np.ndarray) -> np.ndarray:
        """The gray image resized as HOG sees it."""
        return resize(
            gray,
            self.size,
            order=self.order,
            mode="reflect",
            anti_aliasing=self.anti_aliasing,
            preserve_range=True,
        )

    def _compute_gray(self, gray: np.ndarray) -> np.ndarray:
        return sk_hog(
            self.resized(gray),
            orientations=self.orientations,
            pixels_per_cell=self.pixels_per_cell,
            cells_per_block=self.cells_per_block,
            block_norm=self.block_norm,
            transform_sqrt=self.transform_sqrt,
            feature_vector=True,
        )
