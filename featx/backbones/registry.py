"""Backbones by name: featx's aliases, every torchvision classification model, every timm model.

Name resolution: ``timm/<name>`` and ``torchvision/<name>`` choose the library explicitly; a bare
name is first one of featx's aliases (``efficientnet_lite0`` = timm ``tf_efficientnet_lite0`` with
the offline weight package), then a torchvision classification model, then a timm model.

Weights (``weights=``):
- ``None`` (default, pretrained): an installed offline weight package if one exists for the
  architecture, else the library's own pretrained download (timm: Hugging Face hub; torchvision:
  its weights enum's DEFAULT). Failing that, a WeightsError that says how to get weights.
- a path: a local state dict (``torch.load(weights_only=True)``), efficientnet_pytorch naming
  converted for EfficientNet(-Lite) architectures.
- ``"none"``: random initialisation from a fixed seed, recorded (with its digest) in every config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featx.backbones import weights as W
from featx.backbones.preprocess import PreprocessConfig
from featx.backbones.taps import POOLINGS, FeatureModel, intermediate_taps, pooling_error
from featx.errors import BackboneError, WeightsError

# featx name -> (library, architecture)
ALIASES: dict[str, tuple[str, str]] = {alias: ("timm", arch) for alias, arch in W.ALIAS_ARCH.items()}
DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM_INIT_SEED = 0  # --weights none is seeded, so equal configs give equal features


def _seeded(make):
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return make()


@dataclass(frozen=True)
class BackboneSpec:
    name: str      # as the user wrote it, normalised (used as the feature-set base name)
    library: str   # timm | torchvision
    arch: str


@dataclass
class Backbone:
    spec: BackboneSpec
    model: FeatureModel
    preprocess: PreprocessConfig
    weights: W.WeightsInfo
    taps: list[str]
    pooling: str
    dims: dict[str, int]

    def config(self) -> dict:
        """Everything about the network that changes its output (completed by the extractor).
        Transformers add ``transformer`` (prefix tokens, stage taps through forward_intermediates);
        a CNN's config has exactly the keys it always had, so existing caches stay valid."""
        cfg = {"backbone": self.spec.name, "library": self.spec.library, "arch": self.spec.arch,
               "weights": self.weights.config(), "pooling": self.pooling,
               "preprocess": self.preprocess.config()}
        model = self.model.model
        if intermediate_taps(model) or getattr(model, "num_prefix_tokens", None) is not None:
            cfg["transformer"] = {"num_prefix_tokens": getattr(model, "num_prefix_tokens", None),
                                  "stage_taps": "forward_intermediates" if intermediate_taps(model) else "hooks"}
        return cfg


def _torchvision_names() -> set[str]:
    import torchvision
    return set(torchvision.models.list_models(module=torchvision.models))


def resolve(name: str) -> BackboneSpec:
    raw = name.strip()
    if "/" in raw:
        lib, arch = raw.split("/", 1)
        lib = lib.lower()
        if lib not in ("timm", "torchvision", "tv"):
            raise BackboneError(f"unknown library {lib!r} in backbone {raw!r} (timm/..., torchvision/...)")
        lib = "torchvision" if lib == "tv" else lib
        if lib == "torchvision" and arch not in _torchvision_names():
            raise BackboneError(f"torchvision has no classification model {arch!r}")
        if lib == "timm":
            _check_timm(arch, raw)
        return BackboneSpec(raw, lib, arch)
    if raw in ALIASES:
        lib, arch = ALIASES[raw]
        return BackboneSpec(raw, lib, arch)
    if raw in _torchvision_names():
        return BackboneSpec(raw, "torchvision", raw)
    _check_timm(raw, raw)
    return BackboneSpec(raw, "timm", raw)


def _check_timm(arch: str, raw: str) -> None:
    import timm
    base = arch.split(".", 1)[0]
    if not timm.is_model(base):
        hint = suggest_backbones(base)
        hint = f"; did you mean {', '.join(hint)}?" if hint else ""
        raise BackboneError(f"unknown backbone {raw!r}: not a featx alias, torchvision or timm model{hint}")


def suggest_backbones(name: str, n: int = 3) -> list[str]:
    """Known backbone names closest to ``name`` (difflib): featx aliases first, then torchvision's
    classification models, then timm's architectures."""
    import difflib

    import timm
    name = name.strip().lower()
    for pool in (list(ALIASES), sorted(_torchvision_names()), timm.list_models()):
        close = difflib.get_close_matches(name, pool, n=n, cutoff=0.8)
        if close:
            return close
    return difflib.get_close_matches(name, timm.list_models(), n=n, cutoff=0.6)


def check_backbone(name: str, layers=None, pooling: str = "avg") -> BackboneSpec:
    """Check a backbone name, its pooling and, where the network can be laid out without weights or
    memory (on torch's meta device), its layers; raise BackboneError (one line, with suggestions)
    before any work starts. Returns the resolved spec."""
    if pooling not in POOLINGS:
        raise BackboneError(f"unknown pooling {pooling!r} ({', '.join(POOLINGS)})")
    spec = resolve(name)
    layers = [str(x).strip() for x in (layers or ()) if str(x).strip()]
    if pooling == "avg" and (not layers or all(x in ("head", "stages") for x in layers)):
        return spec
    model = _skeleton(spec)
    if model is not None:
        reason = pooling_error(model, pooling, spec.name)
        if reason:
            raise BackboneError(reason)
        try:
            _resolve_layers(model, layers)
        except BackboneError as e:
            raise BackboneError(f"backbone {spec.name!r}: {e.reason}") from None
    return spec


def _skeleton(spec: BackboneSpec):
    """The network's modules without weights (meta device), or None where that cannot be built."""
    import torch
    try:
        with torch.device("meta"):
            if spec.library == "timm":
                import timm
                return timm.create_model(spec.arch, pretrained=False)
            import torchvision
            return torchvision.models.get_model(spec.arch, weights=None)
    except Exception:  # an architecture whose constructor needs real tensors: checked when built
        return None


def _download_error(spec: BackboneSpec, e: Exception) -> WeightsError:
    hint = W.package_install_hint(spec.arch)
    extra = f", install the offline weights ({hint})" if hint else ""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    return WeightsError(
        f"cannot get pretrained weights for {spec.name!r} ({type(e).__name__}: {first[:160]}). "
        f"Offline, pass --weights FILE (a local state dict){extra}, or --weights none for random init",
        None)


def _build_timm(spec: BackboneSpec, weights):
    import timm
    if weights is None:
        pkg = W.package_weights_path(spec.arch.split(".", 1)[0])
        if pkg is not None:
            model = timm.create_model(spec.arch, pretrained=False)
            W.load_into(model, W.read_state_dict(pkg), pkg)
            info = W.WeightsInfo(f"package:{W.WEIGHT_PACKAGES[spec.arch.split('.', 1)[0]][0]}",
                                 W.sha256_file(pkg), str(pkg))
        else:
            try:
                model = timm.create_model(spec.arch, pretrained=True)
            except Exception as e:  # hub unreachable, no weights for this arch, ...
                raise _download_error(spec, e) from None
            info = W.WeightsInfo("timm", W.sha256_state_dict(model.state_dict()),
                                 tag=model.pretrained_cfg.get("tag"))
    elif str(weights).lower() == "none":
        model = _seeded(lambda: timm.create_model(spec.arch, pretrained=False))
        info = W.WeightsInfo("none", W.sha256_state_dict(model.state_dict()), tag=f"seed{RANDOM_INIT_SEED}")
    else:
        model = timm.create_model(spec.arch, pretrained=False)
        W.load_into(model, W.read_state_dict(weights), weights, ignore_prefixes=_timm_classifier_prefixes(model))
        info = W.WeightsInfo("file", W.sha256_file(weights), str(Path(weights).resolve()))
    pre = PreprocessConfig.from_timm(model.pretrained_cfg)

    def head_fn(m, x):
        return m.forward_head(m.forward_features(x), pre_logits=True)

    def final_fn(m, x):
        return m.forward_features(x)  # channels-last maps (Swin) are permuted by FeatureModel

    return model, pre, info, head_fn, final_fn


def _timm_classifier_prefixes(model) -> tuple[str, ...]:
    name = model.pretrained_cfg.get("classifier") or "classifier"
    names = name if isinstance(name, (list, tuple)) else [name]
    return tuple(f"{n}." for n in names)


def _last_linear(model):
    import torch.nn as nn
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    return last


def _build_torchvision(spec: BackboneSpec, weights):
    import torch.nn as nn
    import torchvision
    enum = torchvision.models.get_model_weights(spec.arch)
    default = enum.DEFAULT
    if weights is None:
        try:
            model = torchvision.models.get_model(spec.arch, weights=default)
        except Exception as e:
            raise _download_error(spec, e) from None
        info = W.WeightsInfo("torchvision", W.sha256_state_dict(model.state_dict()), tag=str(default))
    elif str(weights).lower() == "none":
        model = _seeded(lambda: torchvision.models.get_model(spec.arch, weights=None))
        info = W.WeightsInfo("none", W.sha256_state_dict(model.state_dict()), tag=f"seed{RANDOM_INIT_SEED}")
    else:
        model = torchvision.models.get_model(spec.arch, weights=None)
        last = _last_linear(model)
        W.load_into(model, W.read_state_dict(weights), weights, ignore_prefixes=(f"{last}.",) if last else ())
        info = W.WeightsInfo("file", W.sha256_file(weights), str(Path(weights).resolve()))
    pre = PreprocessConfig.from_torchvision(default.transforms())
    last = _last_linear(model)
    if last is None:
        raise BackboneError(f"torchvision model {spec.arch!r} has no Linear classifier to remove")
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    pool_mod = [n for n, m in model.named_modules() if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d))]

    def head_fn(m, x):
        return m(x)

    def final_fn(m, x):
        if not pool_mod:
            raise BackboneError(f"{spec.name}: no global pooling layer; max/GeM pooling needs --layers")
        box = {}
        h = m.get_submodule(pool_mod[-1]).register_forward_pre_hook(lambda _m, inp: box.setdefault("x", inp[0]))
        try:
            m(x)
        finally:
            h.remove()
        return box["x"]

    return model, pre, info, head_fn, final_fn


def layer_names(spec_or_model) -> list[str]:
    """Suggested tap names: timm's feature_info stages, or torchvision's top-level stages."""
    model = spec_or_model
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            return [f["module"] for f in info]
        except (TypeError, KeyError):
            pass
    names = [n for n, _ in model.named_children()]
    if "features" in names:
        return [f"features.{n}" for n, _ in model.get_submodule("features").named_children()]
    return names


def _resolve_layers(model, layers) -> list[str]:
    if not layers:
        return ["head"]
    stages = layer_names(model)
    out = []
    for layer in layers:
        layer = str(layer).strip()
        if layer == "head":
            out.append("head")
        elif layer == "stages":
            out.extend(stages)
        elif layer.lstrip("-").isdigit():
            i = int(layer)
            if not -len(stages) <= i < len(stages):
                raise BackboneError(f"layer index {i} out of range; stages: {', '.join(stages)}")
            out.append(stages[i])
        else:
            if layer not in dict(model.named_modules()):
                raise BackboneError(f"no layer {layer!r}; try one of: {', '.join(stages + ['head'])}")
            out.append(layer)
    return list(dict.fromkeys(out))


def build(name: str = DEFAULT_BACKBONE, weights=None, layers=None, pooling: str = "avg") -> Backbone:
    """A frozen backbone in eval mode with its preprocessing and weight provenance."""
    import torch
    if pooling not in POOLINGS:
        raise BackboneError(f"unknown pooling {pooling!r} ({', '.join(POOLINGS)})")
    spec = resolve(name)
    builder = _build_timm if spec.library == "timm" else _build_torchvision
    model, pre, info, head_fn, final_fn = builder(spec, weights)
    model.eval().requires_grad_(False)
    reason = pooling_error(model, pooling, spec.name)
    if reason:
        raise BackboneError(reason)
    taps = _resolve_layers(model, layers)
    fm = FeatureModel(model, taps, pooling, head_fn, final_fn).eval()
    with torch.inference_mode():
        probe = fm(torch.zeros(1, 3, *pre.crop_size))
    dims = {k: int(v.shape[1]) for k, v in probe.items()}
    return Backbone(spec, fm, pre, info, taps, pooling, dims)
