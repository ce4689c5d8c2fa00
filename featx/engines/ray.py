"""Extraction on a Ray cluster: ``featx extract ... --engine ray [--address auto|ray://HOST:PORT]``.

The pipeline is featx's own (featx.extraction), spread over Ray:

    samples (featx.sources.scan_sources, on the driver)
      -> ray.data.from_items                      one row per sample that still needs work
      -> map_batches(_decode_batch)               Ray tasks: decode + preprocess + handcrafted sets
      -> map_batches(_Embedder, concurrency=N)    one actor per GPU (or CPU slot) holding the
                                                  frozen backbones, built once per actor
         (or, handcrafted only, _journal_task)    the worker that made a batch's rows writes its
                                                  journal record (featx.cache.Journal) itself
      -> iter_batches on the driver               only ids, errors and pids come back
      -> featx.cache.commit                       the driver folds the records in, atomically

It is an engine of ``featx.extraction.extract`` (``extract(..., engine=RayEngine(address=...))``):
checks, scanning, set names, configs and request keys (featx.setconfig), the model
(featx.backbones.inference.prepare_model) and the journal records (featx.extraction.records) are
the local path's own, so ``featx fit`` cannot tell the two apart; rows that the cache already holds are skipped; the cache lock is held for the run.
Workers write their rows as journal records beside the cache, so the cache's folder must be on
storage every node shares (as the images must be, at the same paths); no feature row passes
through the driver, which only commits. A record is written under a temporary name and renamed
whole, so a worker killed while writing leaves a ``.tmp`` file that nothing reads (the next commit
removes it) and its batch is run again.

Fault tolerance: Ray Data restarts a dead actor and retries its batch (``max_restarts=-1``,
``max_task_retries=-1``) and retries failed decode tasks; rows are keyed by sample id, so a row
written twice (a retried batch) is committed once, and any sample still missing at the end is run
again (``max_attempts``).
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from featx import cache as C
from featx.engines import require_ray
from featx.engines.ray_plan import (DEFAULT_STALL_TIMEOUT, ResourcePlan, StallError, StallWatchdog, nodes_from_ray,
                                    plan_nodes)
from featx.errors import FeatxError
from featx.extraction import extract
from featx.extraction.decode import DecodeDataset, WorkItem
from featx.extraction.engine import EngineResult, ExtractJob
from featx.extraction.options import ExtractConfig, ExtractSummary
from featx.extraction.records import BatchOutputs, batch_record
from featx.sources import Sample

log = logging.getLogger("featx")


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


def _row_to_item(row) -> WorkItem:
    def s(key):
        v = row[key]
        return v.decode() if isinstance(v, bytes) else str(v)
    stat = tuple(int(row[f"st{j}"]) for j in range(4))
    sample = Sample(id=s("id"), path=s("path"), reader=s("reader"), file=s("file"),
                    index=s("index") or None, label=s("label") or None, group=s("group"), split=s("split"),
                    duplicate_of=s("dup"), file_stat=None if stat[0] < 0 else stat,
                    file_frames=int(row["frames"]), header_group=s("hgroup"))
    gm, hm = int(row["gmask"]), int(row["hmask"])
    return WorkItem(sample, tuple(g for g in range(gm.bit_length()) if gm >> g & 1),
                    tuple(h for h in range(hm.bit_length()) if hm >> h & 1))


def _decode_batch(batch: dict, read_opts, preprocs, hand_specs) -> dict:
    """Ray task: decode + preprocess each sample (featx.extraction.decode.DecodeDataset), compute
    handcrafted sets.

    Output columns: k, error, m<g>/x<g> (mask and model input per backbone, zeros where absent),
    h<h> (handcrafted vector as float32 bytes, b"" where absent)."""
    import torch
    torch.set_num_threads(1)
    n = len(batch["k"])
    items = [_row_to_item({key: batch[key][i] for key in batch}) for i in range(n)]
    ds = DecodeDataset(items, read_opts, preprocs, hand_specs)
    out = {key: batch[key] for key in batch}        # the rows' samples, for the journal record
    out["k"] = np.asarray(batch["k"], np.int64)
    out["error"] = np.array([""] * n, dtype=object)
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


@dataclass(frozen=True)
class RecordSpec:
    """What a worker needs to write its batches' journal records: the cache, the driver's journal
    token, and the sets of each backbone (featx.setconfig.DeepSet) and the handcrafted sets."""

    cache: str
    token: tuple[int, str]
    deep_sets: list
    hand: list


def _write_records(batch: dict, spec: RecordSpec, deep: dict[int, dict[str, np.ndarray]] | None = None) -> dict:
    """Write the journal record of a decoded (and embedded) batch; return its small summary
    columns: k, error, fatal (a FeatxError that must stop the run, "" if none) and pid.

    ``deep[g]`` holds backbone g's outputs for the rows with mask m<g>, in row order."""
    n = len(batch["k"])
    items = [_row_to_item({key: batch[key][i] for key in batch}) for i in range(n)]
    errors = [str(e) for e in batch["error"]]
    out = BatchOutputs(decoded=[it for it, e in zip(items, errors) if not e],
                       errors=[(it, e) for it, e in zip(items, errors) if e])
    good = [i for i in range(n) if not errors[i]]
    for g, feats in (deep or {}).items():
        out.deep[g] = feats
    for h in range(len(spec.hand)):
        out.hand[h] = [np.frombuffer(batch[f"h{h}"][i], np.float32) for i in good if h in items[i].hand]
    fatal = ""
    try:
        rec = batch_record(out, [_SetsOf(sets) for sets in spec.deep_sets], spec.hand)
        if rec.ids or rec.failures:
            C.Journal(spec.cache, token=spec.token).append(rec, order=int(np.min(batch["k"])))
    except FeatxError as e:   # non-finite features, a journal that cannot be written: the driver stops
        fatal = str(e)
    return {"k": np.asarray(batch["k"], np.int64), "error": np.array(errors, dtype=object),
            "fatal": np.array([fatal] * n, dtype=object), "pid": np.full(n, os.getpid(), np.int64)}


@dataclass(frozen=True)
class _SetsOf:
    """A backbone's sets where batch_record expects a DeepPlan (it reads only ``sets``)."""

    sets: list


def _journal_task(batch: dict, spec: RecordSpec) -> dict:
    """Ray task (handcrafted sets only): write the decoded batch's journal record."""
    return _write_records(batch, spec)


class _Embedder:
    """Ray actor: the frozen backbones of one run, prepared once, applied to decoded batches.

    Each call writes the batch's journal record itself (_write_records) and returns only its
    summary columns: k, error, fatal and pid; no feature row goes back to the driver."""

    def __init__(self, cfg: ExtractConfig, expect: list[dict], device: str, precision: str, threads: int,
                 spec: RecordSpec, compiled: tuple[bool, ...] = ()):
        import torch

        from featx.backbones.inference import compile_model, prepare_model
        from featx.runtime import make_runtime
        torch.set_num_threads(max(1, int(threads)))
        runtime = make_runtime(device, precision)
        self.spec = spec
        self.prepared = []
        for g, (bname, want) in enumerate(zip(cfg.backbones, expect)):
            p = prepare_model(bname, runtime, weights=cfg.weights, layers=cfg.layers, pooling=cfg.pooling,
                              views=cfg.tta)
            got = p.backbone.config()
            if C.config_json(got) != C.config_json(want):  # e.g. another weights file on this node
                raise FeatxError(f"backbone {bname!r} on a Ray worker differs from the driver's "
                                 f"(worker {C.config_json(got.get('weights'))}, driver "
                                 f"{C.config_json(want.get('weights'))}); install the same featx and weights on every node")
            if g < len(compiled) and compiled[g]:   # as the driver decided (featx.extraction._compile_plans)
                p = compile_model(p, cfg.batch_size)
            self.prepared.append(p)

    def __call__(self, batch: dict) -> dict:
        import torch

        from featx.backbones.inference import run_model
        deep = {}
        for g, p in enumerate(self.prepared):
            sel = np.flatnonzero(np.asarray(batch[f"m{g}"], bool) & (batch["error"] == ""))
            if len(sel):
                x = torch.from_numpy(np.ascontiguousarray(batch[f"x{g}"][sel]))
                deep[g] = {tap: np.asarray(v, np.float32) for tap, v in run_model(p.model, x, p.runtime).items()}
        return _write_records({k: v for k, v in batch.items() if not k.startswith(("x", "m"))}, self.spec, deep)


# ----------------------------------------------------------------------------------------------
# Driver side


class RayEngine:
    """featx.extraction's run on Ray: the runtime is resolved on a worker (it may have a GPU the
    driver lacks) and the items run through Ray Data (decode tasks -> model actors).

    ``address`` as ``ray.init`` (None: ``$RAY_ADDRESS``, else a local Ray with ``num_cpus``);
    the run's ``workers`` is the number of model actors (default: one per GPU, or one per 4 CPUs
    of each node; see featx.engines.ray_plan); samples no worker returned are run again up to
    ``max_attempts`` times; a run that makes no progress for ``stall_timeout`` seconds stops (None:
    never) and keeps the rows it computed."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_attempts: int = 3,
                 stall_timeout: float | None = DEFAULT_STALL_TIMEOUT):
        self.address, self.num_cpus, self.max_attempts = address, num_cpus, max_attempts
        self.stall_timeout = stall_timeout
        StallWatchdog(stall_timeout)        # a bad timeout is refused before anything starts
        self.use_gpu = False
        self.plan: ResourcePlan | None = None

    def check(self, cfg: ExtractConfig) -> None:
        if cfg.device == "mps":
            raise FeatxError("--engine ray runs models on cpu or cuda, not mps")
        require_ray()

    def runtime(self, cfg: ExtractConfig):
        from featx.runtime import Runtime
        ray = init_ray(self.address, self.num_cpus)
        self.plan = plan_resources(cfg, ray.nodes())     # refuses a plan the nodes cannot hold
        self.use_gpu = self.plan.use_gpu
        probe = ray.remote(num_gpus=1 if self.use_gpu else 0, num_cpus=0)(_probe_runtime)
        dev, prec, cl = ray.get(probe.remote("cuda" if self.use_gpu else "cpu", cfg.precision))
        return Runtime(dev, prec, cl)

    def execute(self, job: ExtractJob) -> EngineResult:
        ray = init_ray(self.address, self.num_cpus)
        ctx = ray.data.DataContext.get_current()
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars)
        ctx.execution_options.preserve_order = True    # same row order in the cache as the local path
        ctx.enable_progress_bars = False
        data_log = logging.getLogger("ray.data")
        saved_level = data_log.level
        data_log.setLevel(logging.WARNING)
        result = EngineResult()
        try:
            self._run_attempts(ray, job, result)
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted: saving what was computed")
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
            data_log.setLevel(saved_level)
        return result

    def _run_attempts(self, ray, job: ExtractJob, result: EngineResult) -> None:
        cfg, items, plans = job.cfg, job.items, job.plans
        preprocs = [p.backbone.preprocess for p in plans]
        read_opts = [cfg.read_options(p.resize_size) for p in preprocs] + [cfg.read_options(None)]
        resources = self.plan if plans and self.plan else plan_resources(cfg, ray.nodes(), model=bool(plans))
        n_act, act_cpus, dec_cpus, threads = (resources.actors, resources.actor_cpus, resources.decode_cpus,
                                             resources.threads)
        log.info("ray plan: %s", resources.describe())
        watchdog = StallWatchdog(self.stall_timeout)
        result.runtime = f"ray {n_act} x {job.runtime.describe()}" if plans else "ray cpu (handcrafted)"
        job.bar.relabel(result.runtime)
        job.bar.status("decoding")
        spec = RecordSpec(str(job.cache), C.Journal(job.cache).token, [p.sets for p in plans], list(job.hand))
        done: set[int] = set()
        pids: set[int] = set()
        for attempt in range(max(1, self.max_attempts)):
            todo = [k for k in range(len(items)) if k not in done]
            if not todo:
                break
            if attempt:
                log.warning("ray: %d samples came back from no worker; running them again (attempt %d)",
                            len(todo), attempt + 1)
            rows = [_item_row(k, items[k]) for k in todo]
            n_blocks = max(1, min(2000, math.ceil(len(rows) / cfg.batch_size)))
            ds = ray.data.from_items(rows, override_num_blocks=n_blocks)
            ds = ds.map_batches(_decode_batch, batch_size=cfg.batch_size, batch_format="numpy",
                                fn_kwargs=dict(read_opts=read_opts, preprocs=preprocs,
                                               hand_specs=[h.spec for h in job.hand]),
                                num_cpus=dec_cpus)
            if plans:
                ds = ds.map_batches(_Embedder, batch_size=cfg.batch_size, batch_format="numpy",
                                    fn_constructor_kwargs=dict(cfg=cfg, expect=[p.backbone.config() for p in plans],
                                                               device=job.runtime.device,
                                                               precision=job.runtime.precision, threads=threads,
                                                               spec=spec,
                                                               compiled=tuple(p.prepared.compiled for p in plans)),
                                    compute=ray.data.ActorPoolStrategy(size=n_act),  # = concurrency=n_act
                                    num_gpus=1 if resources.use_gpu else 0, num_cpus=act_cpus)
            else:
                ds = ds.map_batches(_journal_task, batch_size=None, batch_format="numpy",
                                    fn_kwargs=dict(spec=spec), num_cpus=dec_cpus)
            watchdog.progressed()
            for out in _results(ds, poll=1.0):
                if out is None:     # nothing yet: say what it waits for, stop after --stall-timeout
                    note = watchdog.waiting_note(resources, ray.available_resources()
                                                 if watchdog.idle() >= watchdog.note_after else None)
                    if note:
                        job.bar.status(note)
                    try:
                        watchdog.check(note)
                    except StallError as e:  # keep what is done: the journaled rows are committed by the run
                        result.worker_pids = sorted(pids)
                        raise StallError(f"{e.reason}; the {_journaled_samples(job.cache, spec.token)} rows "
                                         "computed before are committed (run again to resume)", job.cache) from None
                    continue
                watchdog.progressed()
                fatal = next((str(v) for v in out["fatal"] if str(v)), "")
                if fatal:
                    raise FeatxError(fatal)
                pids.update(int(p) for p in np.unique(out["pid"]))
                ok, failed = _tally(out, items, done, result)
                job.bar.advance(ok + failed, failed=failed)
        result.worker_pids = sorted(pids)
        missing = len(items) - len(done)
        if missing:
            raise FeatxError(f"ray: {missing} samples were not computed after {self.max_attempts} attempts; "
                             "the rows that were computed are cached (run again to resume)", job.cache)


def _item_row(k: int, item: WorkItem) -> dict:
    """The Ray Data row of item ``k``: its sample (for the worker's journal record) and what it needs."""
    s = item.sample
    stat = s.file_stat or (-1, -1, -1, -1)
    return {"k": k, "id": s.id, "path": s.path, "reader": s.reader, "file": s.file, "index": s.index or "",
            "label": s.label or "", "group": s.group, "split": s.split, "dup": s.duplicate_of,
            **{f"st{j}": int(v) for j, v in enumerate(stat)}, "frames": int(s.file_frames), "hgroup": s.header_group,
            "gmask": sum(1 << g for g in item.groups), "hmask": sum(1 << h for h in item.hand)}


def _journaled_samples(cache: Path, token: tuple[int, str]) -> int:
    """Samples with rows in the journal records the workers of this run (``token``) wrote: what the
    commit will add, counted whether or not their batches came back to the driver."""
    prefix = f"{token[0]:08d}-{token[1]}-"
    ids: set[str] = set()
    for p in C.pending_records(cache):
        rec = C.read_record(p) if p.name.startswith(prefix) else None
        if rec is not None:
            ids.update(rec.ids)
    return len(ids)


def _tally(out: dict, items: list[WorkItem], done: set[int], result: EngineResult) -> tuple[int, int]:
    """Count a batch the workers journaled: (samples done, failed); a sample seen before (a retried
    batch) counts once. Decode failures are logged here (the workers' logs stay on their nodes)."""
    ok = failed = 0
    for k, err in zip(np.asarray(out["k"], np.int64).tolist(), out["error"]):
        if k in done:
            continue
        done.add(k)
        if str(err):
            failed += 1
            result.failures.append((items[k].sample.path, str(err), "decode"))
            log.warning("%s: %s", items[k].sample.path, err)
        else:
            ok += 1
    result.ok += ok
    return ok, failed


def plan_resources(cfg: ExtractConfig, ray_nodes: list[dict], model: bool = True) -> ResourcePlan:
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


def extract_ray(sources: Sequence[str | Path] | str | Path, cache: str | Path, *, address: str | None = None,
                num_cpus: int | None = None, max_attempts: int = 3,
                stall_timeout: float | None = DEFAULT_STALL_TIMEOUT, **options) -> ExtractSummary:
    """``extract(sources, cache, engine=RayEngine(address, num_cpus, max_attempts, stall_timeout), **options)``;
    ``options`` are featx.extraction.extract's."""
    return extract(sources, cache, engine=RayEngine(address, num_cpus, max_attempts, stall_timeout), **options)
