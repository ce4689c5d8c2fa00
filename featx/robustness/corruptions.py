"""Common image corruptions at five severities (ImageNet-C style, with the MedMNIST-C ones).

Each corruption maps a float image in [0, 1] (``(H, W)`` or ``(H, W, 3)``) and a severity 1..5 to
an image of the same shape in [0, 1]. Implemented with numpy, scipy and PIL (the ``imagecorruptions``
and ``medmnistc`` packages pin old scikit-image / opencv / ImageMagick and are not used). Severity
parameters: Hendrycks & Dietterich 2019 (ImageNet-C) for gaussian_noise, gaussian_blur, contrast,
jpeg_compression; MedMNIST-C (Di Salvo et al. 2024, its breastmnist/chestmnist settings) for
speckle_noise, motion_blur, brightness_up/down, pixelate. Random corruptions take a seeded
``numpy.random.Generator``, so a run is reproducible.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

SEVERITIES = (1, 2, 3, 4, 5)


def _uint8(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


def _float(im: Image.Image) -> np.ndarray:
    return np.asarray(im, np.float32) / 255.0


def gaussian_noise(image, severity, rng):
    sigma = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1] * 2.5
    return image + rng.normal(0, sigma, image.shape)


def speckle_noise(image, severity, rng):
    sigma = (0.10, 0.15, 0.20, 0.25, 0.30)[severity - 1]
    return image + image * rng.normal(0, sigma, image.shape)


def gaussian_blur(image, severity, rng):
    # 0.5..2 px at MedMNIST's 28 px, growing with the image beyond 64 px (1.75..7 px at 224: ImageNet-C's range)
    sigma = (0.5, 0.75, 1.0, 1.5, 2.0)[severity - 1] * max(1.0, max(image.shape[:2]) / 64)
    spatial = (sigma, sigma) + ((0,) if image.ndim == 3 else ())
    return ndimage.gaussian_filter(image, spatial)


def motion_blur(image, severity, rng):
    radius, _sigma = ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12))[severity - 1]
    length = max(2, int(round(radius * max(image.shape[:2]) / 28)))  # MedMNIST-C at 28 px, scaled
    angle = rng.uniform(-45, 45)
    kernel = np.zeros((length, length))
    kernel[length // 2, :] = 1.0
    kernel = ndimage.rotate(kernel, angle, reshape=False, order=1)
    kernel /= kernel.sum()
    if image.ndim == 3:
        return np.stack([ndimage.convolve(image[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)
    return ndimage.convolve(image, kernel, mode="nearest")


def contrast(image, severity, rng):
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    mean = image.mean(axis=(0, 1), keepdims=True)
    return (image - mean) * c + mean


def brightness_up(image, severity, rng):
    return image * (1.4, 1.5, 1.6, 1.8, 2.0)[severity - 1]


def brightness_down(image, severity, rng):
    return image * (0.55, 0.5, 0.45, 0.4, 0.3)[severity - 1]


def jpeg_compression(image, severity, rng):
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buf = io.BytesIO()
    _uint8(image).save(buf, "JPEG", quality=quality)
    return _float(Image.open(io.BytesIO(buf.getvalue())))


def pixelate(image, severity, rng):
    factor = (0.30, 0.25, 0.20, 0.15, 0.10)[severity - 1]
    h, w = image.shape[:2]
    im = _uint8(image)
    small = im.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.BOX)
    return _float(small.resize((w, h), Image.NEAREST))


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_noise": gaussian_noise,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "jpeg_compression": jpeg_compression,
    "contrast": contrast,
    "brightness_up": brightness_up,
    "brightness_down": brightness_down,
    "pixelate": pixelate,
}


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (float [0, 1]) under corruption ``name`` at ``severity`` (1..5), float32 in [0, 1]."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, not {severity!r}")
    out = CORRUPTIONS[name](np.asarray(image, np.float32), int(severity), rng)
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)
