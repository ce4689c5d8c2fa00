"""Feature-set configs: how a set is described in the cache, named, keyed, compared and re-made.

A *set config* is the JSON stored as ``/features/<name>`` attr ``config`` (see docs/CONTRACTS.md):
complete, in that every setting that changes the features is in it. This module is the one place
that knows its keys, in both directions:

- building: :func:`deep_sets` (one backbone's sets) and :func:`hand_sets` (handcrafted sets),
  their names, and :func:`request_key` (the shortcut that lets a repeated request skip the model);
- reading: :func:`comparable` / :func:`config_diff` (is a cache's set the one a model was trained
  on, and if not, what differs) and :func:`extraction_calls` (the ``featx.extraction.extract``
  keyword arguments that make a set with a given config again).

Provenance keys (``versions``: the library versions a set was made with) are recorded but are not
settings: :func:`comparable` leaves them out.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Sequence

from featx import __version__
from featx.cache import config_json
from featx.errors import FeatxError

#: config keys that record how a set was made but are not extractor settings
PROVENANCE_KEYS = ("versions", "compiled")  # how a set was made, not what it holds

__all__ = [
    "DeepSet",
    "HandSet",
    "PROVENANCE_KEYS",
    "assign_names",
    "comparable",
    "config_diff",
    "deep_sets",
    "extraction_calls",
    "hand_sets",
    "library_versions",
    "request_key",
    "safe_name",
]


def library_versions() -> dict:
    """The provenance recorded in every set config (key ``versions``)."""
    out = {"featx": __version__}
    for pkg in ("torch", "timm", "torchvision", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def safe_name(name: str) -> str:
    """A backbone name as a set-name part: no ``/``, ``,`` or ``+`` (they separate set lists)."""
    return name.replace("/", "_").replace(",", "_").replace("+", "_")


def short_hash(cfg: dict) -> str:
    return hashlib.sha256(config_json(cfg).encode()).hexdigest()[:8]


def _file_digest(path: str) -> str:
    from featx.sources.base import sha256_file
    try:
        return sha256_file(path)
    except OSError:
        return f"unreadable:{path}"


def request_key(cfg, backbone: str) -> str:
    """A key for the user-level options (an ExtractConfig) that decide a backbone's sets here.

    When every set a request produced is already complete for the images at hand, the run reuses
    them without importing torch or building the network (what makes a re-run near-instant). The
    key holds the options, the weights file's digest, the package versions and whether the CPU
    runs bf16 natively (what ``--precision auto`` resolves by); each set's full config is stored
    beside it all the same (the cache's ``requests`` attribute).
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
         "cpu_bf16": cpu_has_native_bf16(), "versions": library_versions(),
         **({"tta": list(cfg.tta)} if getattr(cfg, "tta", ()) else {})}
    return hashlib.sha256(config_json(d).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Building


@dataclass
class DeepSet:
    """One feature set of a backbone: its name, the taps concatenated into it, its config."""

    name: str
    taps: list[str]          # one tap unless concat_layers
    config: dict
    request: str = ""


@dataclass
class HandSet:
    """One handcrafted feature set: its name, its featx.handcrafted spec, its config."""

    name: str
    spec: object
    config: dict


def deep_sets(cfg, backbone, precision: str) -> list[DeepSet]:
    """The sets an ExtractConfig makes from one built backbone (featx.backbones.registry.Backbone)
    run at ``precision`` (resolved: fp32, bf16 or fp16). Names are proposals: see assign_names."""
    from featx.backbones.precision import POLICY
    base = safe_name(backbone.spec.name.rsplit("/", 1)[-1])
    if backbone.weights.source == "none":
        base += "_random"
    elif backbone.weights.source == "file":
        base += f"_w{backbone.weights.sha256[:8]}"
    from featx.views import views_config, views_suffix
    tta = tuple(getattr(cfg, "tta", ()))
    base += views_suffix(tta)
    common = dict(backbone.config(), **views_config(tta), kind="deep", precision=precision,
                  **({"precision_policy": POLICY} if precision != "fp32" else {}),
                  read=cfg.read_options(backbone.preprocess.resize_size).config(), versions=library_versions())
    groups = [backbone.taps] if cfg.concat_layers else [[t] for t in backbone.taps]
    request = request_key(cfg, backbone.spec.name)
    sets = []
    for taps in groups:
        name = base if taps == ["head"] else f"{base}.{'-'.join(taps)}"
        if cfg.pooling != "avg":
            name += f"_{safe_name(cfg.pooling)}"  # cls+avg -> _cls_avg (+ separates set lists)
        if cfg.name:
            name = cfg.name if len(groups) == 1 and len(cfg.backbones) == 1 else f"{cfg.name}.{name}"
        sets.append(DeepSet(name, list(taps), dict(common, taps=list(taps)), request))
    return sets


def hand_sets(cfg) -> list[HandSet]:
    """The handcrafted sets of an ExtractConfig (its ``handcrafted`` texts, override syntax included)."""
    if not cfg.handcrafted:
        return []
    from featx.handcrafted import parse_handcrafted
    out = []
    for spec in parse_handcrafted(list(cfg.handcrafted)):
        conf = dict(spec.config(), kind="handcrafted", read=cfg.read_options(None).config(),
                    versions=library_versions())
        out.append(HandSet(spec.name, spec, conf))
    return out


def assign_names(sets: Sequence[DeepSet | HandSet], existing: dict[str, dict]) -> None:
    """Give each set a name that is free in ``existing`` (name -> config) or already holds exactly
    its config; a taken name gets ``@<hash of the config>``."""
    taken = dict(existing)
    for s in sets:
        name = s.name
        if name in taken and config_json(taken[name]) != config_json(s.config):
            name = f"{s.name}@{short_hash(s.config)}"
        s.name = name
        taken[name] = s.config


# ----------------------------------------------------------------------------------------------
# Reading


def comparable(cfg: dict) -> str:
    """A config as canonical JSON without provenance keys: equal strings = the same features."""
    return json.dumps({k: v for k, v in cfg.items() if k not in PROVENANCE_KEYS}, sort_keys=True, default=str)


def config_diff(expected: dict, found: dict) -> str:
    """The settings that differ, one ``key: model X vs features Y`` each (four at most)."""
    keys = sorted((set(expected) | set(found)) - set(PROVENANCE_KEYS))
    parts = []
    for k in keys:
        a, b = expected.get(k, "<absent>"), found.get(k, "<absent>")
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            parts.append(f"{k}: model {json.dumps(a, default=str)} vs features {json.dumps(b, default=str)}")
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "")


def _read_kwargs(cfg: dict) -> dict[str, Any]:
    read = cfg.get("read") or {}
    window = read.get("window")
    return dict(window=tuple(window) if isinstance(window, list) else window,
                intensity=read.get("intensity", "auto"),
                jpeg_draft=read.get("draft_size") is not None or "draft_size" not in read)


def _weights_argument(name: str, weights: dict, weights_files: dict[str, str]) -> str | None:
    src = str(weights.get("source", ""))
    if src == "none":
        return "none"
    if src == "file":
        sha = str(weights.get("sha256"))
        if sha in weights_files:
            return weights_files[sha]
        raise FeatxError(f"feature set '{name}' used a local weights file (sha256 {sha[:12]}…); extract "
                         "with `featx extract --weights FILE` and predict from the cache")
    return None


def extraction_calls(set_configs: dict[str, dict], weights_files: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``featx.extraction.extract`` keyword arguments that recreate feature sets with these configs:
    one call per backbone / pooling / weights / precision / reading group (taps of one backbone
    share a call), one per reading group of handcrafted sets.

    A set made with a local weights file can be re-made only when that file is among
    ``weights_files`` (matched by sha256); otherwise FeatxError says so. A set's custom ``--name``
    is not part of its config: the calls make it under its default name.
    """
    by_digest = {_file_digest(str(p)): str(p) for p in weights_files}
    groups: dict[str, dict[str, Any]] = {}
    for name, cfg in set_configs.items():
        read_kw = _read_kwargs(cfg)
        if cfg.get("kind") == "handcrafted":
            from featx.handcrafted import spec_from_config

            key = "hand:" + json.dumps(read_kw, sort_keys=True, default=str)
            g = groups.setdefault(key, dict(backbones=[], handcrafted=[], **read_kw))
            g["handcrafted"].append(spec_from_config(cfg))
            continue
        if "backbone" not in cfg:
            raise FeatxError(f"feature set '{name}': its config names no backbone or handcrafted "
                             "descriptor, so it cannot be recomputed from images; predict from a cache")
        weights = _weights_argument(name, cfg.get("weights") or {}, by_digest)
        taps = list(cfg.get("taps") or ["head"])
        concat = len(taps) > 1
        precision = cfg.get("precision", "auto")
        tta = list(cfg.get("tta") or [])
        key = json.dumps([cfg["backbone"], cfg.get("pooling", "avg"), weights, precision, read_kw, concat,
                          taps if concat else None, tta], sort_keys=True, default=str)
        g = groups.setdefault(key, dict(backbones=[cfg["backbone"]], layers=[], pooling=cfg.get("pooling", "avg"),
                                        weights=weights, precision=precision, concat_layers=concat, **read_kw,
                                        **({"tta": tta} if tta else {})))
        for t in taps:
            if t not in g["layers"]:
                g["layers"].append(t)
    return list(groups.values())
