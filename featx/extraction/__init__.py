"""The extraction stage: sources -> decode + preprocess (workers) -> extractors -> cache.

``extract(sources, cache, ...)`` is the one entry point; the CLI and the scikit-learn transformers
call it. It computes only what the cache lacks: the same config on the same images computes
nothing, new images compute only themselves, a new config adds a feature set. Results go
through the cache's journal, so an interrupted run loses at most the batch in flight.

Modules: ``options`` (ExtractConfig, its checks, ExtractSummary), ``engine`` (the Engine protocol
and LocalEngine), ``decode`` (the worker side), ``records`` (a batch -> a journal record, the
progress bar). Set configs and names come from featx.setconfig.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from featx import cache as C
from featx import setconfig
from featx.errors import FeatxError, SourceError
from featx.extraction.decode import WorkItem
from featx.extraction.engine import DeepPlan, Engine, EngineResult, ExtractJob, LocalEngine
from featx.extraction.options import ExtractConfig, ExtractSummary, check_config
from featx.extraction.records import RunBar
from featx.sources import scan_sources
from featx.views import parse_views

__all__ = ["DeepPlan", "Engine", "EngineResult", "ExtractConfig", "ExtractJob", "ExtractSummary",
           "LocalEngine", "check_config", "extract", "run"]

log = logging.getLogger("featx")


def _tup(v) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return tuple(x.strip() for x in v.split(",") if x.strip())
    return tuple(v)


def extract(sources: Sequence[str | Path] | str | Path, cache: str | Path,
            backbones: Sequence[str] | str | None = ("efficientnet_lite0",),
            handcrafted: Sequence[str] | str | None = None, layers: Sequence[str] | str | None = None,
            pooling: str = "avg", weights: str | None = None, device: str = "auto",
            precision: str = "auto", batch_size: int = 32, workers: int | None = None,
            strict: bool = False, window=None, intensity: str = "auto", concat_layers: bool = False,
            jpeg_draft: bool = True, allow_outside: bool = False, name: str | None = None,
            progress: bool = True, compile: str = "auto", config: ExtractConfig | None = None,
            engine: Engine | None = None, rehash: bool = False, tta=()) -> ExtractSummary:
    """Extract features of every image in ``sources`` into the HDF5 ``cache``; see ExtractConfig.

    ``engine`` runs the batches: None (this machine, LocalEngine) or
    ``featx.engines.ray.RayEngine(address=...)``. Every name (backbones, layers, pooling,
    precision, handcrafted sets) is checked before the sources are scanned. ``compile``: "on" runs
    the backbones compiled (an AOTInductor package, featx.backbones.inference), "auto" does when the
    run computes at least featx.backbones.inference.AUTO_COMPILE_MIN_IMAGES images
    (AUTO_COMPILE_CACHED_MIN_IMAGES when the package is already in the on-disk cache), "off" never; Ray actors compile too."""
    if config is None:
        config = ExtractConfig(backbones=_tup(backbones),
                               handcrafted=(handcrafted,) if isinstance(handcrafted, str) else _tup(handcrafted),
                               layers=_tup(layers), concat_layers=concat_layers, pooling=pooling, weights=weights,
                               device=device, precision=precision, batch_size=int(batch_size), workers=workers,
                               window=window, intensity=intensity, jpeg_draft=jpeg_draft, strict=strict,
                               allow_outside=allow_outside, name=name, compile=compile, rehash=rehash,
                               tta=parse_views(tta))
    if isinstance(sources, (str, Path)):
        sources = [sources]
    return run(list(sources), Path(cache), config, progress, engine or LocalEngine())


def _cached_deep_sets(cfg: ExtractConfig, state: C.CacheState, ids: list[str]) -> list[str] | None:
    """Names of the sets the same request made before, if all of them hold every id; else None."""
    names = []
    want = set(ids)
    for b in cfg.backbones:
        key = setconfig.request_key(cfg, b)
        hits = [n for k, n in state.requests.items() if k == key]
        if not hits or not all(want <= state.done.get(n, set()) for n in hits):
            return None
        names.extend(sorted(hits))
    return names


def _metadata_updates(samples, state: C.CacheState, computing: set[str]) -> C.BatchRecord:
    """Labels, groups or splits the sources now give for cached samples that had none."""
    rec = C.BatchRecord()
    row = {i: r for r, i in enumerate(state.ids)}
    for s in samples:
        r = row.get(s.id)
        if r is None or s.id in computing:
            continue
        if (s.label and not state.labels[r]) or (s.group and not state.groups[r]) or (s.split and not state.splits[r]):
            rec.add_sample(s)
    return rec


def _deep_plans(cfg: ExtractConfig, runtime) -> list[DeepPlan]:
    from featx.backbones.inference import prepare_model
    plans = []
    for bname in cfg.backbones:
        prepared = prepare_model(bname, runtime, weights=cfg.weights, layers=cfg.layers, pooling=cfg.pooling,
                                 views=cfg.tta)
        plans.append(DeepPlan(prepared, setconfig.deep_sets(cfg, prepared.backbone, runtime.precision)))
    return plans


def _adopt_compiled_sets(plans: list[DeepPlan], existing: dict[str, dict]) -> None:
    """A set first made compiled differs from this run's only by its ``compiled`` record: this
    run extends it (compiled or not) rather than starting a twin set."""
    for plan in plans:
        for s in plan.sets:
            found = existing.get(s.name)
            if found and "compiled" in found and {k: v for k, v in found.items() if k != "compiled"} == s.config:
                s.config = dict(found)


def _compile_plans(plans: list[DeepPlan], cfg: ExtractConfig, n_images: int, existing: dict[str, dict]) -> None:
    """Compile the plans' models when ``cfg.compile`` says so for ``n_images`` images ("auto":
    a long run, or a shorter one whose compiled graph is already in the on-disk cache). A new set
    records ``compiled`` in its config; a set the cache already holds keeps its config (compiled
    features match eager ones to float rounding, see featx.backbones.inference). Every engine
    runs what is decided here (the Ray actors compile their own copy)."""
    from featx.backbones.inference import COMPILED_RECORD, compile_model, graph_is_cached, should_compile
    if not plans or cfg.compile == "off":
        return
    for plan in plans:
        cached = cfg.compile == "auto" and graph_is_cached(plan.prepared, cfg.batch_size)
        if not should_compile(cfg.compile, n_images, graph_cached=cached):
            continue
        plan.prepared = compile_model(plan.prepared, cfg.batch_size)
        for s in plan.sets:
            if s.name not in existing:
                s.config["compiled"] = dict(COMPILED_RECORD)


def _work_items(samples, plans: list[DeepPlan], hand, state: C.CacheState) -> list[WorkItem]:
    """The samples some set still lacks, each with the backbones and handcrafted sets it needs."""
    items = []
    for s in samples:
        groups = tuple(g for g, p in enumerate(plans) if any(s.id not in state.done.get(d.name, ()) for d in p.sets))
        hneed = tuple(h for h, hs in enumerate(hand) if s.id not in state.done.get(hs.name, ()))
        if groups or hneed:
            items.append(WorkItem(s, groups, hneed))
    return items


def _log_scan(scan) -> None:
    for f in scan.failures:
        log.warning("%s: %s", f.path, f.reason)
    if scan.warnings:
        log.info("%d files have byte-identical copies (kept as separate samples, listed in "
                 "/samples/duplicate_of; -v lists them)", len(scan.warnings))
        for w in scan.warnings:
            log.debug("duplicate content: %s", w)


def run(sources: list, cache: Path, cfg: ExtractConfig, progress: bool, engine: Engine) -> ExtractSummary:
    """One extraction run of ``cfg`` over ``sources`` into ``cache`` by ``engine`` (see extract)."""
    t0 = time.perf_counter()
    check_config(cfg)
    engine.check(cfg)
    summary = ExtractSummary(cache=str(cache))
    memo = None if cfg.rehash or not cache.exists() else C.read_memo(cache)  # unchanged files are not read again
    scan = scan_sources(sources, allow_outside=cfg.allow_outside, memo=memo)
    _log_scan(scan)
    summary.warnings = list(scan.warnings)
    if not scan.samples:
        if scan.failures:
            raise SourceError(f"no usable image in {', '.join(map(str, sources))} "
                              f"({len(scan.failures)} inputs failed; first: {scan.failures[0].path}: {scan.failures[0].reason})")
        raise SourceError(f"no images found in {', '.join(map(str, sources))}")

    cache.parent.mkdir(parents=True, exist_ok=True)
    with C.CacheLock(cache):
        recovered = C.commit(cache) if C.pending_records(cache) else None
        if recovered and recovered["records"]:
            log.info("recovered %d rows from an interrupted run", recovered["rows"])
        state = C.read_state(cache)

        hand = setconfig.hand_sets(cfg)
        setconfig.assign_names(hand, state.sets)
        ids = [s.id for s in scan.samples]
        cached = _cached_deep_sets(cfg, state, ids)
        result = EngineResult()
        source_failures = [(f.path, f.reason, "source") for f in scan.failures]
        items: list[WorkItem] = []
        bar = None
        try:
            if cached is not None and all(set(ids) <= state.done.get(h.name, set()) for h in hand):
                # The same request made these sets before and they hold every image: build nothing.
                summary.sets = cached + [h.name for h in hand]
                summary.reused = len(ids)
                summary.runtime = "cached"
            else:
                bar = RunBar(len(ids), engine.name if cfg.backbones else "cpu (handcrafted)", progress,
                             status="loading model" if cfg.backbones else "decoding")
                runtime = engine.runtime(cfg) if cfg.backbones else None
                plans = _deep_plans(cfg, runtime) if cfg.backbones else []
                _adopt_compiled_sets(plans, state.sets)
                setconfig.assign_names([s for p in plans for s in p.sets], state.sets)
                summary.sets = [s.name for p in plans for s in p.sets] + [h.name for h in hand]
                summary.runtime = runtime.describe() if runtime else "cpu (handcrafted)"
                items = _work_items(scan.samples, plans, hand, state)
                summary.reused = len(ids) - len(items)
                _compile_plans(plans, cfg, len(items), state.sets)
                bar.relabel(summary.runtime, total=len(items))
            updates = _metadata_updates(scan.samples, state, {i.sample.id for i in items})
            if updates.ids:
                C.Journal(cache).append(updates)
            if items:
                result = engine.execute(ExtractJob(items, plans, hand, cfg, runtime, cache, bar))
        except FeatxError:
            # a run stopped by an error (a stalled cluster, a non-finite batch) keeps what it did:
            # the rows already journaled go into the cache before the error is reported
            if bar is not None:
                bar.close()
            if C.pending_records(cache):
                C.commit(cache)
            raise
        finally:
            if bar is not None:
                bar.close()
        failures = source_failures + result.failures
        if source_failures:
            C.Journal(cache).append(C.BatchRecord(failures=source_failures))
        C.commit(cache)
    summary.ok = result.ok
    summary.interrupted = result.interrupted
    summary.runtime = result.runtime or summary.runtime
    summary.worker_pids = list(result.worker_pids)
    summary.failed = len(failures)
    summary.failures = [(p, r) for p, r, _ in failures]
    summary.seconds = time.perf_counter() - t0
    summary.images_per_s = summary.ok / summary.seconds if summary.seconds > 0 else 0.0
    if cfg.strict and summary.failed:
        raise FeatxError(f"{summary.failed} inputs failed and --strict is set (first: "
                         f"{summary.failures[0][0]}: {summary.failures[0][1]}); the rows that worked are cached")
    return summary
