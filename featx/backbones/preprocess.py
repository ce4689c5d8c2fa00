"""Preprocessing that belongs to a set of weights: size, crop, interpolation, mean and std.

Taken from the weights' own config (timm's ``pretrained_cfg``, torchvision's
``Weights.transforms()``), never from a hard-coded 224 / ImageNet default, and applied to float
images in [0, 1] so 16-bit and DICOM data keep their precision up to the model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

_INTERP = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest", "area": "area"}


@dataclass(frozen=True)
class PreprocessConfig:
    resize_size: int                 # shorter side after resize ("center") or both sides ("squash")
    crop_size: tuple[int, int]       # (H, W) of the model input
    interpolation: str               # bicubic / bilinear / nearest
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_mode: str = "center"        # center: resize shorter side, center crop; squash: resize both sides

    def config(self) -> dict:
        d = asdict(self)
        d["crop_size"] = list(self.crop_size)
        d["mean"] = [round(float(m), 6) for m in self.mean]
        d["std"] = [round(float(s), 6) for s in self.std]
        return d

    @classmethod
    def from_timm(cls, cfg: dict) -> "PreprocessConfig":
        _, h, w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        mode = cfg.get("crop_mode") or "center"
        size = max(h, w)
        return cls(resize_size=int(math.floor(size / crop_pct)), crop_size=(int(h), int(w)),
                   interpolation=str(cfg.get("interpolation") or "bilinear"),
                   mean=tuple(float(m) for m in cfg["mean"]), std=tuple(float(s) for s in cfg["std"]),
                   crop_mode="squash" if mode == "squash" else "center")

    @classmethod
    def from_torchvision(cls, transforms) -> "PreprocessConfig":
        crop = transforms.crop_size
        resize = transforms.resize_size
        crop = (int(crop[0]), int(crop[-1]))
        interp = getattr(transforms.interpolation, "value", str(transforms.interpolation))
        return cls(resize_size=int(resize[0]), crop_size=crop, interpolation=str(interp),
                   mean=tuple(float(m) for m in transforms.mean), std=tuple(float(s) for s in transforms.std))


def preprocess(image: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """One decoded image -> a normalized (3, H, W) float32 tensor ready for the model."""
    arr = np.ascontiguousarray(image, dtype=np.float32)
    # resize and crop one channel for gray images, and replicate only at the end
    t = torch.from_numpy(arr).unsqueeze(0) if arr.ndim == 2 else torch.from_numpy(arr).permute(2, 0, 1)
    return preprocess_batch(t.unsqueeze(0), cfg)[0].contiguous()


def resize_crop_box(cfg: PreprocessConfig, h: int, w: int) -> tuple[int, int, int, int]:
    """(resized height, resized width, crop top, crop left) of an h x w image under ``cfg``."""
    ch, cw = cfg.crop_size
    if cfg.crop_mode == "squash":
        new_h = new_w = cfg.resize_size
    else:
        scale = cfg.resize_size / min(h, w)
        new_h, new_w = max(ch, round(h * scale)), max(cw, round(w * scale))
    return new_h, new_w, max(0, (new_h - ch) // 2), max(0, (new_w - cw) // 2)


def preprocess_batch(x: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """A (B, C, H, W) batch in [0, 1] (C = 1 or 3) -> the normalized (B, 3, h, w) model input:
    resize (shorter side, or squash), clamp, centre crop, gray replicated to 3 channels, mean/std.
    Differentiable (featx explain back-propagates through it); keeps x's dtype and device."""
    h, w = x.shape[-2:]
    ch, cw = cfg.crop_size
    new_h, new_w, top, left = resize_crop_box(cfg, h, w)
    if (new_h, new_w) != (h, w):
        mode = _INTERP.get(cfg.interpolation, "bilinear")
        kw = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, **kw).clamp(0.0, 1.0)
    x = x[..., top:top + ch, left:left + cw]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
