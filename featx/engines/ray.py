"""Extraction on a Ray cluster: ``featx extract ... --engine ray [--address auto|ray://HOST:PORT]``.

The pipeline is featx's own (featx.extraction), spread over Ray:

    samples (featx.sources.scan_sources, on the driver)
      -> ray.data.from_items                      one row per sample that still needs work
      -> map_batches(_decode_batch)               Ray tasks: decode + preprocess + handcrafted sets
      -> map_batches(_Embedder, concurrency=N)    one actor per GPU (or CPU slot) holding the
                                                  frozen backbones, built once per actor
      -> iter_batches on the driver               each batch becomes one journal record
      -> featx.cache.commit                       the standard cache, atomically

Set names, configs and request keys come from the same functions as the local path
(``_deep_plans``, ``_hand_sets``, ``_assign_names``, ``request_key``), so ``featx fit`` cannot tell
the two apart; rows that the cache already holds are skipped; the cache lock is held for the run.
Workers send their rows back through Ray's object store, so the cache only has to be writable on
the driver; the *images* must be readable at the same paths on every node (shared storage).

Fault tolerance: Ray Data restarts a dead actor and retries its batch (``max_restarts=-1``,
``max_task_retries=-1``) and retries failed decode tasks; rows are keyed by sample id, so a row
seen twice is kept once, and any sample still missing at the end is run again (``max_attempts``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

import importlib
import queue
import threading

from featx import cache as C
from featx.engines import require_ray
from featx.engines.ray_plan import DEFAULT_STALL_TIMEOUT, ResourcePlan, StallError, StallWatchdog, plan_nodes, nodes_from_ray
from featx.errors import FeatxError
from featx.sources import Sample

log = logging.getLogger("featx")
# the module, not the function featx/__init__ exports under the same name
E = importlib.import_module("featx.extraction")

_SAMPLE_FIELDS = ("id", "path", "reader", "file", "index", "label", "group", "split", "duplicate_of")


# ----------------------------------------------------------------------------------------------
# Cluster


def init_ray(address: str | None = None, num_cpus: int | None = None):
    """Connect to ``address`` ("auto", "ray://host:port", "host:port"), or to ``$RAY_ADDRESS``, or
    start a local Ray with ``num_cpus``; reuses a Ray already initialised in this process."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        elif os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FeatxError(f"cannot connect to the Ray cluster at {address or os.environ.get('RAY_ADDRESS')} "
                         f"({first}); start one with `ray start --head`") from None
    return ray


def _probe_runtime(device: str, precision: str):
    """Resolve device/precision where the model will run (a worker may have a GPU the driver lacks)."""
    from featx.runtime import make_runtime
    rt = make_runtime(device, precision)
    return rt.device, rt.precision, rt.channels_last


# ----------------------------------------------------------------------------------------------
# Worker side


def _row_to_item(row) -> E._Item:
    def s(key):
        v = row[key]
        return v.decode() if isinstance(v, bytes) else str(v)
    sample = Sample(id=s("id"), path=s("path"), reader=s("reader"), file=s("file"),
                    index=s("index") or None, label=None, group="", split="")
    gm, hm = int(row["gmask"]), int(row["hmask"])
    return E._Item(sample, tuple(g for g in range(gm.bit_length()) if gm >> g & 1),
                   tuple(h for h in range(hm.bit_length()) if hm >> h & 1))


def _decode_batch(batch: dict, read_opts, preprocs, hand_specs) -> dict:
    """Ray task: decode + preprocess each sample (featx.extraction._Dataset), compute handcrafted sets.

    Output columns: k, error, m<g>/x<g> (mask and model input per preprocessing group, zeros
    where absent), h<h> (handcrafted vector as float32 bytes, b"" where absent)."""
    import torch
    torch.set_num_threads(1)
    n = len(batch["k"])
    items = [_row_to_item({key: batch[key][i] for key in batch}) for i in range(n)]
    ds = E._Dataset(items, read_opts, preprocs, hand_specs)
    out = {"k": np.asarray(batch["k"], np.int64), "error": np.array([""] * n, dtype=object)}
    for g, pre in enumerate(preprocs):
        out[f"m{g}"] = np.zeros(n, bool)
        out[f"x{g}"] = np.zeros((n, 3, *pre.crop_size), np.float32)
    for h in range(len(hand_specs)):
        out[f"h{h}"] = np.array([b""] * n, dtype=object)
    for i in range(n):
        r = ds[i]
        if r["error"]:
            out["error"][i] = r["error"]
            continue
        for g, t in r["tensors"].items():
            out[f"m{g}"][i] = True
            out[f"x{g}"][i] = t.numpy()
        for h, v in r["hand"].items():
            out[f"h{h}"][i] = np.asarray(v, np.float32).tobytes()
    return out


class _Embedder:
    """Ray actor: the frozen backbones of one run, built once, applied to decoded batches."""

    def __init__(self, cfg: E.ExtractConfig, layout: list[list[tuple[int, list[str]]]],
                 expect: list[dict], device: str, precision: str, threads: int):
        import torch

        from featx.backbones.precision import keep_sensitive_layers_fp32
        from featx.backbones.registry import build
        from featx.runtime import make_runtime
        torch.set_num_threads(max(1, int(threads)))
        self.runtime = make_runtime(device, precision)
        self.layout = layout
        self.models = []
        for bname, want in zip(cfg.backbones, expect):
            bb = build(bname, weights=cfg.weights, layers=list(cfg.layers) or None, pooling=cfg.pooling)
            got = bb.config()
            if C.config_json(got) != C.config_json(want):  # e.g. another weights file on this node
                raise FeatxError(f"backbone {bname!r} on a Ray worker differs from the driver's "
                                 f"(worker {C.config_json(got.get('weights'))}, driver "
                                 f"{C.config_json(want.get('weights'))}); install the same featx and weights on every node")
            if self.runtime.precision != "fp32":
                keep_sensitive_layers_fp32(bb.model.model)
            m = bb.model.to(self.runtime.device)
            if self.runtime.channels_last:
                m = m.to(memory_format=torch.channels_last)
            self.models.append(m)

    def __call__(self, batch: dict) -> dict:
        import torch
        n = len(batch["k"])
        out = {k: v for k, v in batch.items() if not k.startswith("x")}
        for g, (model, sets) in enumerate(zip(self.models, self.layout)):
            sel = np.flatnonzero(np.asarray(batch[f"m{g}"], bool))
            feats = E.run_model(model, torch.from_numpy(np.ascontiguousarray(batch[f"x{g}"][sel])), self.runtime) \
                if len(sel) else None
            for j, taps in sets:
                if feats is None:
                    out[f"f{j}"] = np.array([b""] * n, dtype=object)
                    continue
                X = np.concatenate([feats[t] for t in taps], axis=1).astype(np.float32)
                col = np.array([b""] * n, dtype=object)
                for r, i in enumerate(sel):
                    col[i] = X[r].tobytes()
                out[f"f{j}"] = col
        out["pid"] = np.full(n, os.getpid(), np.int64)
        return out


# ----------------------------------------------------------------------------------------------
# Driver side


def extract_ray(sources: Sequence[str | Path] | str | Path, cache: str | Path,
                backbones: Sequence[str] | str | None = ("efficientnet_lite0",),
                handcrafted: Sequence[str] | str | None = None, layers: Sequence[str] | str | None = None,
                pooling: str = "avg", weights: str | None = None, device: str = "auto",
                precision: str = "auto", batch_size: int = 32, workers: int | None = None,
                strict: bool = False, window=None, intensity: str = "auto", concat_layers: bool = False,
                jpeg_draft: bool = True, allow_outside: bool = False, name: str | None = None,
                progress: bool = True, config: E.ExtractConfig | None = None, *,
                address: str | None = None, num_cpus: int | None = None,
                max_attempts: int = 3, stall_timeout: float | None = DEFAULT_STALL_TIMEOUT) -> E.ExtractSummary:
    """``featx.extraction.extract`` on Ray; same arguments, same cache. ``workers`` is the number of model
    actors (default: one per GPU, or one per 4 CPUs of each node); ``address`` as ``ray.init``
    (``None``: ``$RAY_ADDRESS`` or a local Ray with ``num_cpus``); a run that makes no progress for
    ``stall_timeout`` seconds stops (None: never) and keeps the rows it computed."""
    return E.extract(sources, cache, backbones=backbones, handcrafted=handcrafted, layers=layers, pooling=pooling,
                     weights=weights, device=device, precision=precision, batch_size=batch_size, workers=workers,
                     strict=strict, window=window, intensity=intensity, concat_layers=concat_layers,
                     jpeg_draft=jpeg_draft, allow_outside=allow_outside, name=name, progress=progress,
                     config=config, engine=RayEngine(address, num_cpus, max_attempts, stall_timeout))


class RayEngine(E.LocalEngine):
    """featx.extraction's run on Ray: the runtime is resolved on a worker (it may have a GPU the
    driver lacks) and the items run through Ray Data (decode tasks -> model actors)."""

    name = "ray"

    def __init__(self, address: str | None, num_cpus: int | None, max_attempts: int,
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT):
        self.address, self.num_cpus, self.max_attempts = address, num_cpus, max_attempts
        self.stall_timeout = stall_timeout
        StallWatchdog(stall_timeout)        # a bad timeout is refused before anything starts
        self.use_gpu = False
        self.plan: ResourcePlan | None = None

    def check(self, cfg: E.ExtractConfig) -> None:
        if cfg.device == "mps":
            raise FeatxError("--engine ray runs models on cpu or cuda, not mps")
        require_ray()

    def runtime(self, cfg: E.ExtractConfig):
        from featx.runtime import Runtime
        ray = init_ray(self.address, self.num_cpus)
        self.plan = plan_resources(cfg, ray.nodes())     # refuses a plan the nodes cannot hold
        self.use_gpu = self.plan.use_gpu
        probe = ray.remote(num_gpus=1 if self.use_gpu else 0, num_cpus=0)(_probe_runtime)
        dev, prec, cl = ray.get(probe.remote("cuda" if self.use_gpu else "cpu", cfg.precision))
        return Runtime(dev, prec, cl)

    def execute(self, items, plans, hand, cfg, runtime, cache, summary, progress, failures) -> None:
        ray = init_ray(self.address, self.num_cpus)
        resources = self.plan if plans else plan_resources(cfg, ray.nodes(), model=False)
        _extract_items(items, plans, hand, cfg, runtime, resources, cache, summary, progress,
                       failures, self.max_attempts, self.stall_timeout)


def plan_resources(cfg: E.ExtractConfig, ray_nodes: list[dict], model: bool = True) -> ResourcePlan:
    """The per-node plan (featx.engines.ray_plan) for ``cfg`` on ``ray.nodes()``; raises a one-line
    PlacementError when the nodes cannot hold it."""
    return plan_nodes(nodes_from_ray(ray_nodes), cfg.workers, cfg.device, model)


def _results(ds, poll: float):
    """``ds.iter_batches`` read in a thread: yields each batch, or None every ``poll`` seconds
    without one (so the driver can watch for a stall while Ray waits)."""
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def run():
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                while not stop.is_set():
                    try:
                        q.put(("batch", out), timeout=poll)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as e:  # handed to the driver
            q.put(("error", e))

    reader = threading.Thread(target=run, name="featx-ray-results", daemon=True)
    reader.start()
    try:
        while True:
            try:
                kind, val = q.get(timeout=poll)
            except queue.Empty:
                yield None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise val
            yield val
    finally:
        stop.set()
        if reader.is_alive():   # the driver gave up (stall, Ctrl-C): stop Ray Data's executor too
            executor = getattr(ds, "_current_executor", None)   # Ray Data keeps no public handle
            if executor is not None:
                executor.shutdown(force=True)
            reader.join(timeout=10)


def _extract_items(items, plans, hand, cfg, runtime, resources, cache, summary, progress, failures, max_attempts,
                   stall_timeout=DEFAULT_STALL_TIMEOUT):
    import ray
    from tqdm import tqdm

    preprocs = [p.backbone.preprocess for p in plans]
    read_opts = [cfg.read_options(p.resize_size) for p in preprocs] + [cfg.read_options(None)]
    n_act, act_cpus, dec_cpus, threads = (resources.actors, resources.actor_cpus, resources.decode_cpus,
                                         resources.threads)
    use_gpu = resources.use_gpu
    log.info("ray plan: %s", resources.describe())
    watchdog = StallWatchdog(stall_timeout)
    layout, sets, j = [], [], 0
    for p in plans:
        layout.append([])
        for d in p.sets:
            layout[-1].append((j, list(d.taps)))
            sets.append(d)
            j += 1
    expect = [p.backbone.config() for p in plans]
    summary.runtime = (f"ray {n_act} x {runtime.describe()}" if plans else "ray cpu (handcrafted)")
    journal = C.Journal(cache)
    done: set[int] = set()
    n_ok = n_fail = 0
    pids: set[int] = set()
    bar = tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True,
               desc=f"extract [{summary.runtime}]")
    t_start = time.perf_counter()
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True    # same row order in the cache as the local path
    ctx.enable_progress_bars = False
    data_log = logging.getLogger("ray.data")
    saved_level = data_log.level
    data_log.setLevel(logging.WARNING)
    try:
        for attempt in range(max(1, max_attempts)):
            todo = [k for k in range(len(items)) if k not in done]
            if not todo:
                break
            if attempt:
                log.warning("ray: %d samples came back from no worker; running them again (attempt %d)",
                            len(todo), attempt + 1)
            rows = [{"k": k, "id": items[k].sample.id, "path": items[k].sample.path,
                     "reader": items[k].sample.reader, "file": items[k].sample.file,
                     "index": items[k].sample.index or "",
                     "gmask": sum(1 << g for g in items[k].groups), "hmask": sum(1 << h for h in items[k].hand)}
                    for k in todo]
            n_blocks = max(1, min(2000, math.ceil(len(rows) / cfg.batch_size)))
            ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
            ds = ds.map_batches(_decode_batch, batch_size=cfg.batch_size, batch_format="numpy",
                                fn_kwargs=dict(read_opts=read_opts, preprocs=preprocs,
                                               hand_specs=[h.spec for h in hand]),
                                num_cpus=dec_cpus)
            if plans:
                ds = ds.map_batches(_Embedder, batch_size=cfg.batch_size, batch_format="numpy",
                                    fn_constructor_kwargs=dict(cfg=cfg, layout=layout, expect=expect,
                                                               device=runtime.device, precision=runtime.precision,
                                                               threads=threads),
                                    compute=ray.data.ActorPoolStrategy(size=n_act),  # = concurrency=n_act
                                    num_gpus=1 if use_gpu else 0, num_cpus=act_cpus)
            watchdog.progressed()
            for out in _results(ds, poll=1.0):
                if out is None:     # nothing yet: say what it waits for, stop after --stall-timeout
                    note = watchdog.waiting_note(resources, ray.available_resources()
                                                 if watchdog.idle() >= watchdog.note_after else None)
                    if note:
                        bar.set_postfix_str(note)
                    watchdog.check(note)
                    continue
                watchdog.progressed()
                rec, good = C.BatchRecord(), []
                for i, k in enumerate(np.asarray(out["k"], np.int64)):
                    k = int(k)
                    if k in done:           # a retried batch: keep the first copy
                        continue
                    done.add(k)
                    item = items[k]
                    err = str(out["error"][i])
                    if err:
                        failures.append((item.sample.path, err, "decode"))
                        rec.failures.append((item.sample.path, err, "decode"))
                        log.warning("%s: %s", item.sample.path, err)
                        n_fail += 1
                        continue
                    good.append((i, item))
                    rec.add_sample(item.sample)
                if "pid" in out:
                    pids.update(int(p) for p in np.unique(out["pid"]))
                for g, plan in enumerate(plans):
                    rows_g = [(i, item) for i, item in good if g in item.groups]
                    if not rows_g:
                        continue
                    ids = [item.sample.id for _, item in rows_g]
                    for jj, _taps in layout[g]:
                        d = sets[jj]
                        X = np.stack([np.frombuffer(out[f"f{jj}"][i], np.float32) for i, _ in rows_g])
                        E._check_finite(X, d.name, [item.sample.path for _, item in rows_g])
                        rec.sets.append(C.SetRows(d.name, d.config, "deep", ids, X, d.request))
                for h, hs in enumerate(hand):
                    rows_h = [(i, item) for i, item in good if h in item.hand]
                    if rows_h:
                        rec.sets.append(C.SetRows(hs.name, hs.config, "handcrafted",
                                                  [item.sample.id for _, item in rows_h],
                                                  np.stack([np.frombuffer(out[f"h{h}"][i], np.float32)
                                                            for i, _ in rows_h])))
                if rec.ids or rec.failures:
                    journal.append(rec)
                n_ok += len(good)
                bar.update(len(good) + len(rec.failures))
                el = time.perf_counter() - t_start
                bar.set_postfix_str(f"{n_ok / el:.1f} img/s, {n_fail} failed", refresh=False)
        missing = len(items) - len(done)
        if missing:
            raise FeatxError(f"ray: {missing} samples were not computed after {max_attempts} attempts; "
                             "the rows that were computed are cached (run again to resume)", cache)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: saving what was computed")
    except StallError as e:         # keep what is done: the journaled rows go into the cache now
        bar.close()
        C.commit(cache)
        raise StallError(f"{e.reason}; the {n_ok} rows computed before are committed (run again to resume)",
                         cache) from None
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        data_log.setLevel(saved_level)
        bar.close()
    summary.ok = n_ok
    summary.worker_pids = sorted(pids)  # type: ignore[attr-defined]
    source_failures = [f for f in failures if f[2] == "source"]
    if source_failures:
        journal.append(C.BatchRecord(failures=source_failures))
