"""FGSM and PGD under an L-inf budget, through the model's exact torch mirror.

The mirror is ``featx.explain.model.DifferentiableModel(bundle, output="decision")``: image tensor
``(B, C, H, W)`` in [0, 1] -> decision scores, one column per class of ``bundle.classes``, with the
backbones' preprocessing inside. Heads without an exact mirror (trees, k-NN) raise its
``NotMirrorable``; models with handcrafted sets have no gradient through those sets. Either way no
adversarial numbers are produced and a note says why. Metrics come from the mirror's own scores on
the perturbed images (not re-quantised to 8 bits: a 1/255 budget would not survive rounding).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

BATCH = 16


def _attack(model, x, y, eps: float, steps: int, rng):
    """PGD (``steps`` > 1, random start, step eps/4) or FGSM (``steps`` == 1) maximising cross-entropy."""
    import torch
    import torch.nn.functional as F

    if steps == 1:
        adv = x.clone()
        alpha = eps
    else:
        noise = torch.from_numpy(rng.uniform(-eps, eps, size=tuple(x.shape)).astype(np.float32))
        adv = (x + noise).clamp(0, 1)
        alpha = eps / 4
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = torch.min(torch.max(adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def adversarial_metrics(bundle, images: list[np.ndarray], y: np.ndarray, epsilons: Sequence[float], *,
                        pgd_steps: int = 10, max_images: int = 64, seed: int = 0):
    """``({eps: metrics of the worse of FGSM and PGD, with both}, notes)``; empty with a note when
    the model has no exact differentiable mirror. ``max_images`` bounds the cost (a random subset)."""
    import torch

    from featx.robustness.evaluation import score_block

    try:
        from featx.explain.model import DifferentiableModel
        from featx.explain.mirror import NotMirrorable
    except ImportError:
        return {}, ["adversarial: skipped (featx.explain, the differentiable model mirror, is not installed)"]
    if any(c.get("kind") == "handcrafted" for c in bundle.set_configs.values()):
        return {}, ["adversarial: skipped (handcrafted feature sets have no image gradient)"]
    try:
        model = DifferentiableModel(bundle, output="decision").eval()
    except NotMirrorable as e:
        return {}, [f"adversarial: skipped (no exact torch mirror of this head: {e.reason})"]
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(y >= 0)
    if keep.size > max_images:
        keep = np.sort(rng.choice(keep, max_images, replace=False))
    classes = [int(c) for c in bundle.classes]
    col = {c: i for i, c in enumerate(classes)}
    out = {}
    for eps in epsilons:
        per_attack = {}
        for attack, steps in (("fgsm", 1), ("pgd", pgd_steps)):
            scores = np.full((len(images), len(bundle.class_names)), np.nan)
            groups: dict[tuple, list[int]] = {}
            for i in keep:
                groups.setdefault(images[i].shape, []).append(int(i))
            for idx in groups.values():
                for start in range(0, len(idx), BATCH):
                    b = idx[start:start + BATCH]
                    x = torch.from_numpy(np.stack([im[None] if im.ndim == 2 else im.transpose(2, 0, 1)
                                                   for im in (images[i] for i in b)]).astype(np.float32))
                    t = torch.as_tensor([col.get(int(y[i]), 0) for i in b])
                    adv = _attack(model, x, t, float(eps), steps, rng)
                    with torch.no_grad():
                        d = torch.softmax(model(adv), dim=1).numpy()
                    scores[np.asarray(b)[:, None], np.asarray(classes)[None, :]] = d
            per_attack[attack] = score_block(scores[keep], y[keep], np.zeros(keep.size, bool))
            per_attack[attack].pop("ood_rate")
        worse = min(per_attack.values(), key=lambda m: (m["accuracy"] if m["accuracy"] is not None else 1.0))
        out[float(eps)] = {"auc": worse["auc"], "accuracy": worse["accuracy"], "n": worse["n"], **per_attack}
    return out, []
