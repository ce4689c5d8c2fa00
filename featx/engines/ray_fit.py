"""``featx fit --engine ray``: fitting on a Ray cluster, as a thin layer over featx.fit.

* Hyper-parameter search and CV fan-out: ``featx.fit.fit`` / ``compare`` run unchanged inside
  ``joblib.parallel_backend("ray")`` (after ``ray.util.joblib.register_ray()``), so every
  (candidate x fold) fit of GridSearchCV / RandomizedSearchCV, and every run of ``compare``,
  becomes a Ray task spread over the cluster.
* XGBoost on large caches: the head is trained data-parallel by Ray Train's ``XGBoostTrainer``
  (``RayXGBoostHead``), inside the same preprocessing pipeline and evaluation protocol as the
  local path, with fixed hyper-parameters (``params``; no search: one distributed training per
  fold is already the expensive unit).
"""
from __future__ import annotations

import importlib
import os
import tempfile
import time
import uuid
import warnings
from typing import Any, Sequence

import numpy as np
from sklearn.base import clone

from featx.engines import require_ray
from featx.errors import FeatxError
from featx.heads.zoo import XGBoostHead

F = importlib.import_module("featx.fit")

#: caches with at least this many labelled rows train --head xgboost through Ray Train
XGB_MIN_ROWS = 100_000


def _parallel_backend(address=None, num_cpus=None):
    import joblib

    from featx.engines.ray import init_ray
    init_ray(address, num_cpus)
    from ray.util.joblib import register_ray
    register_ray()
    return joblib.parallel_backend("ray")


def fit_ray(cache, features: str | Sequence[str], head: str = "svm", *, address: str | None = None,
            num_cpus: int | None = None, distributed_xgboost: str = "auto", xgb_workers: int | None = None,
            **kwargs):
    """``featx.fit.fit`` on Ray; same arguments and result.

    ``distributed_xgboost``: "auto" (Ray Train when ``head="xgboost"`` and the cache has at least
    ``XGB_MIN_ROWS`` rows), "always" or "never". ``xgb_workers``: Ray Train workers (default: the
    cluster's CPUs, at most 8).
    """
    require_ray()
    if distributed_xgboost not in ("auto", "always", "never"):
        raise FeatxError(f"unknown distributed_xgboost {distributed_xgboost!r} (auto, always, never)")
    if F.zoo._check_name(head) == "xgboost" and distributed_xgboost != "never":
        n_rows = _n_rows(cache, features)
        if distributed_xgboost == "always" or n_rows >= XGB_MIN_ROWS:
            from featx.engines.ray import init_ray
            ray = init_ray(address, num_cpus)
            cpus = float(ray.cluster_resources().get("CPU", 1))
            if xgb_workers is None:
                xgb_workers = max(1, min(8, int(cpus)))
            # Ray Train's controller and data-split actors need a little CPU beside the workers,
            # or the run waits for resources forever
            worker_cpus = max(0.25, min(1.0, (cpus - 0.5) / xgb_workers))
            return fit_xgboost_ray(cache, features, num_workers=xgb_workers, worker_cpus=worker_cpus, **kwargs)
    kwargs.setdefault("n_jobs", -1)
    with _parallel_backend(address, num_cpus):
        return F.fit(cache, features, head, **kwargs)


def compare_ray(cache, features, heads=("svm", "rf", "xgboost", "elm", "logreg"), *, address=None,
                num_cpus=None, **kwargs):
    """``featx.fit.compare`` with its runs as Ray tasks."""
    require_ray()
    with _parallel_backend(address, num_cpus):
        return F.compare(cache, features, heads, **kwargs)


def _n_rows(cache, features) -> int:
    if hasattr(cache, "X"):
        return int(np.asarray(cache.X).shape[0])
    from featx.cache import _open_read
    sets = F.parse_sets(features)
    with _open_read(cache) as f:
        ok = np.ones(f["samples/id"].shape[0], bool)
        for s in sets:
            if f"features/{s}_ok" in f:
                ok &= f[f"features/{s}_ok"][()].astype(bool)
    return int(ok.sum())


# ----------------------------------------------------------------------------------------------
# XGBoost through Ray Train


def _train_fn_per_worker(config: dict):
    """Ray Train worker: its shard of the rows -> xgboost.train (the workers form one
    data-parallel booster); rank 0 reports the model once, at the end (a report per boosting
    round costs a cluster round trip each)."""
    import ray.train
    import xgboost
    from ray.train import Checkpoint

    shard = ray.train.get_dataset_shard("train").materialize().to_pandas()
    y = shard.pop("__y").to_numpy()
    w = shard.pop("__w").to_numpy()
    dtrain = xgboost.DMatrix(shard.to_numpy(np.float32), label=y, weight=w)
    bst = xgboost.train(config["params"], dtrain, num_boost_round=config["num_boost_round"])
    if ray.train.get_context().get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as d:
            bst.save_model(os.path.join(d, "model.ubj"))
            ray.train.report({"rounds": bst.num_boosted_rounds()}, checkpoint=Checkpoint.from_directory(d))
    else:
        ray.train.report({"rounds": bst.num_boosted_rounds()})


class RayXGBoostHead(XGBoostHead):
    """XGBoostHead trained data-parallel by Ray Train's XGBoostTrainer (``num_workers`` workers).

    Predicts locally from the trained ``xgboost.Booster`` (no Ray needed to load or apply the
    saved model). Same parameters and class weighting as XGBoostHead.
    """

    def __init__(self, n_estimators: int = 200, max_depth: int = 3, learning_rate: float = 0.1,
                 subsample: float = 0.8, colsample_bytree: float = 0.3, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, class_weight: Any = None, random_state: int | None = 0,
                 n_jobs: int = 1, tree_method: str = "hist", num_workers: int = 2, worker_cpus: float = 1.0):
        super().__init__(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                         subsample=subsample, colsample_bytree=colsample_bytree,
                         min_child_weight=min_child_weight, reg_lambda=reg_lambda, class_weight=class_weight,
                         random_state=random_state, n_jobs=n_jobs, tree_method=tree_method)
        self.num_workers = num_workers
        self.worker_cpus = worker_cpus

    def fit(self, X, y, sample_weight=None):
        import pandas as pd
        import ray
        from ray.train import RunConfig, ScalingConfig
        import xgboost
        from ray.train.xgboost import XGBoostTrainer
        from sklearn.preprocessing import LabelEncoder
        from sklearn.utils.class_weight import compute_sample_weight

        X = np.asarray(X, np.float32)
        self._le = LabelEncoder().fit(y)
        self.classes_ = self._le.classes_
        y_enc = self._le.transform(y)
        w = np.ones(len(y_enc))
        if self.class_weight is not None:
            w = w * compute_sample_weight(self.class_weight, y)
        if sample_weight is not None:
            w = w * np.asarray(sample_weight, float)
        k = len(self.classes_)
        params = {"objective": "binary:logistic" if k <= 2 else "multi:softprob",
                  "eval_metric": "logloss" if k <= 2 else "mlogloss",
                  "max_depth": self.max_depth, "eta": self.learning_rate, "subsample": self.subsample,
                  "colsample_bytree": self.colsample_bytree, "min_child_weight": self.min_child_weight,
                  "lambda": self.reg_lambda, "seed": self.random_state or 0, "tree_method": self.tree_method,
                  "nthread": max(1, int(self.n_jobs)), "verbosity": 0}
        if k > 2:
            params["num_class"] = k
        df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
        df["__y"] = y_enc.astype(np.float32)
        df["__w"] = w.astype(np.float32)
        step = -(-len(df) // max(1, int(self.num_workers)))
        ds = ray.data.from_pandas([df.iloc[a:a + step] for a in range(0, len(df), step)])
        with tempfile.TemporaryDirectory(prefix="featx-raytrain-") as storage, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = XGBoostTrainer(
                _train_fn_per_worker,
                train_loop_config={"params": params, "num_boost_round": int(self.n_estimators)},
                scaling_config=ScalingConfig(num_workers=int(self.num_workers), use_gpu=False,
                                             resources_per_worker={"CPU": self.worker_cpus}),
                run_config=RunConfig(name=f"featx-xgb-{uuid.uuid4().hex[:8]}", storage_path=storage),
                datasets={"train": ds})
            result = trainer.fit()
            if result.checkpoint is None:
                raise FeatxError(f"Ray Train XGBoost produced no model ({result.error or 'no checkpoint'})")
            with result.checkpoint.as_directory() as d:
                self.bst_ = xgboost.Booster(model_file=os.path.join(d, "model.ubj"))
        self.booster_ = self.bst_
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        import xgboost
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self, "bst_")
        p = self.bst_.predict(xgboost.DMatrix(np.asarray(X, np.float32)))
        if p.ndim == 1:
            p = np.column_stack([1 - p, p])
        return p


def fit_xgboost_ray(cache, features: str | Sequence[str], *, num_workers: int = 2, worker_cpus: float = 1.0,
                    params: dict[str, Any] | None = None, cv: int = 5, protocol: str = "auto",
                    refit_on: str = "train+val", pca=None, select_k: int | None = None,
                    variance_threshold: float | None = 0.0, fusion_weights: str = "equal",
                    class_weight=None, seed: int = 0, n_boot: int = 1000, drop_nonfinite: bool = False,
                    search: str = "none", scoring: str = "auc", final: bool = True, **_ignored):
    """The xgboost head with Ray Train, same protocol/metrics/bundle as ``featx.fit.fit``; no search."""
    import featx
    from featx.bundle import ModelBundle
    from featx.evaluate import classification_metrics, plan_evaluation

    t0 = time.perf_counter()
    sets = F.parse_sets(features)
    pca = F.parse_pca(pca)
    table, source = F._load_table(cache, sets)
    table, dropped = F.check_finite(table, source, drop_nonfinite)
    notes = [f"{dropped} rows with NaN/Inf features were dropped"] if dropped else []
    if search != "none":
        notes.append("Ray Train XGBoost: no hyper-parameter search (fixed parameters; set them with --param)")
    X, y = np.asarray(table.X), np.asarray(table.y)
    n_classes = len(table.class_names)
    if n_classes < 2 or len(np.unique(y[y >= 0])) < 2:
        raise FeatxError("fitting needs labelled samples of at least two classes", path=source)
    plan = plan_evaluation(y, table.splits, F.effective_groups(table), protocol, cv, seed, refit_on)
    notes += plan.notes
    head_params = dict(params or {})
    base = F.build_pipeline(table.set_slices,
                            RayXGBoostHead(num_workers=num_workers, worker_cpus=worker_cpus, class_weight=class_weight,
                                           random_state=seed, **head_params),
                            pca=pca, select_k=select_k, variance_threshold=variance_threshold,
                            fusion_weights=fusion_weights, seed=seed)
    timings: dict[str, float] = {}
    model = None
    if plan.kind == "split":
        t = time.perf_counter()
        model = clone(base).fit(X[plan.refit_idx], y[plan.refit_idx])
        timings["refit"] = time.perf_counter() - t
        te = plan.test_idx
        y_pred, scores = F._predict_block(model, X[te], n_classes)
        ev = F.Evaluation("test", y[te], y_pred, scores, table.class_names, table.ids[te], table.paths[te])
        metrics = {"test": F._metrics_block(ev, n_boot, seed)}
    else:
        n = X.shape[0]
        oof_pred = np.full(n, -1, np.int64)
        oof_scores = np.full((n, n_classes), np.nan)
        fold_of = np.full(n, -1, np.int64)
        fold_metrics = []
        t = time.perf_counter()
        for k, (tr, te) in enumerate(plan.folds):
            m = clone(base).fit(X[tr], y[tr])
            oof_pred[te], oof_scores[te] = F._predict_block(m, X[te], n_classes)
            fold_of[te] = k
            labels = sorted(set(np.unique(y[te])) | set(np.unique(oof_pred[te])) | set(int(c) for c in m.classes_))
            fm = classification_metrics(y[te], oof_pred[te], oof_scores[te][:, labels], labels, table.class_names)
            fold_metrics.append({key: fm[key] for key in F.SUMMARY_KEYS} | {"n": fm["n"]})
        timings["cv"] = time.perf_counter() - t
        idx = np.concatenate([te for _, te in plan.folds])
        ev = F.Evaluation("cv", y[idx], oof_pred[idx], oof_scores[idx], table.class_names,
                          table.ids[idx], table.paths[idx], fold_of[idx])
        block = F._metrics_block(ev, n_boot, seed)
        block.update(n_splits=plan.n_splits, folds=fold_metrics,
                     mean={key: F._mean([f[key] for f in fold_metrics]) for key in F.SUMMARY_KEYS},
                     std={key: F._std([f[key] for f in fold_metrics]) for key in F.SUMMARY_KEYS},
                     pooled="metrics and ci95 are computed on the pooled out-of-fold predictions")
        metrics = {"cv": block}
        if final:
            labelled = np.flatnonzero(y >= 0)
            t = time.perf_counter()
            model = clone(base).fit(X[labelled], y[labelled])
            timings["final"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    best_params = dict(head_params)
    options = dict(search="none", scoring=scoring, cv=cv, protocol=plan.kind, refit_on=refit_on, pca=pca,
                   select_k=select_k, variance_threshold=variance_threshold, fusion_weights=fusion_weights,
                   class_weight=class_weight, seed=seed, engine="ray", ray_train_workers=num_workers)
    metrics["tuning"] = {"search": "none", "scoring": scoring, "candidates": 1,
                         "on": f"Ray Train XGBoostTrainer, {num_workers} workers"}
    metrics["protocol"] = plan.describe()
    metrics["model"] = {"head": "xgboost", "feature_sets": sets, "params": best_params,
                        "n_features": int(X.shape[1]), "options": options}
    if notes:
        metrics["notes"] = notes
    result = F.FitResult("xgboost", sets, metrics, ev, best_params, plan, None, notes, timings)
    if model is not None and final:
        result.bundle = ModelBundle(
            pipeline=model, class_names=list(table.class_names), classes=[int(c) for c in model.classes_],
            feature_sets=sets, set_configs={s: dict(table.configs.get(s, {})) for s in sets},
            set_dims={s: int(sl.stop - sl.start) for s, sl in table.set_slices.items()},
            head="xgboost", params=best_params, options=options, metrics=F._jsonable(metrics),
            training={"cache": source, "n_rows": int(X.shape[0]),
                      "n_fit": int(plan.refit_idx.size if plan.kind == "split" else (y >= 0).sum())},
            featx_version=featx.__version__)
    return result
