"""``DeepFeatures``: the extraction stage as a scikit-learn transformer.

Images in (file paths, or arrays), frozen-backbone features out. It runs the same preprocessing,
precision and model call as ``featx extract``, so a pipeline built on it gives the same features
as the cache; with ``cache=PATH`` and file paths it goes through the cache itself (computing only
what is missing).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


def _is_paths(X) -> bool:
    if isinstance(X, (str, Path)):
        return False
    if isinstance(X, np.ndarray) and X.dtype.kind in "US":
        return True
    try:
        return len(X) > 0 and all(isinstance(x, (str, Path)) for x in X)
    except TypeError:
        return False


class DeepFeatures(TransformerMixin, BaseEstimator):
    """Frozen pretrained CNN features of images, as a scikit-learn transformer.

    Parameters
    ----------
    backbone : str, default="efficientnet_lite0"
        A featx alias, torchvision classification model or timm model (``timm/<name>`` to force).
    layers : list of str or None
        Taps (``None`` = the penultimate pooled vector); several taps are concatenated.
    pooling : {"avg", "max", "gem", "cls", "cls+avg"}  (cls and cls+avg: transformers only)
    weights : None, "none" or path
        None: pretrained (offline package, or the library's download); a path: a local state dict;
        "none": seeded random init.
    device, precision : str
        As in ``featx extract`` (``auto`` = the fastest the hardware runs natively).
    batch_size : int
    cache : None or path
        With file paths as X, extract through this HDF5 cache (reuse and resume included).
    intensity : {"auto", "dtype", "minmax"}
        How integer arrays deeper than 8 bits become [0, 1] (uint8 is always /255).

    ``fit`` learns nothing from the data: it builds the network and records ``n_features_out_``.
    X is a list of image file paths, an array ``(n, H, W)`` / ``(n, H, W, 3)``, or a list of
    2-D / 3-D arrays (uint8, uint16 or float in [0, 1]).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", layers=None, pooling: str = "avg", weights=None,
                 device: str = "auto", precision: str = "auto", batch_size: int = 32, cache=None,
                 intensity: str = "auto"):
        self.backbone = backbone
        self.layers = layers
        self.pooling = pooling
        self.weights = weights
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.cache = cache
        self.intensity = intensity

    # the built network is a cache of the parameters, not state: never pickled
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_net", None)
        return state

    def _network(self):
        """The prepared model (featx.backbones.inference.PreparedModel), built once."""
        net = getattr(self, "_net", None)
        if net is None:
            from featx.backbones.inference import prepare_model
            from featx.runtime import make_runtime
            net = self._net = prepare_model(self.backbone, make_runtime(self.device, self.precision),
                                            weights=self.weights, layers=self.layers, pooling=self.pooling)
        return net

    def fit(self, X: Any = None, y: Any = None) -> "DeepFeatures":
        net = self._network()
        bb, runtime = net.backbone, net.runtime
        self.n_features_out_ = int(sum(bb.dims.values()))
        self.taps_ = list(bb.taps)
        self.precision_ = runtime.precision
        self.weights_sha256_ = bb.weights.sha256
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        if _is_paths(X):
            return self._transform_paths([str(x) for x in X])
        from featx.handcrafted.base import unit_float
        from featx.handcrafted.estimators import as_image_list
        from featx.sources.images import scale_to_unit
        images = []
        for k, im in enumerate(as_image_list(X)):
            im = np.asarray(im)
            if im.ndim == 3 and im.shape[2] == 1:
                im = im[..., 0]
            # float images are taken as [0, 1] and refused otherwise, not fed to the network as they are
            images.append(unit_float(im.astype(np.float32, copy=False), f"image {k}") if im.dtype.kind == "f"
                          else scale_to_unit(im, self.intensity))
        return self._compute(images)

    def _compute(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        from featx.backbones.preprocess import preprocess
        from featx.backbones.inference import run_model
        net = self._network()
        bb = net.backbone
        out = []
        for a in range(0, len(images), self.batch_size):
            x = torch.stack([preprocess(im, bb.preprocess) for im in images[a:a + self.batch_size]])
            feats = run_model(net.model, x, net.runtime)
            out.append(np.concatenate([feats[t] for t in bb.taps], axis=1))
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    def _transform_paths(self, paths: list[str]) -> np.ndarray:
        if self.cache is None:
            from featx.errors import DecodeError
            from featx.sources import ReadOptions, scan_sources
            opts = ReadOptions(intensity=self.intensity, draft_size=self._network().backbone.preprocess.resize_size)
            images = []
            for p in paths:
                res = scan_sources([p])
                if not res.samples:
                    raise DecodeError(res.failures[0].reason if res.failures else "no image", p)
                images.append(res.samples[0].load(opts))
            return self._compute(images)
        from featx.cache import load_features
        from featx.errors import DecodeError
        from featx.extraction import extract
        from featx.sources import scan_sources
        summary = extract(paths, self.cache, backbones=[self.backbone], layers=self.layers, pooling=self.pooling,
                          weights=self.weights, device=self.device, precision=self.precision,
                          batch_size=self.batch_size, intensity=self.intensity, concat_layers=True,
                          progress=False, workers=0)
        table = load_features(self.cache, summary.sets)
        row = {i: k for k, i in enumerate(table.ids)}
        ids = [s.id for s in scan_sources(paths).samples]
        missing = [p for p, i in zip(paths, ids) if i not in row]
        if missing or len(ids) != len(paths):
            raise DecodeError("could not be extracted (see the cache's /failures)", missing[0] if missing else paths[0])
        return table.X[[row[i] for i in ids]]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{self.backbone}_{k}" for k in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags
