"""scikit-learn transformers over the handcrafted specs: images in, feature matrix out.

``X`` is a batch of images: an array ``(n, H, W)`` (gray) or ``(n, H, W, 3)`` (RGB), or a list
(or 1-D object array) of 2-D / 3-D arrays that may differ in size. uint8 / uint16 (any integer)
images are scaled to [0, 1] by their dtype's maximum; float images are taken as already in
[0, 1] (see :func:`featx.handcrafted.base.to_gray`). A 2-D numeric array ``(n, k)`` is *not* a
batch of images and is rejected with :class:`~featx.handcrafted.base.ImageInputError` (a
``ValueError``): an image transformer cannot guess the image shape from a flat row.

The transformers are stateless (like ``Normalizer``): ``fit`` only checks the parameters and the
input, and records ``spec_`` and ``n_output_features_``; ``transform`` works without it. Each is a
thin door onto the spec classes, which do all the computing. For example::

    feats = make_union(HOGFeatures(), LBPFeatures(points_radii=[(8, 1)]), n_jobs=None)
    model = make_pipeline(feats, StandardScaler(), SVC()).fit(images, labels)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin

from featx.handcrafted.base import HandcraftedSpec, ImageInputError
from featx.handcrafted.firstorder import FirstOrderSpec
from featx.handcrafted.glcm import DEFAULT_PROPS, GLCMSpec
from featx.handcrafted.hog import HOGSpec
from featx.handcrafted.lbp import LBPSpec


def as_image_list(X: Any) -> list[np.ndarray]:
    """Split a batch of images into a list of arrays (no copies for ndarray input)."""
    if isinstance(X, (str, bytes)) or X is None:
        raise ImageInputError(f"expected a batch of images, got {type(X).__name__}")
    if hasattr(X, "iloc") or hasattr(X, "columns"):  # pandas: a table, not images
        raise ImageInputError(
            "expected a batch of images; got a pandas object (a table of numbers is not images)"
        )
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise ImageInputError("expected a batch of images; got a sparse matrix")
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 3 or (X.ndim == 4 and X.shape[3] in (1, 3)):
            images = list(X)
        elif X.ndim == 2:
            raise ImageInputError(
                f"a 2-D array of shape {X.shape} is not a batch of images; pass (n, H, W), "
                "(n, H, W, 3) or a list of 2-D/3-D images"
            )
        else:
            raise ImageInputError(
                f"an array of shape {X.shape} is not a batch of images; pass (n, H, W), "
                "(n, H, W, 3) or a list of 2-D/3-D images"
            )
    else:
        if isinstance(X, np.ndarray) and X.ndim != 1:
            raise ImageInputError(f"an object array of shape {X.shape} is not a batch of images")
        try:
            images = [np.asarray(im) for im in X]
        except TypeError:
            raise ImageInputError(f"expected a batch of images, got {type(X).__name__}")
        for i, im in enumerate(images):
            if not (im.ndim == 2 or (im.ndim == 3 and im.shape[2] in (1, 3))):
                raise ImageInputError(
                    f"image {i} has shape {im.shape}; expected (H, W) or (H, W, 3)"
                )
    if len(images) == 0:
        raise ImageInputError("got 0 images; need at least 1")
    return images


class _HandcraftedTransformer(TransformerMixin, BaseEstimator):
    """Common code; subclasses set ``_spec_class`` and define ``__init__`` with its parameters."""

    _spec_class: type[HandcraftedSpec]

    def _make_spec(self) -> HandcraftedSpec:
        params = self.get_params(deep=False)
        params.pop("n_jobs", None)
        return self._spec_class(**params)

    def fit(self, X: Any, y: Any = None) -> _HandcraftedTransformer:
        """Check the parameters and ``X``; nothing is learned from the data."""
        spec = self._make_spec()
        as_image_list(X)
        self.spec_ = spec
        self.n_output_features_ = spec.n_features
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Images -> float32 array ``(n_images, n_output_features)``."""
        spec = self._make_spec()
        images = as_image_list(X)
        if self.n_jobs in (None, 1) or len(images) == 1:
            rows = [spec.compute(im) for im in images]
        else:
            rows = Parallel(n_jobs=self.n_jobs)(delayed(spec.compute)(im) for im in images)
        return np.stack(rows).astype(np.float32, copy=False)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names ``<set name>_<index or label>``, e.g. ``lbp_P8_R1_3``; input names are ignored."""
        return np.asarray(self._make_spec().feature_names(), dtype=object)

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = []  # always float32 out
        return tags


class HOGFeatures(_HandcraftedTransformer):
    """HOG vectors of images; parameters as :class:`featx.handcrafted.HOGSpec`.

    ``n_jobs``: joblib workers over images (None or 1: in this process).
    """

    _spec_class = HOGSpec

    def __init__(
        self,
        size: Sequence[int] | int = (128, 128),
        orientations: int = 9,
        pixels_per_cell: Sequence[int] | int = (16, 16),
        cells_per_block: Sequence[int] | int = (2, 2),
        block_norm: str = "L2-Hys",
        transform_sqrt: bool = False,
        anti_aliasing: bool = True,
        order: int = 1,
        n_jobs: int | None = None,
    ):
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.transform_sqrt = transform_sqrt
        self.anti_aliasing = anti_aliasing
        self.order = order
        self.n_jobs = n_jobs


class LBPFeatures(_HandcraftedTransformer):
    """Concatenated LBP histograms; parameters as :class:`featx.handcrafted.LBPSpec`."""

    _spec_class = LBPSpec

    def __init__(
        self,
        points_radii: Sequence[tuple[int, float]] | None = None,
        method: str = "uniform",
        levels: int = 256,
        n_jobs: int | None = None,
    ):
        self.points_radii = points_radii
        self.method = method
        self.levels = levels
        self.n_jobs = n_jobs


class GLCMFeatures(_HandcraftedTransformer):
    """GLCM (Haralick) properties; parameters as :class:`featx.handcrafted.GLCMSpec`."""

    _spec_class = GLCMSpec

    def __init__(
        self,
        levels: int = 64,
        distances: Sequence[int] = (1, 2, 3),
        angles_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
        props: Sequence[str] = DEFAULT_PROPS,
        symmetric: bool = True,
        angle_mode: str = "mean",
        n_jobs: int | None = None,
    ):
        self.levels = levels
        self.distances = distances
        self.angles_deg = angles_deg
        self.props = props
        self.symmetric = symmetric
        self.angle_mode = angle_mode
        self.n_jobs = n_jobs


class FirstOrderFeatures(_HandcraftedTransformer):
    """First-order intensity statistics; parameters as :class:`featx.handcrafted.FirstOrderSpec`."""

    _spec_class = FirstOrderSpec

    def __init__(self, bins: int = 64, n_jobs: int | None = None):
        self.bins = bins
        self.n_jobs = n_jobs


__all__ = [
    "FirstOrderFeatures",
    "GLCMFeatures",
    "HOGFeatures",
    "LBPFeatures",
    "as_image_list",
]
