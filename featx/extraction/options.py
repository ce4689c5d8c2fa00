"""The options of one extraction run, their checks (before any file is read), and its summary."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from featx.errors import BackboneError, FeatxError, WeightsError
from featx.sources import ReadOptions


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
    rehash: bool = False           # hash every input again instead of trusting the cache's memo
    name: str | None = None
    tta: tuple[str, ...] = ()      # test-time views averaged per image (featx.views): flip, vflip, crop5
    compile: str = "auto"      # auto | on | off: run the backbones AOTInductor-compiled (featx.backbones.inference)

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
    warnings: list[str] = field(default_factory=list)   # "<path>: same bytes as <path>" per duplicate file
    runtime: str = ""
    interrupted: bool = False
    worker_pids: list[int] = field(default_factory=list)  # processes that ran the model (Ray engine)

    def line(self) -> str:
        s = (f"{self.ok} extracted, {self.reused} reused, {self.failed} failed in {self.seconds:.1f} s "
             f"({self.images_per_s:.1f} images/s) -> {self.cache} [{', '.join(self.sets)}]")
        return ("interrupted: " + s) if self.interrupted else s


def check_config(cfg: ExtractConfig) -> None:
    """Every name and option of a run, checked before sources are scanned or the cache is touched:
    raises a one-line FeatxError (BackboneError for backbones, layers and pooling, with the
    closest known names) on the first problem."""
    from featx.runtime import DEVICES, PRECISIONS
    if not cfg.backbones and not cfg.handcrafted:
        raise FeatxError("nothing to extract: name a backbone and/or --handcrafted sets")
    if cfg.batch_size < 1:
        raise FeatxError(f"batch size must be at least 1, not {cfg.batch_size}")
    if cfg.precision not in PRECISIONS:
        raise FeatxError(f"unknown precision {cfg.precision!r} ({', '.join(PRECISIONS)})")
    if cfg.device not in DEVICES and not (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()):
        raise FeatxError(f"unknown device {cfg.device!r} ({', '.join(DEVICES)}, cuda:N)")
    from featx.views import parse_views
    parse_views(cfg.tta)   # one line for an unknown view
    if cfg.compile not in ("auto", "on", "off"):
        raise FeatxError(f"unknown compile mode {cfg.compile!r} (auto, on, off)")
    if cfg.handcrafted:
        from featx.handcrafted import parse_handcrafted
        parse_handcrafted(list(cfg.handcrafted))
    if not cfg.backbones:
        return
    if cfg.weights is not None and str(cfg.weights).lower() != "none" and not Path(cfg.weights).is_file():
        raise WeightsError("weights file does not exist", cfg.weights)
    from featx.backbones import POOLINGS
    from featx.backbones.weights import ALIAS_ARCH
    if cfg.pooling not in POOLINGS:
        raise BackboneError(f"unknown pooling {cfg.pooling!r} ({', '.join(POOLINGS)})")
    plain_taps = all(str(x).strip() in ("head", "stages") for x in cfg.layers)
    for name in cfg.backbones:
        if name in ALIAS_ARCH and plain_taps:
            continue  # known without importing torch: a cached re-run stays torch-free
        from featx.backbones.registry import check_backbone
        check_backbone(name, layers=cfg.layers, pooling=cfg.pooling)
