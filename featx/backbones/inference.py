"""A backbone ready to run (built, precision policy, device, memory format, optionally compiled)
and one batch through it.

:func:`prepare_model` is what every caller of a network uses: local extraction, the Ray model
actors (featx.engines.ray) and the scikit-learn transformer (featx.deep.DeepFeatures), so the
three run the same model the same way. :func:`compile_model` turns a prepared model into one compiled ahead of
time by AOTInductor (graph freezing on; CPU and CUDA alike), its package cached on disk under
featx's cache dir (see featx.runtime.use_inductor_cache) so later runs load it in under a second.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("featx")

COMPILE_MODES = ("auto", "on", "off")

#: ``compile="auto"`` compiles when a run has at least this many images to compute. Break-even
#: n = compile_s / (1/eager_rate - 1/compiled_rate): resnet50 bf16 on 2 quiet cores, model-only
#: eager 31.9 and compiled 42.6 img/s, AOTInductor compile ~20 s -> ~2,600 images; EfficientNet-Lite0
#: (eager 63.5, compiled 100 img/s, compile ~22 s) ~3,800. Rounded to one figure for every backbone.
AUTO_COMPILE_MIN_IMAGES = 2500

#: ... and at least this many when this exact graph (backbone, weights, taps, views, device,
#: precision, batch size, torch version) was compiled before: its AOTInductor package is on disk
#: and loads in 0.3-1.2 s (a shared library and the frozen weights): break-even ~50 images
#: (resnet50) to ~70 (Lite0) by the figures above.
AUTO_COMPILE_CACHED_MIN_IMAGES = 64

#: what a compiled set records in its config (key ``compiled``; only when compiled)
COMPILED_RECORD = {"backend": "aot_inductor", "freezing": True}

@dataclass
class PreparedModel:
    backbone: object          # featx.backbones.registry.Backbone (name, preprocessing, weights, taps)
    model: object             # its FeatureModel on the runtime's device (a CompiledModel when compiled)
    runtime: object           # featx.runtime.Runtime
    views: tuple = ()         # test-time views the model averages over (featx.views)

    @property
    def compiled(self) -> bool:
        return isinstance(self.model, CompiledModel) and not self.model.fell_back


def prepare_model(name: str, runtime, weights=None, layers=None, pooling: str = "avg",
                  views=()) -> PreparedModel:
    """Build backbone ``name`` (see featx.backbones.registry.build), apply the precision policy
    (featx.backbones.precision) when ``runtime`` runs reduced precision, move it to the runtime's
    device, in channels_last memory format where that pays. ``views`` (featx.views: "flip",
    "vflip", "crop5"): the model returns each tap's mean over those test-time views of the input."""
    import torch

    from featx.backbones.precision import keep_sensitive_layers_fp32
    from featx.backbones.registry import build
    layers = [layers] if isinstance(layers, str) else list(layers or ())
    bb = build(name, weights=weights, layers=layers or None, pooling=pooling)
    if runtime.precision != "fp32":
        keep_sensitive_layers_fp32(bb.model.model)
    model = bb.model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if views:
        from featx.backbones.tta import ViewAveraged
        model = ViewAveraged(model, tuple(views)).eval()
    return PreparedModel(bb, model, runtime, tuple(views))


def should_compile(mode: str, n_images: int, graph_cached: bool = False) -> bool:
    """Whether ``compile=mode`` compiles a run that computes ``n_images`` images; ``graph_cached``:
    the compiled graph of this model and batch size is in the on-disk cache (graph_is_cached)."""
    if mode == "auto":
        return n_images >= (AUTO_COMPILE_CACHED_MIN_IMAGES if graph_cached else AUTO_COMPILE_MIN_IMAGES)
    return mode == "on"


def graph_package(prepared: PreparedModel, batch_size: int) -> Path:
    """Where the compiled graph of ``prepared`` for ``batch_size`` lives once compiled: the
    AOTInductor package ``<featx cache dir>/inductor/featx-graphs/<key>.pt2``, the key a hash of
    everything that changes the graph (backbone config with its input size and taps, views,
    device, precision policy, memory format, batch size, torch version). Inside the inductor
    cache dir, so deleting that dir forgets it too."""
    import torch

    from featx.backbones.precision import POLICY
    from featx.runtime import use_inductor_cache
    key = {"backbone": prepared.backbone.config(), "taps": list(prepared.backbone.taps),
           "views": list(prepared.views), "runtime": prepared.runtime.describe(),
           "policy": POLICY if prepared.runtime.precision != "fp32" else None,
           "batch_size": int(batch_size), "torch": torch.__version__, **COMPILED_RECORD}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return use_inductor_cache() / "featx-graphs" / f"{digest}.pt2"


def graph_is_cached(prepared: PreparedModel, batch_size: int) -> bool:
    """Whether a compiled graph of ``prepared`` for ``batch_size`` is on disk (graph_package)."""
    return graph_package(prepared, batch_size).is_file()


def _autocast_module(model, device_type: str, dtype):
    """``model`` with the run's autocast inside its forward, so an exported graph holds the
    precision (and the precision policy's fp32 islands) rather than the caller's context."""
    import torch

    class Autocast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            with torch.autocast(device_type=device_type, dtype=dtype):
                return self.inner(x)
    return Autocast(model).eval()


class CompiledModel:
    """A FeatureModel compiled ahead of time by AOTInductor (``torch.export`` then
    ``torch._inductor.aoti_compile_and_package``, graph freezing on) for one batch size and input
    shape: smaller batches are padded to it. The package (a shared library plus the frozen
    weights, for CPU or CUDA alike) is written atomically to ``package`` and loaded from there
    by every later run and process, in well under a second, where a ``torch.compile`` graph
    has to be traced and frozen again on each load. Built lazily on the first batch. If
    exporting or compiling fails (no C compiler, an unsupported op), it warns in one line and
    runs the eager model from then on."""

    def __init__(self, eager, batch_size: int, package: Path | None = None, autocast_dtype=None):
        self.eager = eager
        self.batch_size = int(batch_size)
        self.package = package            # graph_package(); None: compile into a temporary dir
        self.autocast_dtype = autocast_dtype
        self.runner = None                # the loaded package, once the first call succeeded
        self.fell_back = False
        self.loaded_from_disk = False     # the first call loaded an existing package
        self.first_call_s: float | None = None   # compile (or package load) + first batch

    def __call__(self, x):
        if self.fell_back:
            return self.eager(x)
        import torch
        n = x.shape[0]
        if n < self.batch_size:
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last if
                                                x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        if self.runner is not None:
            out = self.runner(x)
        else:
            try:
                t0 = time.perf_counter()
                runner = self._load_or_build(x)
                out = runner(x)
                self.first_call_s = time.perf_counter() - t0
                self.runner = runner
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eager
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("compilation failed, running the model eagerly (%s: %s)", type(e).__name__, first)
                self.fell_back = True
                return self.eager(x[:n])
        return {k: v[:n] for k, v in out.items()}

    def _load_or_build(self, x):
        from torch._inductor import aoti_load_package
        if self.package is None:
            return aoti_load_package(self._build(x))
        runner = self._load_existing()
        if runner is not None:
            return runner
        # One builder per package: other processes (Ray actors on this node, a second run) and
        # threads wait on the lock and then load what it wrote instead of compiling a copy each.
        with _package_lock(self.package):
            runner = self._load_existing()
            return runner if runner is not None else aoti_load_package(self._build(x))

    def _load_existing(self):
        from torch._inductor import aoti_load_package
        if not self.package.is_file():
            return None
        try:
            runner = aoti_load_package(str(self.package))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign package: build it again
            log.debug("cannot load %s (%s: %s); compiling again", self.package, type(e).__name__, e)
            return None
        self.loaded_from_disk = True
        return runner

    def _build(self, x) -> str:
        """Export the eager model on an input shaped and strided like ``x`` and compile it into
        the package file (written under a temporary name, then renamed into place)."""
        import tempfile

        import torch
        from torch._inductor import aoti_compile_and_package
        model = self.eager
        if self.autocast_dtype is not None:
            model = _autocast_module(model, x.device.type, self.autocast_dtype)
        if self.package is not None:
            self.package.parent.mkdir(parents=True, exist_ok=True)
            target = self.package.with_name(f"{self.package.stem}.{os.getpid()}.{id(self)}.tmp.pt2")
        else:
            target = Path(tempfile.mkdtemp(prefix="featx-aoti-")) / "graph.pt2"
        # the caller runs under inference mode and its own autocast: export needs neither
        with torch.inference_mode(False), torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            example = torch.empty_strided(tuple(x.shape), x.stride(), dtype=x.dtype, device=x.device).zero_()
            exported = torch.export.export(model, (example,), strict=False)
            aoti_compile_and_package(exported, package_path=str(target), inductor_configs={"freezing": True})
        if self.package is None:
            return str(target)
        try:
            os.replace(target, self.package)
        except OSError as e:  # a read-only cache dir costs the next run a compile, nothing else
            log.debug("cannot write %s (%s)", self.package, e)
            return str(target)
        return str(self.package)


@contextmanager
def _package_lock(package: Path):
    """The build's exclusive lock (featx.safeio.ExclusiveLockFile on ``<package>.lock``, waited
    for; released by the kernel if the holder dies, the file gone with it). Where it cannot be
    taken (no fcntl, a read-only cache dir) the build goes ahead unlocked: at worst two builders,
    each renaming a whole package into place."""
    from featx.errors import FeatxError
    from featx.safeio import ExclusiveLockFile, LockFileBusy
    lock: ExclusiveLockFile | None = ExclusiveLockFile(package.with_suffix(".lock"))
    try:
        package.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(wait=True)
    except (ImportError, OSError, FeatxError, LockFileBusy) as e:
        log.debug("building %s without a lock (%s: %s)", package, type(e).__name__, e)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def compile_model(prepared: PreparedModel, batch_size: int) -> PreparedModel:
    """``prepared`` with its model compiled ahead of time for ``batch_size`` (see CompiledModel);
    the package is kept on disk (graph_package), so a later run (``compile="auto"`` knows it by
    graph_is_cached) loads it instead of compiling again."""
    if isinstance(prepared.model, CompiledModel):
        return prepared
    model = CompiledModel(prepared.model, batch_size, package=graph_package(prepared, batch_size),
                          autocast_dtype=prepared.runtime.autocast_dtype)
    return PreparedModel(prepared.backbone, model, prepared.runtime, prepared.views)


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
