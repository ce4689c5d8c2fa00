"""Is a saliency map faithful to the model? Two checks.

* Deletion (Petsiuk et al. 2018): replace the most salient pixels first by a constant (each image's mean intensity, :func:`deletion_baseline`, as RISE deletes to a
  constant) and record the target probability after each step; the area under that curve
  (x = fraction deleted, 0 to 1) is low when the map finds what the model uses. The curve is
  sampled at :data:`DELETION_FRACTIONS`, dense where it falls (1/32 apart up to 1/8), and
  integrated by trapezoids over those fractions: a 28 px image made 12.5 % off-distribution
  already drops an RBF SVM to its intercept, for any map, so equal steps of 1/8 measure every
  map, random or not, at the same floor. Compared with the same curve for
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

DELETION_FRACTIONS = (0.0, 1 / 32, 1 / 16, 3 / 32, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)
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


def deletion_images(x: torch.Tensor, maps: np.ndarray, baseline: torch.Tensor,
                    fractions=DELETION_FRACTIONS) -> torch.Tensor:
    """(B * len(fractions), C, H, W): for each image, the images with the top fraction of pixels
    (by ``maps``, ties broken by position) replaced by ``baseline``, for each of ``fractions``."""
    b, c, h, w = x.shape
    n = h * w
    out = []
    for i in range(b):
        order = np.argsort(-maps[i].reshape(-1), kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        for f in fractions:
            mask = torch.from_numpy((rank < round(n * f)).reshape(1, h, w))
            out.append(torch.where(mask, baseline[i], x[i]))
    return torch.stack(out)


def deletion_curves(score_fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, maps: np.ndarray,
                    targets: list[int], baseline: torch.Tensor, fractions=DELETION_FRACTIONS) -> np.ndarray:
    """(B, len(fractions)) target scores along the deletion path of each image."""
    scores = score_fn(deletion_images(x, maps, baseline, fractions))
    scores = scores.reshape(x.shape[0], len(fractions), -1)
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


def curve_auc(curves: np.ndarray, fractions=DELETION_FRACTIONS) -> np.ndarray:
    """Area under each curve (sampled at ``fractions``) over x in [0, 1], by trapezoids."""
    xs = np.asarray(fractions, dtype=np.float64)
    return ((curves[:, :-1] + curves[:, 1:]) * np.diff(xs)).sum(1) / 2.0


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


def summary(curves: np.ndarray, random_curves: np.ndarray, rank_corr: np.ndarray,
            targets: np.ndarray | None = None, fractions=DELETION_FRACTIONS,
            flat_random_maps: np.ndarray | None = None) -> dict:
    """The faithfulness.json block from the raw deletion curves (target probability at each of
    ``fractions``) of the maps and of random maps: normalised AUC means over the kept images, the
    same per target class (``targets``: each image's target class name), then per-image values.
    ``flat_random_maps``: per image, whether the randomised network's map was constant (its rank
    correlation is 0 by definition; e.g. an RBF SVM gives features far from every support vector
    its intercept, so its gradient is exactly 0), counted so a vacuous pass is visible."""
    kept, norm, rnorm = normalised_curves(curves, random_curves)
    deletion_auc, random_auc = curve_auc(norm, fractions), curve_auc(rnorm, fractions)

    def block(a, r):
        mean = float(np.mean(a)) if len(a) else None
        rand = float(np.mean(r)) if len(r) else None
        return mean, rand, (1.0 - mean / rand) if mean is not None and rand else None

    mean, rand, vs = block(deletion_auc, random_auc)
    by_target = {}
    if targets is not None:
        kept_targets = np.asarray(targets)[kept]
        for t in np.unique(targets):
            sel = kept_targets == t
            m, r, v = block(deletion_auc[sel], random_auc[sel])
            by_target[str(t)] = {"n_scored": int(sel.sum()), "n_images": int((np.asarray(targets) == t).sum()),
                                      "deletion_auc": m, "random_deletion_auc": r, "deletion_vs_random": v}
    return {
        "deletion_auc": mean,
        "random_deletion_auc": rand,
        "deletion_vs_random": vs,
        "sanity_rank_corr": float(np.mean(rank_corr)) if len(rank_corr) else None,
        "n_images": int(len(curves)),
        "n_scored": int(kept.sum()),
        "n_skipped": int((~kept).sum()),
        "skipped_because": f"the target probability falls by less than {MIN_DROP} when the whole image is deleted",
        "n_flat_randomised_maps": None if flat_random_maps is None else int(np.sum(flat_random_maps)),
        "by_target": by_target,
        "deletion_fractions": [float(f) for f in fractions],
        "deletion_baseline": DELETION_BASELINE,
        "score": "target probability, each image's curve normalised from 1 (original) to 0 (all deleted), clipped "
                 "to [0, 1]; AUC by trapezoids over the deleted fraction",
        "raw_deletion_auc": float(curve_auc(curves, fractions).mean()) if len(curves) else None,
        "raw_random_deletion_auc": float(curve_auc(random_curves, fractions).mean()) if len(curves) else None,
        "random_maps": f"uniform noise on a {RANDOM_GRID}x{RANDOM_GRID} grid, upsampled",
        "randomisation": "all backbone weights re-initialised (seeded); head unchanged",
        "per_image": {"scored": [bool(v) for v in kept],
                      "deletion_auc": [float(v) for v in deletion_auc],
                      "random_deletion_auc": [float(v) for v in random_auc],
                      "sanity_rank_corr": [float(v) for v in rank_corr]},
    }
