"""Overlays (PNG) and the self-contained HTML gallery of an explanation."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

DISPLAY_MIN = 224  # small images (28 px) are enlarged for viewing; the .npy maps stay at input size


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The image (C, H, W) in [0, 1] with the map (H, W) as a jet heat layer (positive part,
    scaled to its peak), enlarged to at least DISPLAY_MIN pixels on the shorter side."""
    from matplotlib import colormaps

    gray = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    rgb = np.repeat(gray[..., None], 3, axis=2) if gray.ndim == 2 else gray
    m = np.clip(saliency, 0, None)
    m = m / m.max() if m.max() > 0 else m
    heat = colormaps["jet"](m)[..., :3]
    out = (1 - alpha) * rgb + alpha * heat
    img = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))
    scale = max(1, int(np.ceil(DISPLAY_MIN / min(img.size))))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def plain(image: np.ndarray) -> Image.Image:
    return overlay(image, np.zeros(image.shape[1:]), alpha=0.0)


def data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_gallery(path: Path, title: str, rows: list[dict], images: dict[str, Image.Image],
                  overlays: dict[str, Image.Image], header: list[str]) -> Path:
    """One HTML file with every image embedded: original, overlay, prediction, probability."""
    e = html.escape
    cards = []
    for r in rows:
        cards.append(
            f'<div class="card"><img src="{data_uri(images[r["id"]])}" alt="image">'
            f'<img src="{data_uri(overlays[r["id"]])}" alt="saliency">'
            f'<p><b>{e(r["predicted"])}</b> ({r["score_kind"]} {r["score"]:.3f})'
            f'{" — true: " + e(r["true"]) if r.get("true") else ""}<br>'
            f'explained: {e(r["target"])} ({r["target_score"]:.3f})<br>'
            f'<small>{e(r["path"])}</small></p></div>')
    body = "".join(f"<p>{e(h)}</p>" for h in header) + "".join(cards)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:sans-serif;margin:1em}.card{display:inline-block;vertical-align:top;margin:6px;"
            "padding:6px;border:1px solid #ccc;width:470px}.card img{width:224px;margin:1px;image-rendering:pixelated}"
            f"</style></head><body><h1>{e(title)}</h1>{body}</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
