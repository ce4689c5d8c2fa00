"""Saliency methods (captum): Grad-CAM on the tapped stages, integrated gradients, occlusion.

Each takes images ``x`` (B, C, H, W) in [0, 1] and target columns, and returns maps (B, H, W) at
input resolution, larger = more evidence for the target. Grad-CAM and integrated gradients need a
:class:`featx.explain.model.DifferentiableModel`; occlusion needs only a function images -> scores.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from featx.errors import FeatxError

GRADIENT_METHODS = ("input-x-gradient", "gradcam", "ig")
METHODS = ("auto", *GRADIENT_METHODS, "occlusion")
AUTO_GRADIENT_METHOD = "input-x-gradient"   # measured: README "featx explain", faithfulness table
IG_STEPS = 16


def blurred(x: torch.Tensor) -> torch.Tensor:
    """The baseline of integrated gradients: each image Gaussian-blurred
    (sigma = 1/8 of its larger side), which removes detail but keeps overall intensity."""
    sigma = max(x.shape[-2:]) / 8.0
    arr = x.detach().cpu().numpy()
    out = gaussian_filter(arr, sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.from_numpy(out.astype(np.float32))


def map_layer(model: torch.nn.Module, tap: str, probe: torch.Tensor) -> torch.nn.Module:
    """The module whose output Grad-CAM weighs for tap ``tap`` of a FeatureModel's network: for
    "head", the last module to produce a (B, C, h, w) map before global pooling; for a named tap,
    the innermost module producing the tap's output (hooks on the tap itself end the forward pass)."""
    net = model.model
    order: list[tuple[str, torch.nn.Module, int]] = []
    handles = []
    for name, mod in net.named_modules():
        if name:
            def hook(m, _i, out, name=name):
                t = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(t, torch.Tensor) and t.ndim == 4:
                    order.append((name, m, id(t)))
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(probe)
    except Exception:
        pass
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise FeatxError(f"no spatial feature map before tap {tap!r}: use --method ig or occlusion")
    if tap == "head":
        return order[-1][1]
    hit = [i for i, (n, _, _) in enumerate(order) if n == tap]
    if hit:
        oid = order[hit[0]][2]
        for n, m, o in order[:hit[0] + 1]:
            if o == oid and n != tap:
                return m
    raise FeatxError(f"Grad-CAM cannot hook tap {tap!r} (it is a single layer); use --method ig or occlusion")


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / peak


def to_input_frame(cam: torch.Tensor, cfg, h: int, w: int) -> torch.Tensor:
    """(B, 1, gh, gw) map over the network's input (the centre crop of the resized image) ->
    (B, h, w) over the original image: upsampled to the crop, placed in the resized frame (zero
    where the crop cut the image off: those pixels never reach the network), then area-averaged
    down to h x w. Stretching the map over the whole image instead shifts it outwards (by
    1.75 px at the border of a 28 px image with a 224-of-256 crop)."""
    from featx.backbones.preprocess import resize_crop_box

    ch, cw = cfg.crop_size
    new_h, new_w, top, left = resize_crop_box(cfg, h, w)
    up = F.interpolate(cam.float(), size=(ch, cw), mode="bilinear", align_corners=False)
    frame = up.new_zeros(cam.shape[0], 1, new_h, new_w)
    frame[..., top:top + ch, left:left + cw] = up[..., :new_h - top, :new_w - left]
    return F.interpolate(frame, size=(h, w), mode="area")[:, 0]


def gradcam(model, x: torch.Tensor, targets: list[int], hand: torch.Tensor | None = None,
            layers: list[tuple] | None = None) -> torch.Tensor:
    """Grad-CAM (captum LayerGradCam, ReLU'd) on every tapped stage of every backbone, mapped back
    to the input through the backbone's resize and crop (:func:`to_input_frame`) and averaged
    (each normalised to peak 1) when there are several."""
    from captum.attr import LayerGradCam

    if layers is None:
        layers = gradcam_layers(model, x)
    h, w = x.shape[-2:]
    total = torch.zeros(x.shape[0], h, w)
    args = (hand,) if hand is not None else None
    for layer, cfg in layers:
        cam = LayerGradCam(model, layer).attribute(x, target=list(targets), additional_forward_args=args,
                                                   relu_attributions=True)
        cam = to_input_frame(cam.detach(), cfg, h, w)
        total += _normalise(cam) if len(layers) > 1 else cam
    return total / len(layers)


def gradcam_layers(model, x: torch.Tensor) -> list[tuple]:
    """(Grad-CAM layer, the backbone's preprocessing config) of each (backbone, tap) of a
    DifferentiableModel."""
    from featx.explain.model import preprocess_batch

    layers = []
    for use in model.uses:
        cfg = use.backbone.preprocess
        probe = preprocess_batch(x[:1].detach(), cfg)
        taps = list(dict.fromkeys(t for ts in use.sets.values() for t in ts))
        layers.extend((map_layer(use.backbone.model, t, probe), cfg) for t in taps)
    return layers


def integrated_gradients(model, x: torch.Tensor, targets: list[int], hand: torch.Tensor | None = None,
                         n_steps: int = IG_STEPS) -> torch.Tensor:
    """Integrated gradients (captum) from the blurred image, summed over colour channels."""
    from captum.attr import IntegratedGradients

    args = (hand,) if hand is not None else None
    attr = IntegratedGradients(model).attribute(x, baselines=blurred(x), target=list(targets),
                                                additional_forward_args=args, n_steps=n_steps,
                                                internal_batch_size=max(8, x.shape[0] * 4))
    return attr.detach().float().sum(1)


def input_x_gradient(model, x: torch.Tensor, targets: list[int], hand: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient x (input - deletion baseline), summed over colour channels (captum InputXGradient
    on the image's offset from its mean intensity): the first-order change of the target score
    when a pixel is replaced by the baseline the deletion metric and occlusion use, at pixel
    resolution, for one forward and backward pass."""
    from captum.attr import InputXGradient

    from featx.explain.faithfulness import deletion_baseline

    base = deletion_baseline(x.detach())
    args = (hand,) if hand is not None else None

    def shifted(offset, *rest):
        return model(offset + base, *rest)

    offset = (x.detach() - base).requires_grad_(True)
    attr = InputXGradient(shifted).attribute(offset, target=list(targets), additional_forward_args=args)
    return attr.detach().float().sum(1)


def occlusion(score_fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, targets: list[int],
              per_eval: int = 8) -> torch.Tensor:
    """Occlusion (captum): a window of 1/4 of the image, stride 1/8, filled with the image's mean
    intensity (the deletion metric's baseline; a blurred window keeps a dark lesion dark); a
    pixel's value is the mean drop of the target score over the windows covering it."""
    from captum.attr import Occlusion

    from featx.explain.faithfulness import deletion_baseline

    c, h, w = x.shape[1:]
    win = (c, max(1, h // 4), max(1, w // 4))
    stride = (c, max(1, h // 8), max(1, w // 8))

    def forward(batch):
        return torch.from_numpy(np.asarray(score_fn(batch), dtype=np.float32))

    attr = Occlusion(forward).attribute(x, sliding_window_shapes=win, strides=stride, baselines=deletion_baseline(x),
                                        target=list(targets), perturbations_per_eval=per_eval)
    return attr.detach().float().sum(1)
