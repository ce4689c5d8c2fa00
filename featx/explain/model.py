"""A saved model as functions of the image: differentiable (torch, for gradients) and exact (sklearn).

Images enter as ``(B, C, H, W)`` float tensors in [0, 1] at their decoded resolution (C = 1 for
gray, 3 for colour), so gradients and maps come out at input resolution; each backbone's own
preprocessing (resize, crop, normalisation) runs inside, differentiably. Handcrafted sets have no
spatial gradient: the differentiable model takes their values as constants (``hand``), while
:class:`ImageScorer` recomputes them on every (perturbed) image.

:func:`prepare_backbones` is the one adapter from stored set configs to built networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from featx.backbones.preprocess import preprocess_batch  # noqa: F401  (the one preprocessing, differentiable)
from featx.bundle import ModelBundle
from featx.errors import FeatxError
from featx.explain.mirror import TorchHead
from featx.sources import ReadOptions


@dataclass
class BackboneUse:
    """One built backbone and the model's feature sets it produces (set name -> its taps)."""

    backbone: object                  # featx.backbones.registry.Backbone
    sets: dict[str, list[str]]
    read: ReadOptions
    notes: list[str] = field(default_factory=list)


@dataclass
class HandUse:
    """The model's handcrafted sets (set name -> spec) and how their images are read."""

    specs: dict[str, object]
    read: ReadOptions


def prepare_backbones(set_configs: dict[str, dict], random_weights: bool = False) -> tuple[list[BackboneUse], HandUse]:
    """Build the networks (fp32, eval, frozen) and handcrafted specs that recreate ``set_configs``.

    ``random_weights``: the same architectures re-initialised (seeded), for the model-randomisation
    sanity check. The adapter between stored configs and featx's extraction code; nothing else in
    featx.explain builds a backbone.
    """
    from featx.backbones.registry import build
    from featx.setconfig import extraction_calls
    from featx.handcrafted import spec_from_config

    deep = {n: c for n, c in set_configs.items() if c.get("kind") != "handcrafted"}
    hand = {n: c for n, c in set_configs.items() if c.get("kind") == "handcrafted"}
    uses: list[BackboneUse] = []
    for call in extraction_calls(deep):
        name = call["backbones"][0]
        bb = build(name, weights="none" if random_weights else call["weights"], layers=call["layers"],
                   pooling=call["pooling"])
        draft = bb.preprocess.resize_size if call.get("jpeg_draft", True) else None
        read = ReadOptions(window=call.get("window"), intensity=call.get("intensity", "auto"), draft_size=draft)
        sets = {}
        notes = []
        for s, cfg in deep.items():
            taps = list(cfg.get("taps") or ["head"])
            if cfg["backbone"] == name and cfg.get("pooling", "avg") == call["pooling"] \
                    and all(t in bb.taps for t in taps) and s not in {x for u in uses for x in u.sets}:
                sets[s] = taps
                want = (cfg.get("weights") or {}).get("sha256")
                if not random_weights and want and want != bb.weights.sha256:
                    notes.append(f"set '{s}': the weights found here differ from the model's (sha256 "
                                 f"{bb.weights.sha256[:12]}… vs {str(want)[:12]}…)")
        uses.append(BackboneUse(bb, sets, read, notes))
    specs = {n: spec_from_config(c) for n, c in hand.items()}
    read = ReadOptions()
    if hand:
        call = extraction_calls(hand)[0]
        read = ReadOptions(window=call.get("window"), intensity=call.get("intensity", "auto"))
    return uses, HandUse(specs, read)


def set_slices(bundle: ModelBundle) -> dict[str, slice]:
    """Columns of each of the model's sets in its input matrix."""
    out, start = {}, 0
    for s in bundle.feature_sets:
        out[s] = slice(start, start + int(bundle.set_dims[s]))
        start += int(bundle.set_dims[s])
    return out


def deep_features(uses: list[BackboneUse], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every deep set's (B, D) features of images ``x`` (graph kept: call under no_grad if unwanted)."""
    out = {}
    for use in uses:
        feats = use.backbone.model(preprocess_batch(x, use.backbone.preprocess))
        for s, taps in use.sets.items():
            out[s] = torch.cat([feats[t] for t in taps], dim=1)
    return out


def hand_features(hand: HandUse, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every handcrafted set's (B, D) features of images (B, C, H, W) in [0, 1]."""
    if not hand.specs:
        return {}
    from featx.handcrafted import compute_all

    specs = list(hand.specs.values())
    rows = []
    for im in images:
        arr = im[0] if im.shape[0] == 1 else np.transpose(im, (1, 2, 0))
        rows.append(compute_all(specs, np.ascontiguousarray(arr, dtype=np.float32)))
    return {s: np.stack([np.asarray(r[spec.name], np.float32) for r in rows]) for s, spec in hand.specs.items()}


class DifferentiableModel(nn.Module):
    """Image tensor -> class scores, end to end in torch: backbones (fp32) -> the mirrored pipeline.

    ``forward(x, hand=None)``: ``x`` (B, C, H, W) in [0, 1]; ``hand`` the handcrafted sets' values
    as one (B or 1, D_hand) tensor in set order (required when the model has handcrafted sets).
    ``output="decision"`` returns decision scores (one column per class), ``"proba"`` what
    :class:`~featx.explain.mirror.TorchHead` returns. Raises NotMirrorable for a head without an
    exact mirror. Columns follow ``bundle.classes``.
    """

    def __init__(self, bundle: ModelBundle, output: str = "decision", uses=None, hand_use=None,
                 head: TorchHead | None = None):
        super().__init__()
        if output not in ("decision", "proba"):
            raise FeatxError(f"output must be decision or proba, not {output!r}")
        self.head = (head or TorchHead.from_pipeline(bundle.pipeline)).float()
        if uses is None:
            uses, hand_use = prepare_backbones(bundle.set_configs)
        self.uses = uses
        self.hand_use = hand_use or HandUse({}, ReadOptions())
        self.backbones = nn.ModuleList([u.backbone.model for u in uses])
        self.feature_sets = list(bundle.feature_sets)
        self.hand_widths = {s: int(bundle.set_dims[s]) for s in self.feature_sets if s in self.hand_use.specs}
        self.output = output

    def features(self, x: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        feats = deep_features(self.uses, x)
        if self.hand_use.specs:
            if hand is None:
                raise FeatxError("this model has handcrafted sets: pass their values as hand=")
            hand = hand.to(x.dtype).expand(x.shape[0], -1)
            start = 0
            for s, width in self.hand_widths.items():
                feats[s] = hand[:, start:start + width]
                start += width
        return torch.cat([feats[s] for s in self.feature_sets], dim=1)

    def forward(self, x: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        z = self.features(x, hand)
        return self.head.decision(z) if self.output == "decision" else self.head(z)


class ImageScorer:
    """Images -> the saved pipeline's own class scores (predict_proba, else decision), no gradients:
    the exact model that occlusion and the faithfulness metrics query. Columns follow ``bundle.classes``."""

    def __init__(self, bundle: ModelBundle, uses: list[BackboneUse], hand_use: HandUse, batch_size: int = 64):
        self.bundle = bundle
        self.uses = uses
        self.hand_use = hand_use
        self.batch_size = batch_size
        self.proba = hasattr(bundle.pipeline, "predict_proba")

    def features(self, x: torch.Tensor) -> np.ndarray:
        rows = []
        for start in range(0, x.shape[0], self.batch_size):
            xb = x[start:start + self.batch_size].float()
            with torch.inference_mode():
                deep = {k: v.numpy() for k, v in deep_features(self.uses, xb).items()}
            deep.update(hand_features(self.hand_use, xb.numpy()))
            rows.append(np.concatenate([deep[s] for s in self.bundle.feature_sets], axis=1))
        return np.concatenate(rows, axis=0).astype(np.float64)

    def scores_of_features(self, X: np.ndarray) -> np.ndarray:
        pipe = self.bundle.pipeline
        if self.proba:
            return pipe.predict_proba(X)
        d = pipe.decision_function(X)
        return np.column_stack([-d, d]) if d.ndim == 1 else d

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return self.scores_of_features(self.features(x))
