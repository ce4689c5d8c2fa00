"""The extraction stage: sources -> decode + preprocess (worker processes) -> extractors -> cache.

``extract(sources, cache, ...)`` is the one entry point; the CLI and the scikit-learn transformers
call it. It computes only what the cache lacks: the same config on the same images computes
nothing, new images compute only themselves, a new config adds a feature set. Results go
through the cache's journal, so an interrupted run loses at most the batch in flight.
"""
from __future__ import annotations

import hashlib
import logging
import signal
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from featx import __version__
from featx import cache as C
from featx.errors import FeatxError, SourceError
from featx.sources import ReadOptions, Sample, scan_sources

log = logging.getLogger("featx")


@dataclass(frozen=True)
class ExtractConfig:
    """Every option of the extraction stage; saved (as JSON) beside each feature set's config."""

    backbones: tuple[str, ...] = ("efficientnet_lite0",)
    handcrafted: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    concat_layers: bool = False
    pooling: str = "avg"
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    window: str | tuple[float, float] | None = None
    intensity: str = "auto"
    jpeg_draft: bool = True
    strict: bool = False
    allow_outside: bool = False
    name: str | None = None

    def read_options(self, draft_size: int | None) -> ReadOptions:
        return ReadOptions(window=self.window, intensity=self.intensity,
                           draft_size=draft_size if self.jpeg_draft else None)


@dataclass
class ExtractSummary:
    cache: str
    ok: int = 0                  # samples newly computed (at least one set)
    reused: int = 0              # samples every requested set already had
    failed: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    sets: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    runtime: str = ""
    interrupted: bool = False

    def line(self) -> str:
        s = (f"{self.ok} extracted, {self.reused} reused, {self.failed} failed in {self.seconds:.1f} s "
             f"({self.images_per_s:.1f} images/s) -> {self.cache} [{', '.join(self.sets)}]")
        return ("interrupted: " + s) if self.interrupted else s


def _versions() -> dict:
    out = {"featx": __version__}
    for pkg in ("torch", "timm", "torchvision", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _safe(name: str) -> str:
    return name.replace("/", "_").replace(",", "_").replace("+", "_")


def _short_hash(cfg: dict) -> str:
    return hashlib.sha256(C.config_json(cfg).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------------
# Extractor plans


def _file_digest(path: str) -> str:
    from featx.sources.base import sha256_file
    try:
        return sha256_file(path)
    except OSError:
        return f"unreadable:{path}"


def request_key(cfg: ExtractConfig, backbone: str) -> str:
    """A key for the user-level options that decide a backbone's feature sets on this machine.

    When every set a request produced is already complete for the images at hand, the run reuses
    them without importing torch or building the network (what makes a re-run near-instant). The
    key holds the options, the weights file's digest, the package versions and whether the CPU
    runs bf16 natively (what ``--precision auto`` resolves by); each set's full config is stored
    beside it all the same.
    """
    from featx.runtime import cpu_has_native_bf16
    weights = cfg.weights
    if weights and str(weights).lower() != "none":
        weights = f"file:{_file_digest(str(weights))}"
    if weights is None:
        from featx.backbones.weights import ALIAS_ARCH, package_weights_path
        pkg = package_weights_path(ALIAS_ARCH.get(backbone, backbone))
        weights = f"package:{_file_digest(str(pkg))}" if pkg else "pretrained"
    d = {"backbone": backbone, "weights": weights, "layers": list(cfg.layers), "concat": cfg.concat_layers,
         "pooling": cfg.pooling, "precision": cfg.precision, "device": cfg.device, "name": cfg.name,
         "window": cfg.window, "intensity": cfg.intensity, "jpeg_draft": cfg.jpeg_draft,
         "cpu_bf16": cpu_has_native_bf16(), "versions": _versions()}
    return hashlib.sha256(C.config_json(d).encode()).hexdigest()[:16]


@dataclass
class DeepSet:
    name: str
    taps: list[str]          # taps concatenated into this set (one unless concat_layers)
    config: dict
    request: str = ""


@dataclass
class DeepPlan:
    backbone: object          # featx.backbones.registry.Backbone
    sets: list[DeepSet]


def _deep_plans(cfg: ExtractConfig, runtime) -> list[DeepPlan]:
    from featx.backbones.precision import POLICY, keep_sensitive_layers_fp32
    from featx.backbones.registry import build
    plans = []
    for bname in cfg.backbones:
        bb = build(bname, weights=cfg.weights, layers=list(cfg.layers) or None, pooling=cfg.pooling)
        base = _safe(bb.spec.name.rsplit("/", 1)[-1])
        if bb.weights.source == "none":
            base += "_random"
        elif bb.weights.source == "file":
            base += f"_w{bb.weights.sha256[:8]}"
        if runtime.precision != "fp32":
            keep_sensitive_layers_fp32(bb.model.model)
        common = dict(bb.config(), kind="deep", precision=runtime.precision,
                      **({"precision_policy": POLICY} if runtime.precision != "fp32" else {}),
                      read=cfg.read_options(bb.preprocess.resize_size).config(), versions=_versions())
        groups = [bb.taps] if cfg.concat_layers else [[t] for t in bb.taps]
        request = request_key(cfg, bname)
        sets = []
        for taps in groups:
            name = base if taps == ["head"] else f"{base}.{'-'.join(taps)}"
            if cfg.pooling != "avg":
                name += f"_{cfg.pooling}"
            if cfg.name:
                name = cfg.name if len(groups) == 1 and len(cfg.backbones) == 1 else f"{cfg.name}.{name}"
            sets.append(DeepSet(name, list(taps), dict(common, taps=list(taps)), request))
        plans.append(DeepPlan(bb, sets))
    return plans


@dataclass
class HandSet:
    name: str
    spec: object
    config: dict


def _hand_sets(cfg: ExtractConfig) -> list[HandSet]:
    if not cfg.handcrafted:
        return []
    from featx.handcrafted import parse_handcrafted
    out = []
    for spec in parse_handcrafted(list(cfg.handcrafted)):
        conf = dict(spec.config(), kind="handcrafted", read=cfg.read_options(None).config(), versions=_versions())
        out.append(HandSet(spec.name, spec, conf))
    return out


def _cached_deep_sets(cfg: ExtractConfig, state: C.CacheState, ids: list[str]) -> list[str] | None:
    """Names of the sets the same request made before, if all of them hold every id; else None."""
    names = []
    want = set(ids)
    for b in cfg.backbones:
        key = request_key(cfg, b)
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


def _assign_names(sets: list, state: C.CacheState) -> None:
    """Give each set a name that is free or already holds exactly its config."""
    taken = dict(state.sets)
    for s in sets:
        name = s.name
        if name in taken and C.config_json(taken[name]) != C.config_json(s.config):
            name = f"{s.name}@{_short_hash(s.config)}"
        s.name = name
        taken[name] = s.config


# ----------------------------------------------------------------------------------------------
# Worker side


@dataclass(frozen=True)
class _Item:
    sample: Sample
    groups: tuple[int, ...]      # preprocessing groups needed (index into the dataset's preprocs)
    hand: tuple[int, ...]        # handcrafted specs needed


class _Dataset:
    """Decodes one sample, preprocesses it for each backbone that needs it, computes handcrafted sets."""

    def __init__(self, items, read_opts, preprocs, hand_specs):
        self.items = items
        self.read_opts = read_opts      # one ReadOptions per preprocessing group, plus one for handcrafted
        self.preprocs = preprocs
        self.hand_specs = hand_specs

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from featx.backbones.preprocess import preprocess
        item = self.items[i]
        out = {"i": i, "error": None, "tensors": {}, "hand": {}}
        try:
            decoded: dict = {}

            def image(opts):
                if opts not in decoded:
                    decoded[opts] = item.sample.load(opts)
                return decoded[opts]

            for g in item.groups:
                out["tensors"][g] = preprocess(image(self.read_opts[g]), self.preprocs[g])
            if item.hand:
                from featx.handcrafted import compute_all
                specs = [self.hand_specs[h] for h in item.hand]
                vecs = compute_all(specs, image(self.read_opts[-1]))  # gray conversion once
                for h, spec in zip(item.hand, specs):
                    out["hand"][h] = np.asarray(vecs[spec.name], np.float32)
        except FeatxError as e:
            out["error"] = e.reason
        except Exception as e:  # a hostile file must not stop the run
            out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return out


def _collate(batch):
    return batch


def _worker_init(_):
    import threading

    import torch
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    # After a Ctrl-C the main process stops reading mid-batch; multiprocessing's fd-sharing
    # thread in this worker then hits a reset connection. That is the expected end, not an error.
    default_hook = threading.excepthook

    def quiet_hook(args):
        if not issubclass(args.exc_type, (ConnectionResetError, BrokenPipeError, EOFError)):
            default_hook(args)
    threading.excepthook = quiet_hook


# ----------------------------------------------------------------------------------------------
# The run


def extract(sources: Sequence[str | Path] | str | Path, cache: str | Path,
            backbones: Sequence[str] | str | None = ("efficientnet_lite0",),
            handcrafted: Sequence[str] | str | None = None, layers: Sequence[str] | str | None = None,
            pooling: str = "avg", weights: str | None = None, device: str = "auto",
            precision: str = "auto", batch_size: int = 32, workers: int | None = None,
            strict: bool = False, window=None, intensity: str = "auto", concat_layers: bool = False,
            jpeg_draft: bool = True, allow_outside: bool = False, name: str | None = None,
            progress: bool = True, config: ExtractConfig | None = None, engine=None) -> ExtractSummary:
    """Extract features of every image in ``sources`` into the HDF5 ``cache``; see ExtractConfig.

    ``engine`` runs the batches: None (this machine, LocalEngine) or featx.engines.ray.RayEngine."""
    def tup(v):
        if v is None:
            return ()
        if isinstance(v, str):
            return tuple(x.strip() for x in v.split(",") if x.strip())
        return tuple(v)

    if config is None:
        config = ExtractConfig(backbones=tup(backbones), handcrafted=(handcrafted,) if isinstance(handcrafted, str) else tup(handcrafted), layers=tup(layers),
                               concat_layers=concat_layers, pooling=pooling, weights=weights, device=device,
                               precision=precision, batch_size=int(batch_size), workers=workers,
                               window=window, intensity=intensity, jpeg_draft=jpeg_draft, strict=strict,
                               allow_outside=allow_outside, name=name)
    if isinstance(sources, (str, Path)):
        sources = [sources]
    return _run(list(sources), Path(cache), config, progress, engine)


class LocalEngine:
    """Runs the batches on this machine: DataLoader worker processes feed the model here.

    An engine is what ``_run`` asks for the two things that differ between local and distributed
    runs: the runtime (device and precision, resolved where the model will run) and the
    execution of the items still to compute. Scanning, locking, naming, reuse, metadata updates
    and the commit are shared (see featx.engines.ray for the other engine).
    """

    name = "local"

    def check(self, cfg: ExtractConfig) -> None:
        pass

    def runtime(self, cfg: ExtractConfig):
        from featx.runtime import make_runtime
        return make_runtime(cfg.device, cfg.precision)

    def execute(self, items, plans, hand, cfg, runtime, cache, summary, progress, failures) -> None:
        _extract_items(items, plans, hand, cfg, runtime, cache, summary, progress, failures)


def _run(sources: list, cache: Path, cfg: ExtractConfig, progress: bool, engine=None) -> ExtractSummary:
    t0 = time.perf_counter()
    engine = engine or LocalEngine()
    if not cfg.backbones and not cfg.handcrafted:
        raise FeatxError("nothing to extract: name a backbone and/or --handcrafted sets")
    if cfg.batch_size < 1:
        raise FeatxError(f"batch size must be at least 1, not {cfg.batch_size}")
    engine.check(cfg)
    summary = ExtractSummary(cache=str(cache))
    scan = scan_sources(sources, allow_outside=cfg.allow_outside)
    for f in scan.failures:
        log.warning("%s: %s", f.path, f.reason)
    for w in scan.warnings:
        log.info("duplicate content: %s", w)
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

        hand = _hand_sets(cfg)
        _assign_names(hand, state)
        ids = [s.id for s in scan.samples]
        cached = _cached_deep_sets(cfg, state, ids)
        runtime = None
        plans: list[DeepPlan] = []
        items: list[_Item] = []
        if cached is not None and all(set(ids) <= state.done.get(h.name, set()) for h in hand):
            # The same request made these sets before and they hold every image: build nothing.
            summary.sets = cached + [h.name for h in hand]
            summary.reused = len(ids)
            summary.runtime = "cached"
        else:
            if cfg.backbones:
                runtime = engine.runtime(cfg)
                plans = _deep_plans(cfg, runtime)
                _assign_names([s for p in plans for s in p.sets], state)
            summary.sets = [s.name for p in plans for s in p.sets] + [h.name for h in hand]
            summary.runtime = runtime.describe() if runtime else "cpu (handcrafted)"
            for s in scan.samples:  # what each sample still needs
                groups = tuple(g for g, p in enumerate(plans)
                               if any(s.id not in state.done.get(d.name, ()) for d in p.sets))
                hneed = tuple(h for h, hs in enumerate(hand) if s.id not in state.done.get(hs.name, ()))
                if groups or hneed:
                    items.append(_Item(s, groups, hneed))
                else:
                    summary.reused += 1
        failures = [(f.path, f.reason, "source") for f in scan.failures]
        updates = _metadata_updates(scan.samples, state, {i.sample.id for i in items})
        if updates.ids:
            C.Journal(cache).append(updates)
        if items:
            engine.execute(items, plans, hand, cfg, runtime, cache, summary, progress, failures)
        elif failures:
            C.Journal(cache).append(C.BatchRecord(failures=failures))
        C.commit(cache)
    summary.failed = len(failures)
    summary.failures = [(p, r) for p, r, _ in failures]
    summary.seconds = time.perf_counter() - t0
    summary.images_per_s = summary.ok / summary.seconds if summary.seconds > 0 else 0.0
    if cfg.strict and summary.failed:
        raise FeatxError(f"{summary.failed} inputs failed and --strict is set (first: "
                         f"{summary.failures[0][0]}: {summary.failures[0][1]}); the rows that worked are cached")
    return summary


def _extract_items(items, plans, hand, cfg, runtime, cache, summary, progress, failures):
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from concurrent.futures import ThreadPoolExecutor

    from featx.runtime import configure_threads, usable_cpus

    preprocs = [p.backbone.preprocess for p in plans]
    read_opts = [cfg.read_options(p.resize_size) for p in preprocs] + [cfg.read_options(None)]
    ds = _Dataset(items, read_opts, preprocs, [h.spec for h in hand])
    n_cpu = usable_cpus()
    workers = cfg.workers if cfg.workers is not None else (n_cpu if not plans else max(1, n_cpu - 1))
    if plans:
        configure_threads()
    on_cuda = runtime is not None and runtime.device_type == "cuda"
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, pin_memory=False, worker_init_fn=_worker_init if workers else None,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    models = []
    for p in plans:
        m = p.backbone.model.to(runtime.device)
        if runtime.channels_last:
            m = m.to(memory_format=torch.channels_last)
        models.append(m)
    journal = C.Journal(cache)
    bar = tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True,
               desc=f"extract [{summary.runtime}]")
    n_ok = n_fail = 0
    good: list = []
    writer = ThreadPoolExecutor(1, thread_name_prefix="featx-journal")
    pending = None  # (future, rows) of the journal write in flight

    def flush():
        """Wait for the write in flight; its rows count as done only once they are on disk."""
        nonlocal pending, n_ok
        if pending is not None:
            fut, count = pending
            pending = None
            fut.result()
            n_ok += count
    t_start = time.perf_counter()
    try:
        for batch in loader:
            rec = C.BatchRecord()
            good = []
            for out in batch:
                item = items[out["i"]]
                if out["error"]:
                    failures.append((item.sample.path, out["error"], "decode"))
                    rec.failures.append((item.sample.path, out["error"], "decode"))
                    log.warning("%s: %s", item.sample.path, out["error"])
                    n_fail += 1
                else:
                    good.append((item, out))
            for item, _ in good:
                rec.add_sample(item.sample)
            for g, (plan, model) in enumerate(zip(plans, models)):
                rows = [(item, out["tensors"][g]) for item, out in good if g in item.groups]
                if not rows:
                    continue
                x = torch.stack([t for _, t in rows])
                if on_cuda:
                    x = x.pin_memory()
                feats = run_model(model, x, runtime)
                ids = [item.sample.id for item, _ in rows]
                for dset in plan.sets:
                    X = np.concatenate([feats[t] for t in dset.taps], axis=1)
                    _check_finite(X, dset.name, [item.sample.path for item, _ in rows])
                    rec.sets.append(C.SetRows(dset.name, dset.config, "deep", ids, X, dset.request))
            for h, hs in enumerate(hand):
                rows = [(item, out["hand"][h]) for item, out in good if h in item.hand]
                if rows:
                    rec.sets.append(C.SetRows(hs.name, hs.config, "handcrafted", [i.sample.id for i, _ in rows],
                                              np.stack([v for _, v in rows])))
            # journal writes (npz + fsync) run on a writer thread, off the model's path; at most
            # one is in flight, so an error surfaces at the next batch and memory stays bounded
            flush()
            pending = (writer.submit(journal.append, rec), len(good))
            bar.update(len(batch))
            el = time.perf_counter() - t_start
            bar.set_postfix_str(f"{n_ok / el:.1f} img/s, {n_fail} failed", refresh=False)
    except KeyboardInterrupt:
        summary.interrupted = True
        log.warning("interrupted: saving what was computed")
    finally:
        bar.close()
        try:
            flush()
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            writer.shutdown(wait=True)
    summary.ok = n_ok
    source_failures = [f for f in failures if f[2] == "source"]
    if source_failures:
        journal.append(C.BatchRecord(failures=source_failures))


def run_model(model, x, runtime) -> dict[str, np.ndarray]:
    """One batch through a FeatureModel on the run's device and precision -> float32 numpy per tap."""
    import torch
    x = x.to(runtime.device, non_blocking=True)
    if runtime.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        if runtime.autocast_dtype is not None:
            with torch.autocast(device_type=runtime.device_type, dtype=runtime.autocast_dtype):
                feats = model(x)
        else:
            feats = model(x)
    return {k: v.float().cpu().numpy() for k, v in feats.items()}


def _check_finite(X: np.ndarray, name: str, paths: list[str]) -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        first = paths[int(np.flatnonzero(bad)[0])]
        raise FeatxError(f"feature set {name!r} produced non-finite values for {int(bad.sum())} images "
                         f"(first: {first}); try --precision fp32")
