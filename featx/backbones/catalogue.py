"""The backbone catalogue: which names featx accepts, where their weights come from, how each
preprocesses its input, and which taps each offers.

:func:`list_backbones` reads metadata only (timm's pretrained configs, torchvision's weights
enums, the installed weight packages, the local download caches): it builds no network and
touches no network. :func:`list_layers` builds one network (random weights when no real ones
are here) and runs a dummy input through it once per pooling to measure every tap's width under each pooling.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from featx.backbones import weights as W
from featx.backbones.preprocess import PreprocessConfig

#: where a backbone's pretrained weights come from
WEIGHT_SOURCES = ("package", "cache", "download", "none")


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone name featx accepts."""

    name: str                        # as passed to --backbone
    library: str                     # featx (alias), timm, torchvision
    arch: str                        # the library's architecture (timm: with its default weight tag)
    weights: str                     # package | cache | download | none (no pretrained weights exist)
    weights_from: str                # the package, the cached file, or the hub id / URL to download
    preprocess: PreprocessConfig | None

    @property
    def offline(self) -> bool:
        """Runs here now with its pretrained weights (no network needed)."""
        return self.weights in ("package", "cache")


@dataclass(frozen=True)
class LayerInfo:
    """One tap of a backbone and the feature width it gives under each pooling it accepts."""

    tap: str                         # as passed to --layers
    kind: str                        # head | stage | module
    widths: dict[str, int]           # pooling -> feature width
    weights: str                     # the weights measured with (the same on every row of a backbone)


def _hf_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    dirs.append(home / "hub")
    return dirs


def _hf_cached_file(hub_id: str) -> Path | None:
    """A weights file of Hugging Face repo ``hub_id`` already in the local hub cache, or None."""
    folder = "models--" + hub_id.split("@", 1)[0].replace("/", "--")
    for root in _hf_cache_dirs():
        snaps = root / folder / "snapshots"
        if snaps.is_dir():
            for pattern in ("*/model.safetensors", "*/pytorch_model.bin", "*/open_clip_pytorch_model.bin"):
                hits = sorted(snaps.glob(pattern))
                if hits:
                    return hits[0]
    return None


def _hub_cached_file(url: str) -> Path | None:
    """A file downloaded by torch.hub from ``url`` (torch hub's checkpoints folder), or None."""
    import torch
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?", 1)[0])
    return path if url and path.is_file() else None


def _timm_info(name: str, library: str, arch: str) -> BackboneInfo | None:
    import timm
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return BackboneInfo(name, library, arch, "none", "", None)
    cfg = cfg.to_dict()
    pre = PreprocessConfig.from_timm(cfg) if cfg.get("mean") and cfg.get("input_size") else None
    pkg = W.package_weights_path(arch)
    full = f"{arch}.{cfg['tag']}" if cfg.get("tag") else arch
    if pkg is not None:
        return BackboneInfo(name, library, full, "package", W.WEIGHT_PACKAGES[arch][0], pre)
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    cached = (_hf_cached_file(hub_id) if hub_id else None) or (_hub_cached_file(url) if url else None)
    if cached is not None:
        return BackboneInfo(name, library, full, "cache", str(cached), pre)
    if hub_id or url:
        return BackboneInfo(name, library, full, "download", f"hf-hub:{hub_id}" if hub_id else url, pre)
    return BackboneInfo(name, library, full, "none", "", pre)


def _alias_info(alias: str, arch: str) -> BackboneInfo:
    info = _timm_info(alias, "featx", arch)
    if info.weights != "package":  # an alias's weights come from its package only
        info = BackboneInfo(alias, "featx", info.arch, "download", W.package_install_hint(arch), info.preprocess)
    return info


def _torchvision_info(name: str) -> BackboneInfo:
    import torchvision
    try:
        default = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        return BackboneInfo(name, "torchvision", name, "none", "", None)
    pre = PreprocessConfig.from_torchvision(default.transforms())
    cached = _hub_cached_file(default.url)
    if cached is not None:
        return BackboneInfo(name, "torchvision", name, "cache", str(cached), pre)
    return BackboneInfo(name, "torchvision", name, "download", default.url, pre)


def pretrained_here(spec) -> bool:
    """Whether the pretrained weights of a resolved backbone (registry.BackboneSpec) are here now,
    checked without network."""
    if spec.library == "timm":
        info = _timm_info(spec.name, spec.library, spec.arch.split(".", 1)[0])
        if "." in spec.arch and info.arch != spec.arch:  # another tag than the default: its own cache entry
            import timm
            cfg = timm.models.get_pretrained_cfg(spec.arch)
            hub = cfg.hf_hub_id if cfg is not None else None
            return bool(hub and _hf_cached_file(hub))
        return info.offline
    return _torchvision_info(spec.arch).offline


def list_backbones(offline: bool = False, filter: str | None = None) -> list[BackboneInfo]:
    """featx's aliases, then every torchvision classification model, then every timm
    architecture (with its default pretrained tag), each with where its pretrained weights come
    from and its preprocessing. ``offline``: only those whose pretrained weights are here now
    (any backbone also runs with ``--weights none`` or ``--weights FILE``). ``filter``: a
    case-insensitive substring of the name."""
    import timm
    import torchvision

    from featx.backbones.registry import ALIASES
    text = (filter or "").strip().lower()

    def wanted(name: str) -> bool:
        return text in name.lower()

    out = [_alias_info(a, arch) for a, (_lib, arch) in ALIASES.items() if wanted(a)]
    out += [_torchvision_info(n) for n in sorted(torchvision.models.list_models(module=torchvision.models))
            if wanted(n)]
    out += [_timm_info(n, "timm", n) for n in timm.list_models() if wanted(n)]
    return [b for b in out if b.offline] if offline else out


def _token_poolings(model) -> tuple[str, ...]:
    from featx.backbones.taps import CNN_POOLINGS, token_poolings
    return token_poolings(model) or CNN_POOLINGS


def list_layers(name: str, weights=None) -> list[LayerInfo]:
    """Every tap featx accepts for backbone ``name`` (the head, each stage, each named module)
    with its feature width under each pooling the backbone accepts, measured on a dummy image
    (one forward pass per pooling). Each row names the weights it was measured with (random
    init when no pretrained weights are here: widths do not depend on weights)."""
    import torch

    from featx.backbones.registry import build, layer_names, resolve
    from featx.backbones.taps import pool_module_output
    from featx.errors import BackboneError
    random_fallback = weights is None and not pretrained_here(resolve(name))
    bb = build(name, weights="none" if random_fallback else weights, layers=["head"])
    source = ("none (random init: no pretrained weights here; widths do not depend on them)"
              if random_fallback else bb.weights.source)
    model = bb.model.model
    stages = layer_names(model)
    hooked = [n for n, _ in model.named_modules() if n and n not in set(stages)]
    kinds = {"head": "head", **{s: "stage" for s in stages}}
    poolings = _token_poolings(model)
    widths: dict[str, dict[str, int]] = {t: {} for t in ["head", *stages, *hooked]}
    x = torch.zeros(1, 3, *bb.preprocess.crop_size)
    outputs: dict[str, object] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: outputs.setdefault(n, o)) for n in hooked]
    try:
        for pooling in poolings:  # the head and the stages as extraction takes them
            fm = bb.model.with_taps(["head", *stages], pooling)
            with torch.inference_mode():
                for t, v in fm(x).items():
                    widths[t][pooling] = int(v.shape[1])
            fm.remove_hooks()
    finally:
        for h in handles:
            h.remove()
    for name, output in outputs.items():  # every other module, pooled from the same pass
        for pooling in poolings:
            try:
                widths[name][pooling] = int(pool_module_output(model, output, pooling).flatten(1).shape[1])
            except BackboneError:  # an output that is no map, token sequence or vector
                pass
    return [LayerInfo(t, kinds.get(t, "module"), w, source) for t, w in widths.items() if w]
