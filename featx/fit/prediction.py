"""``predict``: apply a saved model to a cache or to images (extracted with the model's settings).

True labels come from the data's own class names (``table.class_names``), predicted labels from
the model's, so a folder holding only ``yes/`` images is labelled "yes" whatever the model's class
order; :func:`prediction_summary` compares those names, never indices.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import pandas as pd

from featx.bundle import ModelBundle, bundle_file_format, load_bundle, resave_hint
from featx.csvutil import write_csv
from featx.errors import ConfigMismatchError, FeatxError, ModelError
from featx.evaluate import expand_scores, score_matrix
from featx.fit.results import prediction_frame
from featx.fit.tables import load_table
from featx.ood import ood_columns
from featx.setconfig import comparable, config_diff, extraction_calls
from featx.table import FeatureTable


def match_sets(bundle: ModelBundle, configs: dict[str, dict], path=None) -> tuple[dict[str, str], list[str]]:
    """Map each of the model's feature sets to a set of the cache with the same extractor config.

    The set of the same name is used when its config matches; otherwise any set whose config
    matches (the cache may hold it under another name, e.g. ``name@hash``). Configs are compared
    whole except for library versions, whose differences are returned as notes. Raises
    ConfigMismatchError, saying which settings differ, when a set has no match.
    """
    mapping, notes = {}, []
    for name in bundle.feature_sets:
        want = bundle.set_configs.get(name, {})
        key = comparable(want)
        if name in configs and comparable(configs[name]) == key:
            found = name
        else:
            found = next((n for n, c in configs.items() if comparable(c) == key), None)
        if found is None:
            if name in configs:
                raise ConfigMismatchError(
                    f"feature set '{name}' was made with a different extractor config than the model "
                    f"was trained on ({config_diff(want, configs[name])})", path=path)
            raise ConfigMismatchError(
                f"no feature set with the extractor config of the model's set '{name}' (the "
                f"features have: {', '.join(configs) or 'none'})", path=path)
        mapping[name] = found
        got = configs[found].get("versions")
        if want.get("versions") and got and got != want["versions"]:
            diff = {k: f"{want['versions'].get(k)} -> {got.get(k)}" for k in set(want["versions"]) | set(got)
                    if want["versions"].get(k) != got.get(k)}
            notes.append(f"set '{name}': made with other library versions than the model's features ({diff})")
    return mapping, notes


def model_table(bundle: ModelBundle, cache) -> tuple[FeatureTable, list[str]]:
    """The rows of ``cache`` (a path or a table) with the model's sets (matched by config),
    named as in the model; and notes."""
    if isinstance(cache, (str, os.PathLike)):
        from featx.cache import list_sets

        source, configs = str(cache), list_sets(cache)
    else:
        source, configs = cache.source, dict(cache.configs)
    mapping, notes = match_sets(bundle, configs, source)
    found = [mapping[s] for s in bundle.feature_sets]
    table = load_table(cache, found).select_sets(found, names=bundle.feature_sets)
    return table, notes


def predict_table(bundle: ModelBundle, table: FeatureTable, notes: Sequence[str] = ()) -> pd.DataFrame:
    """Predictions for every row of ``table`` (whose sets carry the model's names): id, path,
    split, true_label (the table's own class name, "" if unknown), predicted_label (the model's),
    predicted_index, then ``prob_<class>`` per model class (calibrated for svm and elm),
    ``ood_score`` (distance to the training data relative to the bundle's calibrated threshold,
    :mod:`featx.ood`; NaN for a bundle without a detector), ``ood`` (score above 1) and a note column."""
    for s in bundle.feature_sets:
        width = table.set_slices[s].stop - table.set_slices[s].start
        if bundle.set_dims.get(s, width) != width:
            raise ModelError(f"feature set '{s}' has {width} columns; the model expects "
                             f"{bundle.set_dims[s]}", path=table.source)
    X = table.select_sets(bundle.feature_sets).X if len(table) else \
        np.zeros((0, sum(bundle.set_dims[s] for s in bundle.feature_sets)), np.float32)
    bad = ~np.isfinite(X).all(axis=1)
    X = np.where(np.isfinite(X), X, 0.0)
    model = bundle.pipeline
    names = bundle.class_names
    probabilistic = hasattr(model, "predict_proba")
    values = np.zeros((X.shape[0], len(names)))
    pred = np.zeros(0, np.int64)
    if X.shape[0]:
        pred = np.asarray(model.predict(X)).astype(np.int64)
        if probabilistic:
            values[:, bundle.classes] = model.predict_proba(X)
        else:  # a pipeline without probabilities (fitted by hand): report decision scores
            values = expand_scores(score_matrix(model, X), bundle.classes, len(names))
    col = "prob" if probabilistic else "score"
    df = prediction_frame(table.ids, table.paths, table.splits, table.label_names(), pred, names, values, col)
    df["ood_score"], df["ood"] = ood_columns(bundle, X)
    df["note"] = ""
    if bad.any():
        df.loc[bad, ["predicted_label", "note"]] = ["", "NaN/Inf features"]
        df.loc[bad, ["ood_score", "ood"]] = [np.nan, False]
        df.loc[bad, "predicted_index"] = -1
        df.loc[bad, [f"{col}_{n}" for n in names]] = np.nan
    df.attrs["notes"] = list(notes)
    df.attrs["summary"] = prediction_summary(df)
    return df


def prediction_summary(df: pd.DataFrame) -> dict[str, Any]:
    """Rows, rows with a prediction, rows whose true label is known, the accuracy on the
    rows that have both (true and predicted class names compared), rows flagged out-of-distribution
    (``n_ood``) and whether any row has an OOD score (``ood_scored``: False for old bundles)."""
    has_pred = df["predicted_label"].fillna("").astype(str) != ""
    has_true = df["true_label"].fillna("").astype(str) != "" if "true_label" in df else has_pred & False
    both = has_pred & has_true
    acc = float((df.loc[both, "predicted_label"] == df.loc[both, "true_label"]).mean()) if both.any() else None
    n_ood = int(df["ood"].fillna(False).astype(bool).sum()) if "ood" in df else 0
    scored = bool(df["ood_score"].notna().any()) if "ood_score" in df else False
    return {"n": int(len(df)), "n_predicted": int(has_pred.sum()), "n_labelled": int(has_true.sum()),
            "accuracy": acc, "n_ood": n_ood, "ood_scored": scored}


def predict(
    bundle,
    sources: Sequence[str] | str | None = None,
    cache: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    trust: bool = False,
    extract_options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Predict with a saved model; one row per sample.

    ``bundle``: a model path (verified against its sha256 sidecar unless ``trust``) or a
    :class:`ModelBundle`. With ``sources`` (image folders, files, npz, DICOM, manifests) the
    images go through ``featx.extraction.extract`` into ``cache`` (a temporary file when None) with
    the extractor settings stored in the model, and the rows of those sources are returned
    (samples that failed to decode get a row with an empty prediction and the reason in
    ``note``). With only ``cache``, every row that has the model's feature sets is predicted.
    Features whose extractor config differs from the model's raise ConfigMismatchError.
    ``extract_options`` overrides extraction settings that do not change features (device,
    batch_size, workers, progress). With ``out`` the rows are also written as CSV (text cells
    that a spreadsheet would run as formulas are neutralised). ``df.attrs["summary"]`` holds
    :func:`prediction_summary`.
    """
    extra_notes = []
    if not isinstance(bundle, ModelBundle):
        if bundle_file_format(bundle) == "joblib":
            extra_notes.append(resave_hint(bundle))
        bundle = load_bundle(bundle, trust=trust)
    if isinstance(sources, (str, os.PathLike)):
        sources = [str(sources)]
    if not sources and cache is None:
        raise FeatxError("predict needs image sources or a cache")
    tmpdir = None
    try:
        if sources:
            if cache is None:
                tmpdir = tempfile.TemporaryDirectory(prefix="featx-predict-")
                cache = os.path.join(tmpdir.name, "features.h5")
            df = _predict_sources(bundle, [str(s) for s in sources], str(cache), extract_options or {})
        else:
            table, notes = model_table(bundle, cache)
            df = predict_table(bundle, table, notes)
    finally:
        if tmpdir is not None:
            tmpdir.cleanup()
    df.attrs["notes"] = [*extra_notes, *df.attrs.get("notes", [])]
    if out is not None:
        write_csv(df, out)
    return df


_RUN_OPTIONS = ("device", "batch_size", "workers", "progress", "allow_outside", "strict")


def _predict_sources(bundle: ModelBundle, sources: list[str], cache: str, options: dict) -> pd.DataFrame:
    from featx.extraction import extract
    from featx.sources import scan_sources

    unknown = set(options) - set(_RUN_OPTIONS)
    if unknown:
        raise FeatxError(f"extract option(s) {', '.join(sorted(unknown))} would change the features; "
                         f"only {', '.join(_RUN_OPTIONS)} can be set for predict")
    run = dict(progress=False)
    run.update(options)
    failures: dict[str, str] = {}
    for call in extraction_calls(bundle.set_configs):
        summary = extract(sources, cache, **call, **run)
        for p, reason in summary.failures:
            failures.setdefault(str(p), reason)
    table, notes = model_table(bundle, cache)
    scan = scan_sources(sources, allow_outside=bool(options.get("allow_outside", False)))
    order = {s.id: i for i, s in enumerate(scan.samples)}
    rows = np.array([i for i in np.argsort([order.get(v, -1) for v in table.ids], kind="stable")
                     if table.ids[i] in order], dtype=int)
    df = predict_table(bundle, table.take(rows), notes)
    done = set(df["id"])
    missing = [s for s in scan.samples if s.id not in done]
    if missing or failures:
        extra = [{"id": s.id, "path": s.path, "split": s.split, "predicted_index": -1,
                  "note": failures.get(s.path, "not extracted")} for s in missing]
        extra += [{"id": "", "path": p, "predicted_index": -1, "note": r}
                  for p, r in failures.items() if p not in {s.path for s in missing}]
        df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
        df["predicted_label"] = df["predicted_label"].fillna("")
        df["true_label"] = df["true_label"].fillna("")
        df["note"] = df["note"].fillna("")
        df["ood"] = df["ood"].fillna(False).astype(bool)
    df.attrs["notes"] = list(notes)
    df.attrs["summary"] = prediction_summary(df)
    return df
