"""``explain()``: saliency maps, overlays, gallery, per-set attribution and faithfulness for a model."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from featx.bundle import ModelBundle, load_bundle
from featx.errors import FeatxError
from featx.explain import faithfulness as FA
from featx.explain import methods as M
from featx.explain.attribution import drop_set_attribution
from featx.explain.mirror import NotMirrorable, TorchHead
from featx.explain.model import DifferentiableModel, ImageScorer, hand_features, prepare_backbones, set_slices
from featx.explain.render import overlay, plain, write_gallery

log = logging.getLogger("featx")
BATCH = 16


@dataclass
class ExplainResult:
    """What :func:`explain` wrote and found.

    rows          one dict per explained image: id, path, true, predicted, score, target, map, overlay
    failures      (path, reason) of the inputs that could not be read
    notes         one-line remarks (e.g. the fallback to occlusion and why)
    faithfulness  the faithfulness.json block (deletion_auc, random_deletion_auc, sanity_rank_corr, ...)
    per_set       the per_set.json block (drop-set attribution of each feature set)
    """

    out_dir: Path
    method: str
    rows: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    faithfulness: dict = field(default_factory=dict)
    per_set: dict = field(default_factory=dict)
    html: Path | None = None
    seconds: float = 0.0

    def line(self) -> str:
        f = self.faithfulness
        extra = ""
        if f.get("deletion_auc") is not None:
            extra = (f"; deletion AUC {f['deletion_auc']:.3f} vs random {f['random_deletion_auc']:.3f} "
                     f"({f['n_scored']} images scored, {f['n_skipped']} skipped), "
                     f"randomised-model rank corr {f['sanity_rank_corr']:.2f}")
            if f.get("n_flat_randomised_maps"):
                extra += f" ({f['n_flat_randomised_maps']} randomised maps flat: correlation 0 by definition)"
        return (f"{len(self.rows)} images explained ({self.method}), {len(self.failures)} failed in "
                f"{self.seconds:.1f} s{extra} -> {self.html}")


def safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)


def _target_column(bundle: ModelBundle, target: str) -> int | None:
    if target == "predicted":
        return None
    if target not in bundle.class_names:
        raise FeatxError(f"--target {target!r}: not a class of this model ({', '.join(bundle.class_names)}) "
                         "and not 'predicted'")
    label = bundle.class_names.index(target)
    if label not in bundle.classes:
        raise FeatxError(f"--target {target!r}: the model was never trained on this class")
    return list(bundle.classes).index(label)


def _decode(samples, read) -> tuple[list, list[np.ndarray], list[tuple[str, str]]]:
    ok, images, failures = [], [], []
    for s in samples:
        try:
            im = np.asarray(s.load(read), dtype=np.float32)
        except FeatxError as e:
            failures.append((s.path, e.reason))
            continue
        except Exception as e:  # a hostile file must not stop the others
            failures.append((s.path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            continue
        images.append(im[None] if im.ndim == 2 else im.transpose(2, 0, 1))
        ok.append(s)
    return ok, images, failures


def _batches(images: list[np.ndarray]):
    """Indices of images grouped by shape, in chunks of BATCH."""
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), BATCH):
            yield idx[start:start + BATCH]


class _Explainer:
    """Maps of one model (real or randomised) by one method."""

    def __init__(self, bundle, method, uses, hand_use, head):
        self.method = method
        self.scorer = ImageScorer(bundle, uses, hand_use)
        self.model = None
        self.layers = None
        if method in M.GRADIENT_METHODS:
            self.model = DifferentiableModel(bundle, "decision", uses, hand_use, head).eval()

    def maps(self, x: torch.Tensor, targets: list[int]) -> np.ndarray:
        if self.method == "occlusion":
            return M.occlusion(self.scorer, x, targets).numpy()
        hand = None
        if self.model.hand_use.specs:
            feats = hand_features(self.model.hand_use, x.numpy())
            hand = torch.from_numpy(np.concatenate([feats[s] for s in self.model.hand_widths], axis=1))
        xg = x.clone().requires_grad_(True)
        if self.method == "ig":
            return M.integrated_gradients(self.model, xg, targets, hand).numpy()
        if self.method == "input-x-gradient":
            return M.input_x_gradient(self.model, x, targets, hand).numpy()
        if self.layers is None:
            self.layers = M.gradcam_layers(self.model, x)
        return M.gradcam(self.model, xg, targets, hand, self.layers).numpy()


def explain(bundle_or_path, sources: Sequence[str | os.PathLike] | str, out_dir: str | os.PathLike, *,
            method: str = "auto", target: str = "predicted", limit: int | None = None, trust: bool = False,
            faithfulness: bool = True, split: str | None = None, allow_outside: bool = False) -> ExplainResult:
    """Explain a saved model's predictions on images; see ``featx explain --help``.

    Writes ``out_dir/maps/<id>.npy`` (float32 saliency at input resolution), ``overlays/<id>.png``,
    ``index.html`` (self-contained gallery), ``per_set.json`` and, with ``faithfulness``,
    ``faithfulness.json``. ``method``: auto (input x gradient when the head has an exact torch
    mirror, else occlusion), input-x-gradient, gradcam, ig, occlusion; a head without a mirror
    falls back to occlusion with a note. ``target``: "predicted" or a class name. ``split``: only
    the samples the sources mark with this split (train, val, test), e.g. BreastMNIST's test
    images. Runs in fp32 on the CPU.
    """
    from featx.sources import scan_sources

    t0 = time.perf_counter()
    if method not in M.METHODS:
        raise FeatxError(f"--method {method!r}: choose one of {', '.join(M.METHODS)}")
    if limit is not None and limit < 1:
        raise FeatxError(f"--limit must be at least 1, not {limit}")
    bundle = bundle_or_path if isinstance(bundle_or_path, ModelBundle) else load_bundle(bundle_or_path, trust=trust)
    fixed_target = _target_column(bundle, target)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out = Path(out_dir)
    result = ExplainResult(out, method)
    scan = scan_sources([str(s) for s in sources], allow_outside=allow_outside)
    result.failures += [(f.path, f.reason) for f in scan.failures]
    samples = scan.samples
    if split is not None:
        samples = [s for s in samples if s.split == split]
        if not samples:
            raise FeatxError(f"--split {split}: no sample of {', '.join(map(str, sources))} is marked {split!r}")
    samples = samples[:limit] if limit else samples
    uses, hand_use = prepare_backbones(bundle.set_configs)
    for u in uses:
        result.notes += u.notes
    head = None
    if method in ("auto", *M.GRADIENT_METHODS):
        try:
            head = TorchHead.from_pipeline(bundle.pipeline)
            if not uses:
                raise NotMirrorable("the model has no CNN feature set to take gradients through")
            method = M.AUTO_GRADIENT_METHOD if method == "auto" else method
        except NotMirrorable as e:
            result.notes.append(f"{bundle.head} head: no exact gradient path ({e.reason}); explaining by occlusion")
            method = "occlusion"
    result.method = method
    read = uses[0].read if uses else hand_use.read
    samples, images, failures = _decode(samples, read)
    result.failures += failures
    if not samples:
        raise FeatxError(f"no image could be read from {', '.join(map(str, sources))}"
                         + (f" (first: {result.failures[0][0]}: {result.failures[0][1]})" if result.failures else ""))
    (out / "maps").mkdir(parents=True, exist_ok=True)
    (out / "overlays").mkdir(parents=True, exist_ok=True)

    real = _Explainer(bundle, method, uses, hand_use, head)
    rand = None
    if faithfulness:
        r_uses, r_hand = prepare_backbones(bundle.set_configs, random_weights=True)
        rand = _Explainer(bundle, method, r_uses, r_hand, head)
    n = len(samples)
    scores = np.zeros((n, len(bundle.classes)))
    X = np.zeros((n, sum(int(bundle.set_dims[s]) for s in bundle.feature_sets)))
    targets = np.zeros(n, np.int64)
    maps: list[np.ndarray | None] = [None] * n
    npoints = len(FA.DELETION_FRACTIONS)
    curves, rcurves, corr = np.zeros((n, npoints)), np.zeros((n, npoints)), np.zeros(n)
    flat = np.zeros(n, bool)
    def prob(batch):
        return FA.as_probabilities(real.scorer(batch), real.scorer.proba)

    for idx in _batches(images):
        x = torch.from_numpy(np.stack([images[i] for i in idx]))
        X[idx] = real.scorer.features(x)
        scores[idx] = real.scorer.scores_of_features(X[idx])
        tgt = [int(scores[i].argmax()) if fixed_target is None else fixed_target for i in idx]
        targets[idx] = tgt
        m = real.maps(x, tgt)
        for j, i in enumerate(idx):
            maps[i] = m[j].astype(np.float32)
        if rand is not None:
            base = FA.deletion_baseline(x)
            curves[idx] = FA.deletion_curves(prob, x, m, tgt, base)
            rcurves[idx] = FA.deletion_curves(prob, x, FA.random_maps(m.shape, seed=idx[0]), tgt, base)
            rm = rand.maps(x, tgt)
            corr[idx] = [FA.rank_correlation(m[j], rm[j]) for j in range(len(idx))]
            flat[idx] = [np.ptp(rm[j]) == 0 for j in range(len(idx))]

    names = bundle.class_names
    kind = "prob" if real.scorer.proba else "score"
    shown, overlays = {}, {}
    for i, s in enumerate(samples):
        stem = safe_name(s.id)
        np.save(out / "maps" / f"{stem}.npy", maps[i])
        ov = overlay(images[i], maps[i])
        ov.save(out / "overlays" / f"{stem}.png")
        shown[s.id], overlays[s.id] = plain(images[i]), ov
        pred = int(scores[i].argmax())
        result.rows.append({
            "id": s.id, "path": s.path, "true": s.label and (names[int(s.label)] if s.label.isdigit()
                                                             and int(s.label) < len(names) else s.label) or "",
            "predicted": names[bundle.classes[pred]], "score": float(scores[i, pred]), "score_kind": kind,
            "target": names[bundle.classes[targets[i]]], "target_score": float(scores[i, targets[i]]),
            "map": f"maps/{stem}.npy", "overlay": f"overlays/{stem}.png"})
    result.per_set = drop_set_attribution(bundle.pipeline, X, set_slices(bundle), targets)
    (out / "per_set.json").write_text(json.dumps(result.per_set, indent=2), encoding="utf-8")
    if rand is not None:
        target_names = np.array([bundle.class_names[bundle.classes[t]] for t in targets])
        block = FA.summary(curves, rcurves, corr, target_names, flat_random_maps=flat)
        result.faithfulness = dict(block, method=method)
        (out / "faithfulness.json").write_text(json.dumps(result.faithfulness, indent=2), encoding="utf-8")
    header = [f"model: {bundle.head} on {' + '.join(bundle.feature_sets)}; method: {method}"] + result.notes
    if result.faithfulness:
        f = result.faithfulness
        if f["deletion_auc"] is None:
            header.append(f"deletion AUC: no image scored ({f['skipped_because']})")
        else:
            header.append(f"deletion AUC {f['deletion_auc']:.3f} vs {f['random_deletion_auc']:.3f} for random maps "
                          f"(lower is more faithful; {f['n_scored']} images scored, {f['n_skipped']} skipped: "
                          f"{f['skipped_because']})")
        header.append(f"rank correlation with maps of a randomised network {f['sanity_rank_corr']:.2f} "
                      f"(lower is better; {f['n_flat_randomised_maps']} of its maps are flat)")
    if len(bundle.feature_sets) > 1:
        header.append("share of the decision per feature set: " + ", ".join(
            f"{k} {v['share']:.0%}" for k, v in result.per_set["sets"].items() if v["share"] is not None))
    result.html = write_gallery(out / "index.html", "featx explain", result.rows, shown, overlays, header)
    result.seconds = time.perf_counter() - t0
    return result
