"""The faster decode paths give exactly what the plain PIL path gives: 16-bit grayscale PNGs
through torchvision.io.decode_png keep their 16-bit depth and equal PIL's values, and the in-place
intensity scaling equals the textbook formula. Also: decode workers hand the model one stacked
batch per backbone in the model's memory format."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from featx.extraction.decode import stack_inputs
from featx.sources.images import decode_image, scale_to_unit


def _pil_reference(path, intensity="auto"):
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im).astype(np.uint16)
    a = arr.astype(np.float32)
    if intensity == "dtype":
        return np.clip(a / 65535.0, 0, 1).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)


def test_16bit_png_equals_pil_and_keeps_its_depth(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(100, 60000, size=(301, 257), dtype=np.uint16)   # odd sizes, > 8 bits of levels
    img[0, 0], img[-1, -1] = 7, 65000
    path = tmp_path / "deep.png"
    Image.fromarray(img).save(path)
    for intensity in ("auto", "dtype"):
        got = decode_image(str(path), intensity=intensity)
        want = _pil_reference(path, intensity)
        assert got.dtype == np.float32 and got.shape == (301, 257)
        np.testing.assert_array_equal(got, want)
    got = decode_image(str(path))
    assert len(np.unique(got)) > 10_000          # 16-bit depth preserved, not an 8-bit round trip
    assert got.min() == 0.0 and got.max() == 1.0


def test_truncated_16bit_png_still_fails_with_a_reason(tmp_path):
    img = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) * 3).astype(np.uint16)
    path = tmp_path / "cut.png"
    Image.fromarray(img).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    import pytest

    from featx.errors import DecodeError
    with pytest.raises(DecodeError, match="truncated|cannot decode"):
        decode_image(str(path))


def test_scale_to_unit_matches_the_formula():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 4096, (64, 48)).astype(np.uint16), rng.normal(3, 2, (40, 30)).astype(np.float32),
                rng.integers(-5, 70000, (20, 20)).astype(np.int32)):
        a = arr.astype(np.float64 if arr.dtype.itemsize > 2 else np.float32)
        want = np.clip((a - a.min()) / (a.max() - a.min()), 0, 1).astype(np.float32)
        np.testing.assert_array_equal(scale_to_unit(arr), want)
    u16 = np.array([[0, 65535], [1, 2]], np.uint16)
    np.testing.assert_array_equal(scale_to_unit(u16, "dtype"), (u16.astype(np.float32) / 65535).astype(np.float32))
    assert not scale_to_unit(np.full((3, 3), 9, np.uint16)).any()


def test_workers_stack_each_backbones_rows_in_the_models_memory_format():
    t = [torch.full((3, 4, 5), float(i)) for i in range(4)]
    batch = [{"i": 0, "error": None, "tensors": {0: t[0], 1: t[0] * 2}, "hand": {}},
             {"i": 1, "error": "bad file", "tensors": {0: t[1]}, "hand": {}},
             {"i": 2, "error": None, "tensors": {1: t[2] * 2}, "hand": {}},
             {"i": 3, "error": None, "tensors": {0: t[3], 1: t[3] * 2}, "hand": {}}]
    out = stack_inputs(batch, channels_last=True)
    assert [r["i"] for r in out["rows"]] == [0, 1, 2, 3] and all("tensors" not in r for r in out["rows"])
    x0, x1 = out["x"][0], out["x"][1]
    assert x0.shape == (2, 3, 4, 5) and x0.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x0, torch.stack([t[0], t[3]]))          # the failed row is left out
    assert torch.equal(x1, torch.stack([t[0], t[2], t[3]]) * 2)
    plain = stack_inputs(batch)["x"][0]
    assert plain.is_contiguous() and torch.equal(plain, x0)
