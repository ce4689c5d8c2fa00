"""``evaluate_robustness``: a saved model's AUC, accuracy and OOD rate under corrupted inputs.

The images of the sources are decoded with the model's reading settings, corrupted
(:mod:`featx.robustness.corruptions`, five severities each), quantised to 8 bits, written to
temporary npz archives and predicted by :func:`featx.fit.predict`, i.e. through the model's own
extractors and pipeline, exactly as ``featx predict`` would see such images. Adversarial
perturbations (FGSM, PGD under an L-inf budget) need an exact torch mirror of the model
(``featx.explain.model.DifferentiableModel``); see :mod:`featx.robustness.adversarial`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np

from featx.bundle import ModelBundle, load_bundle
from featx.errors import FeatxError
from featx.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def score_block(proba: np.ndarray, y: np.ndarray, ood: np.ndarray) -> dict[str, Any]:
    """AUC (binary: positive column; multi-class: one-vs-rest macro), accuracy, OOD rate."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(proba).all(axis=1) & (y >= 0)
    p, t = proba[ok], y[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "accuracy": float((p.argmax(1) == t).mean()) if ok.any() else None,
                           "auc": None, "ood_rate": float(np.mean(ood)) if len(ood) else None}
    if ok.any() and len(np.unique(t)) > 1:
        if p.shape[1] == 2:
            out["auc"] = float(roc_auc_score(t, p[:, 1]))
        else:
            present = np.unique(t)
            sub = p[:, present] / np.clip(p[:, present].sum(1, keepdims=True), 1e-12, None)
            out["auc"] = float(roc_auc_score(t, sub, multi_class="ovr", labels=present))
    return out


def decode_sources(bundle: ModelBundle, sources: Sequence[str], split: str | None = None,
                   max_images: int | None = None, seed: int = 0):
    """(images, label index in the model's classes or -1, sample paths) of ``sources``, decoded
    with the model's reading settings (its first feature set's); ``split`` keeps that split only;
    ``max_images`` a random subset."""
    from featx.fit.prediction import extraction_calls
    from featx.sources import ReadOptions, scan_sources

    call = extraction_calls(bundle.set_configs)[0]
    read = ReadOptions(window=call.get("window"), intensity=call.get("intensity", "auto"))
    samples = [s for s in scan_sources(sources).samples if split is None or s.split == split]
    if max_images is not None and len(samples) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(samples), max_images, replace=False))
        samples = [samples[i] for i in keep]
    names = [str(n) for n in bundle.class_names]
    images, labels, paths = [], [], []
    for s in samples:
        try:
            images.append(np.asarray(s.load(read), np.float32))
        except Exception:  # an undecodable file is skipped here as predict would skip it
            continue
        lab = "" if s.label is None else str(s.label)
        labels.append(names.index(lab) if lab in names else (int(lab) if lab.lstrip("-").isdigit() else -1))
        paths.append(s.path)
    if not images:
        raise FeatxError("no decodable images in the sources" + (f" (split {split!r})" if split else ""))
    return images, np.asarray(labels, np.int64), paths


def _predict_images(bundle: ModelBundle, images: list[np.ndarray], tmp: str, tag: str,
                    extract_options: dict) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (columns = class names) and OOD flags of float images, via npz + predict."""
    from featx.fit import predict

    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    files, order = [], []
    for k, idx in enumerate(by_shape.values()):
        path = os.path.join(tmp, f"{tag}-{k}.npz")
        arr = np.stack([np.round(images[i] * 255).astype(np.uint8) for i in idx])
        np.savez(path, test_images=arr, test_labels=np.full(len(idx), -1, np.int64))
        files.append(path)
        order.append(idx)
    df = predict(bundle, files, cache=os.path.join(tmp, f"{tag}.h5"), extract_options=extract_options)
    n = len(bundle.class_names)
    proba = np.full((len(images), n), np.nan)
    ood = np.zeros(len(images), bool)
    cols = [c for c in df.columns if c.startswith(("prob_", "score_"))][:n]
    for _, row in df.iterrows():
        path = str(row["path"])
        if "::" not in path or row["predicted_index"] < 0:
            continue
        file, _, inner = path.rpartition("::")
        k = files.index(file) if file in files else [os.path.realpath(f) for f in files].index(os.path.realpath(file))
        i = order[k][int(inner.rsplit("/", 1)[-1])]
        proba[i] = row[cols].to_numpy(float)
        ood[i] = bool(row["ood"])
    return proba, ood


def evaluate_robustness(
    bundle,
    sources: Sequence[str] | str,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    epsilons: Sequence[float] = (1 / 255, 2 / 255, 4 / 255),
    adversarial: bool = True,
    split: str | None = None,
    max_images: int | None = None,
    trust: bool = False,
    seed: int = 0,
    extract_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of ``bundle`` (a path or :class:`ModelBundle`) on the labelled images of
    ``sources``: clean, under every corruption at every severity, and (``adversarial``, heads
    with an exact torch mirror) under FGSM/PGD at each L-inf budget in ``epsilons`` (pixel scale 0..1).

    Returns ``{"clean": m, "corruptions": {name: {severity: m}}, "adversarial": {eps: m},
    "notes": [...], "n_images": n}`` where ``m = {"auc", "accuracy", "ood_rate", "n"}``
    (severities and budgets as strings, JSON-ready). ``extract_options``: device,
    batch_size, workers (see :func:`featx.fit.predict`).
    """
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle, trust=trust)
    sources = [str(sources)] if isinstance(sources, (str, os.PathLike)) else [str(s) for s in sources]
    names = list(CORRUPTIONS) if corruptions is None else list(corruptions)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise FeatxError(f"unknown corruption {unknown[0]!r}; choose from {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in SEVERITIES]
    if bad:
        raise FeatxError(f"severity must be 1..5, not {bad[0]!r}")
    images, y, _paths = decode_sources(bundle, sources, split, max_images, seed)
    if (y < 0).all():
        raise FeatxError("none of the images has a label the model knows; robustness needs labelled images")
    opts = dict(extract_options or {})
    result: dict[str, Any] = {"n_images": len(images), "clean": None, "corruptions": {}, "adversarial": {},
                              "notes": []}
    with tempfile.TemporaryDirectory(prefix="featx-robust-") as tmp:
        variants = [("clean", 0, images)]
        for name in names:
            for sev in severities:
                rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), int(sev)])
                variants.append((name, int(sev), [corrupt(im, name, int(sev), rng) for im in images]))
        # one predict call (one extraction) for all variants: the backbone loads once
        flat = [im for _, _, ims in variants for im in ims]
        proba, ood = _predict_images(bundle, flat, tmp, "all", opts)
    n = len(images)
    for k, (name, sev, _) in enumerate(variants):
        m = score_block(proba[k * n:(k + 1) * n], y, ood[k * n:(k + 1) * n])
        if name == "clean":
            result["clean"] = m
        else:
            result["corruptions"].setdefault(name, {})[str(sev)] = m
    if adversarial and epsilons:
        from featx.robustness.adversarial import adversarial_metrics

        adv, notes = adversarial_metrics(bundle, images, y, epsilons, seed=seed)
        result["adversarial"] = {f"{e:.6g}": m for e, m in adv.items()}
        result["notes"] += notes
    return result
