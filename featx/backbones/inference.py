"""A backbone ready to run (built, precision policy, device, memory format, optionally compiled)
and one batch through it.

:func:`prepare_model` is what every caller of a network uses: local extraction, the Ray model
actors (featx.engines.ray) and the scikit-learn transformer (featx.deep.DeepFeatures), so the
three run the same model the same way. :func:`compile_model` turns a prepared model into an
inductor-compiled one (graph freezing on; CPU and CUDA alike), with the compiled artifacts cached
on disk under featx's cache dir (see featx.runtime.use_inductor_cache).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("featx")

COMPILE_MODES = ("auto", "on", "off")

#: ``compile="auto"`` compiles when a run has at least this many images to compute. Break-even
#: n = compile_s / (1/eager_rate - 1/compiled_rate): resnet50 bf16 on 2 cores, eager 66 img/s,
#: compiled 113 img/s, first compile 15.5 s -> 2,460 images; EfficientNet-Lite0 (see README,
#: "Compiled extraction") breaks even earlier. Rounded to one figure for every backbone.
AUTO_COMPILE_MIN_IMAGES = 2500

#: ... and at least this many when this exact graph (backbone, weights, taps, views, device,
#: precision, batch size, torch version) was compiled before and is in the on-disk cache: loading
#: it costs a few seconds of tracing instead of a compile (see README, "Compiled extraction").
AUTO_COMPILE_CACHED_MIN_IMAGES = 500

#: what a compiled set records in its config (key ``compiled``; only when compiled)
COMPILED_RECORD = {"backend": "inductor", "freezing": True}


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


def graph_marker(prepared: PreparedModel, batch_size: int) -> Path:
    """The file that says "this model's compiled graph for ``batch_size`` is in the on-disk cache":
    ``<featx cache dir>/inductor/featx-graphs/<key>.json``, the key a hash of everything that
    changes the graph (backbone config and taps, views, device, precision policy, memory format,
    batch size, input size, torch version). Written after a successful compile; it lives inside
    the inductor cache dir, so deleting that dir forgets it too."""
    import torch

    from featx.backbones.precision import POLICY
    from featx.runtime import use_inductor_cache
    key = {"backbone": prepared.backbone.config(), "taps": list(prepared.backbone.taps),
           "views": list(prepared.views), "runtime": prepared.runtime.describe(),
           "policy": POLICY if prepared.runtime.precision != "fp32" else None,
           "batch_size": int(batch_size), "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return use_inductor_cache() / "featx-graphs" / f"{digest}.json"


def graph_is_cached(prepared: PreparedModel, batch_size: int) -> bool:
    """Whether a compiled graph of ``prepared`` for ``batch_size`` was made before (graph_marker)."""
    return graph_marker(prepared, batch_size).is_file()


class CompiledModel:
    """A FeatureModel compiled by inductor (freezing on) for one batch size: smaller batches are
    padded to it, so the graph compiles once. If compiling fails (no C compiler, an unsupported
    op), it warns in one line and runs the eager model from then on."""

    def __init__(self, eager, batch_size: int, marker: Path | None = None):
        import torch
        import torch._dynamo.config as dynamo_config
        # every FeatureModel shares one forward(): a process that compiles many models (Ray
        # actors, DeepFeatures, a benchmark) must not hit dynamo's default of 8 per code object,
        # past which it silently runs eager
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        self.eager = eager
        self.batch_size = int(batch_size)
        self.compiled = torch.compile(eager, backend="inductor", dynamic=False, options={"freezing": True})
        self.fell_back = False
        self.ready = False   # the first call (the compilation) succeeded
        self.marker = marker  # written after the first successful call (see graph_marker)
        self.first_call_s: float | None = None   # compile (or cached-graph load) + first batch

    def __call__(self, x):
        if self.fell_back:
            return self.eager(x)
        import torch
        n = x.shape[0]
        if n < self.batch_size:
            pad = x.new_zeros((self.batch_size - n, *x.shape[1:]))
            x = torch.cat([x, pad]).contiguous(memory_format=torch.channels_last if
                                                x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        if self.ready:
            out = self.compiled(x)
        else:
            try:
                t0 = time.perf_counter()
                out = self.compiled(x)
                self.first_call_s = time.perf_counter() - t0
                self.ready = True
                self._write_marker()
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eager
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("compilation failed, running the model eagerly (%s: %s)", type(e).__name__, first)
                self.fell_back = True
                return self.eager(x[:n])
        return {k: v[:n] for k, v in out.items()}

    def _write_marker(self) -> None:
        if self.marker is None:
            return
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.marker.with_suffix(f".{id(self)}.tmp")
            tmp.write_text(json.dumps({"batch_size": self.batch_size, "first_call_s": round(self.first_call_s, 2)}))
            tmp.replace(self.marker)
        except OSError as e:  # a read-only cache dir costs the next run a compile, nothing else
            log.debug("cannot write %s (%s)", self.marker, e)


def compile_model(prepared: PreparedModel, batch_size: int) -> PreparedModel:
    """``prepared`` with its model compiled by inductor for ``batch_size`` (see CompiledModel);
    the compiled graph is cached on disk (featx.runtime.use_inductor_cache) and remembered by
    graph_marker, so ``compile="auto"`` knows a later run loads it cheaply."""
    if isinstance(prepared.model, CompiledModel):
        return prepared
    model = CompiledModel(prepared.model, batch_size, marker=graph_marker(prepared, batch_size))
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
