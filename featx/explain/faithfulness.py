"""Is a saliency map faithful to the model? Two checks.

* Deletion (Petsiuk et al. 2018): replace the most salient pixels first, in ``steps`` equal steps,
  by a constant (each image's mean intensity, :func:`deletion_baseline`, as RISE deletes to a
  constant) and record the target probability after each step; the area under that curve
  (x from 0 to 1) is low when the map finds what the model uses. Compared with the same curve for
  random maps of the same spatial scale (:func:`random_maps`). Each image's curve is normalised
  between its original score (1) and its fully deleted score (0), clipped to [0, 1]
  (:func:`normalised_curves`), so
  images weigh equally; an image whose score does not fall by at least ``MIN_DROP`` when all of it
  is deleted is skipped (the model gives a blank image that class: nothing in the image carries
  it, so deletion cannot measure a map of it) and counted in ``n_skipped``. A blur is not used as
  the deletion baseline: on ultrasound it keeps a dark lesion dark, i.e. keeps the evidence.
* Model randomisation (Adebayo et al. 2018): maps computed with the backbones re-initialised must
  differ from the real maps; the Spearman rank correlation between the two should be low.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

DELETION_STEPS = 8
MIN_DROP = 0.05
DELETION_BASELINE = "constant: each image's mean intensity"


def deletion_baseline(x: torch.Tensor) -> torch.Tensor:
    """What deleted pixels become: each image (and channel) filled with its own mean intensity."""
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).contiguous()


def as_probabilities(scores: np.ndarray, proba: bool) -> np.ndarray:
    """Class scores as probabilities: unchanged when they are, else a softmax of the decision scores."""
    if proba:
        return scores
    z = scores - scores.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def deletion_images(x: torch.Tensor, maps: np.ndarray, baseline: torch.Tensor, steps: int) -> torch.Tensor:
    """(B * (steps + 1), C, H, W): for each image, the images with the top k/steps of pixels (by
    ``maps``, ties broken by position) replaced by ``baseline``, k = 0..steps."""
    b, c, h, w = x.shape
    n = h * w
    out = []
    for i in range(b):
        order = np.argsort(-maps[i].reshape(-1), kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        for k in range(steps + 1):
            mask = torch.from_numpy((rank < round(n * k / steps)).reshape(1, h, w))
            out.append(torch.where(mask, baseline[i], x[i]))
    return torch.stack(out)


def deletion_curves(score_fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, maps: np.ndarray,
                    targets: list[int], baseline: torch.Tensor, steps: int = DELETION_STEPS) -> np.ndarray:
    """(B, steps + 1) target scores along the deletion path of each image."""
    scores = score_fn(deletion_images(x, maps, baseline, steps))
    scores = scores.reshape(x.shape[0], steps + 1, -1)
    return np.stack([scores[i, :, t] for i, t in enumerate(targets)])


def normalised_curves(curves: np.ndarray, *others: np.ndarray, min_drop: float = MIN_DROP):
    """(kept, curves normalised, others normalised): each curve mapped linearly so that its first
    point (the original image) is 1 and its last (all deleted) is 0, then clipped to [0, 1], for
    the images whose score falls by at least ``min_drop``; ``others`` (e.g. random-map curves of
    the same images, which share both end points) are mapped with the same image's end points.
    Clipping: a partly deleted image can score below the blank one (a calibrated head's
    probability has a floor); below 0 is "all evidence gone" and must not earn extra credit."""
    drop = curves[:, 0] - curves[:, -1]
    kept = drop >= min_drop
    end, span = curves[kept, -1:], drop[kept, None]
    return kept, *[np.clip((c[kept] - end) / span, 0.0, 1.0) for c in (curves, *others)]


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each curve over x in [0, 1] (trapezoids)."""
    steps = curves.shape[1] - 1
    return (curves[:, :-1] + curves[:, 1:]).sum(1) / (2.0 * steps)


RANDOM_GRID = 7


def random_maps(shape: tuple[int, ...], seed: int = 0, grid: int = RANDOM_GRID) -> np.ndarray:
    """(B, H, W) random maps with the spatial scale of a saliency map: uniform noise on a
    ``grid`` x ``grid`` lattice (Grad-CAM's 7 x 7 for a 224 px input; occlusion's windows are a
    quarter of the image), upsampled bilinearly. Pixel-level noise would scatter the deletions,
    which hurts a CNN more than any contiguous region and flatters every map."""
    import torch.nn.functional as F

    b, h, w = shape
    low = torch.from_numpy(np.random.default_rng(seed).random((b, 1, grid, grid)).astype(np.float32))
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps; 0 when either is constant (a constant map ranks nothing)."""
    a, b = a.reshape(-1), b.reshape(-1)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def summary(curves: np.ndarray, random_curves: np.ndarray, rank_corr: np.ndarray, steps: int) -> dict:
    """The faithfulness.json block from the raw deletion curves (target probability per step) of
    the maps and of random maps: normalised AUC means over the kept images, then per-image values."""
    kept, norm, rnorm = normalised_curves(curves, random_curves)
    deletion_auc, random_auc = curve_auc(norm), curve_auc(rnorm)
    mean = float(np.mean(deletion_auc)) if len(deletion_auc) else None
    rand = float(np.mean(random_auc)) if len(random_auc) else None
    return {
        "deletion_auc": mean,
        "random_deletion_auc": rand,
        "deletion_vs_random": (1.0 - mean / rand) if mean is not None and rand else None,
        "sanity_rank_corr": float(np.mean(rank_corr)) if len(rank_corr) else None,
        "n_images": int(len(curves)),
        "n_scored": int(kept.sum()),
        "n_skipped": int((~kept).sum()),
        "skipped_because": f"the target probability falls by less than {MIN_DROP} when the whole image is deleted",
        "deletion_steps": steps,
        "deletion_baseline": DELETION_BASELINE,
        "score": "target probability, each image's curve normalised from 1 (original) to 0 (all deleted), clipped to [0, 1]",
        "raw_deletion_auc": float(curve_auc(curves).mean()) if len(curves) else None,
        "raw_random_deletion_auc": float(curve_auc(random_curves).mean()) if len(curves) else None,
        "random_maps": f"uniform noise on a {RANDOM_GRID}x{RANDOM_GRID} grid, upsampled",
        "randomisation": "all backbone weights re-initialised (seeded); head unchanged",
        "per_image": {"scored": [bool(v) for v in kept],
                      "deletion_auc": [float(v) for v in deletion_auc],
                      "random_deletion_auc": [float(v) for v in random_auc],
                      "sanity_rank_corr": [float(v) for v in rank_corr]},
    }
