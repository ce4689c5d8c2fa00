"""Is a saliency map faithful to the model? Two checks.

* Deletion (Petsiuk et al. 2018): replace the most salient pixels first, in ``steps`` equal steps,
  by the blurred image and record the target score after each step; the area under that curve
  (x from 0 to 1) is low when the map finds what the model uses. Compared with the same curve for
  random maps of the same spatial scale (:func:`random_maps`).
* Model randomisation (Adebayo et al. 2018): maps computed with the backbones re-initialised must
  differ from the real maps; the Spearman rank correlation between the two should be low.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

DELETION_STEPS = 8


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


def summary(deletion_auc: np.ndarray, random_auc: np.ndarray, rank_corr: np.ndarray, steps: int) -> dict:
    """The faithfulness.json block: means over images, then the per-image values."""
    mean = float(np.mean(deletion_auc)) if len(deletion_auc) else None
    rand = float(np.mean(random_auc)) if len(random_auc) else None
    return {
        "deletion_auc": mean,
        "random_deletion_auc": rand,
        "deletion_vs_random": (1.0 - mean / rand) if mean is not None and rand else None,
        "sanity_rank_corr": float(np.mean(rank_corr)) if len(rank_corr) else None,
        "n_images": int(len(deletion_auc)),
        "deletion_steps": steps,
        "deletion_baseline": "gaussian blur, sigma = larger side / 8",
        "random_maps": f"uniform noise on a {RANDOM_GRID}x{RANDOM_GRID} grid, upsampled",
        "randomisation": "all backbone weights re-initialised (seeded); head unchanged",
        "per_image": {"deletion_auc": [float(v) for v in deletion_auc],
                      "random_deletion_auc": [float(v) for v in random_auc],
                      "sanity_rank_corr": [float(v) for v in rank_corr]},
    }
