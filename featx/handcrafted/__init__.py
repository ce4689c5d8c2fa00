"""Handcrafted image descriptors on scikit-image: HOG, LBP, GLCM and first-order statistics.

Each descriptor is a small frozen dataclass (a *spec*) with ``name``, ``config()`` and
``compute(image) -> float32 vector`` (see docs/CONTRACTS.md)::

    >>> from featx.handcrafted import parse_handcrafted, compute_all
    >>> specs = parse_handcrafted("hog,lbp:method=ror,glcm:levels=32,distances=(1,2)")
    >>> [s.name for s in specs]
    ['hog', 'lbp_mror', 'glcm_q32_d1-2']

Text syntax of :func:`parse_handcrafted`: feature sets separated by commas; a set is a
descriptor name optionally followed by ``:key=value`` parameters. Further parameters of the same
set follow after ``:`` or after a comma (a comma-separated ``key=value`` with no name before it
belongs to the set before it). Values are Python literals (``12``, ``(8, 8)``,
``((8, 1), (16, 2))``, ``True``), ``8x16`` for a pair, or bare words (``ror``, ``L2-Hys``).
Commas inside brackets do not split.
"""
from __future__ import annotations

import ast
import difflib
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from featx.errors import FeatxError
from featx.handcrafted.base import (
    HandcraftedSpec,
    ImageInputError,
    quantize,
    to_gray,
)
from featx.handcrafted.firstorder import FirstOrderSpec
from featx.handcrafted.glcm import GLCMSpec
from featx.handcrafted.hog import HOGSpec
from featx.handcrafted.lbp import LBPSpec

#: descriptor name -> spec class
DESCRIPTORS: dict[str, type[HandcraftedSpec]] = {
    "hog": HOGSpec,
    "lbp": LBPSpec,
    "glcm": GLCMSpec,
    "firstorder": FirstOrderSpec,
}

__all__ = [
    "DESCRIPTORS",
    "FirstOrderSpec",
    "GLCMSpec",
    "HOGSpec",
    "HandcraftedSpec",
    "ImageInputError",
    "LBPSpec",
    "compute_all",
    "make_spec",
    "parse_handcrafted",
    "quantize",
    "spec_from_config",
    "to_gray",
]


def _known() -> str:
    return ", ".join(DESCRIPTORS)


def _did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(str(word).strip().lower(), list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def make_spec(descriptor: str, **params: Any) -> HandcraftedSpec:
    """The spec of ``descriptor`` ("hog", "lbp", "glcm", "firstorder") with ``params``.

    Raises FeatxError on an unknown descriptor, an unknown parameter or an invalid value.
    """
    cls = DESCRIPTORS.get(descriptor.strip().lower()) if isinstance(descriptor, str) else None
    if cls is None:
        raise FeatxError(f"unknown handcrafted feature {descriptor!r}; known: {_known()}"
                         f"{_did_you_mean(descriptor, DESCRIPTORS)}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in params if k not in fields]
    if unknown:
        raise FeatxError(
            f"{cls.descriptor}: unknown parameter {unknown[0]!r}; known: {', '.join(fields)}"
            f"{_did_you_mean(unknown[0], fields)}"
        )
    return cls(**params)


def spec_from_config(config: Mapping[str, Any]) -> HandcraftedSpec:
    """Rebuild a spec from its ``config()`` (e.g. a cache's ``config`` attribute)."""
    if config.get("kind") != "handcrafted" or "descriptor" not in config:
        raise FeatxError("config is not a handcrafted feature config")
    cls = DESCRIPTORS.get(config["descriptor"])
    if cls is None:
        raise FeatxError(
            f"unknown handcrafted feature {config['descriptor']!r}; known: {_known()}"
        )
    params = {f.name: config[f.name] for f in dataclasses.fields(cls) if f.name in config}
    return cls(**params)


# ------------------------------------------------------------------------------------------
# text parsing

_PAIR = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside (), [] and {}."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise FeatxError(f"unbalanced brackets in handcrafted spec {text!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise FeatxError(f"unbalanced brackets in handcrafted spec {text!r}")
    parts.append("".join(cur))
    return parts


def _value(text: str) -> Any:
    text = text.strip()
    m = _PAIR.match(text)
    if m:
        return (int(m.group(1)), int(m.group(2)))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _param(text: str, where: str) -> tuple[str, Any]:
    if "=" not in text:
        raise FeatxError(f"expected key=value in handcrafted spec, got {text.strip()!r} ({where})")
    key, val = text.split("=", 1)
    key = key.strip()
    if not key:
        raise FeatxError(f"empty parameter name in handcrafted spec ({where})")
    return key, _value(val)


def _is_continuation(segment: str) -> bool:
    head = segment.split("=", 1)[0]
    return "=" in segment and ":" not in head


def _parse_text(text: str) -> list[HandcraftedSpec]:
    entries: list[tuple[str, dict[str, Any]]] = []
    for seg in _split_top(text, ","):
        if not seg.strip():
            continue
        if _is_continuation(seg):
            if not entries:
                raise FeatxError(
                    f"parameter {seg.strip()!r} comes before any handcrafted feature name"
                )
            key, val = _param(seg, entries[-1][0])
            if key in entries[-1][1]:
                raise FeatxError(f"{entries[-1][0]}: parameter {key!r} given twice")
            entries[-1][1][key] = val
            continue
        pieces = _split_top(seg, ":")
        name = pieces[0].strip()
        params: dict[str, Any] = {}
        for piece in pieces[1:]:
            if not piece.strip():
                continue
            key, val = _param(piece, name)
            if key in params:
                raise FeatxError(f"{name}: parameter {key!r} given twice")
            params[key] = val
        entries.append((name, params))
    return [make_spec(name, **params) for name, params in entries]


def parse_handcrafted(
    text: str | HandcraftedSpec | Sequence[str | HandcraftedSpec | Mapping[str, Any]] | None,
) -> list[HandcraftedSpec]:
    """Parse handcrafted feature sets.

    ``text`` is a string like ``"hog,lbp"`` or ``"hog:orientations=12,pixels_per_cell=8,lbp"``
    (syntax in the module doc), or a sequence whose items are such strings, specs (kept as they
    are) or mappings ``{"descriptor": "hog", "orientations": 12}``. ``None`` or ``""`` gives
    ``[]``. Raises FeatxError (one line) on an unknown descriptor, naming the known ones, on an
    unknown parameter or bad value, and when two sets end up with the same name.
    """
    if text is None:
        return []
    items: Sequence[Any] = [text] if isinstance(text, (str, HandcraftedSpec)) else text
    specs: list[HandcraftedSpec] = []
    for item in items:
        if isinstance(item, HandcraftedSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.extend(_parse_text(item))
        elif isinstance(item, Mapping):
            params = dict(item)
            descriptor = params.pop("descriptor", None)
            if descriptor is None:
                raise FeatxError("handcrafted spec mapping needs a 'descriptor' key")
            specs.append(make_spec(descriptor, **params))
        else:
            raise FeatxError(f"cannot read a handcrafted spec from {type(item).__name__}")
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise FeatxError(f"handcrafted feature set {s.name!r} is given twice")
        seen.add(s.name)
    return specs


def compute_all(specs: Sequence[HandcraftedSpec], image: np.ndarray) -> dict[str, np.ndarray]:
    """``{spec.name: spec.compute(image)}``, converting the image to gray only once."""
    gray = to_gray(image)
    return {s.name: s.compute_gray(gray) for s in specs}
