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

import os
import tempfile
import uuid
import warnings
from typing import Any, Sequence

import numpy as np

from featx.engines import require_ray
from featx.errors import FeatxError
from featx.fit import HeadPlan, Tuner, fit, parse_sets
from featx.fit.search import head_name
from featx.heads.zoo import XGBoostHead

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
    if head_name(head) == "xgboost" and distributed_xgboost != "never":
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
        return fit(cache, features, head, **kwargs)


def _n_rows(cache, features) -> int:
    if hasattr(cache, "X"):
        return int(np.asarray(cache.X).shape[0])
    from featx.cache import read_state
    state = read_state(cache)
    done = [state.done.get(s, set()) for s in parse_sets(features)]
    return len(set.intersection(*done)) if done else 0


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
                    params: dict[str, Any] | None = None, class_weight=None, seed: int = 0,
                    search: str = "none", scoring: str = "auc", **kwargs):
    """``featx.fit.fit`` with the xgboost head trained by Ray Train: a head without search (fixed
    ``params``); same protocol, metrics and bundle as the local path."""
    head_params = dict(params or {})
    spec = HeadPlan(
        "xgboost",
        RayXGBoostHead(num_workers=num_workers, worker_cpus=worker_cpus, class_weight=class_weight,
                       random_state=seed, **head_params),
        params=head_params, options={"engine": "ray", "ray_train_workers": num_workers},
        trained_on=f"Ray Train XGBoostTrainer, {num_workers} workers",
        notes=["Ray Train XGBoost: no hyper-parameter search (fixed parameters; set them with --param)"]
        if search != "none" else [])
    kwargs.pop("n_iter", None)
    kwargs.pop("grid", None)
    kwargs.pop("n_jobs", None)
    return fit(cache, features, spec, class_weight=class_weight, seed=seed,
               tuner=Tuner(search="none", scoring=scoring, seed=seed), **kwargs)
