"""Tests of featx.handcrafted: vectors against direct scikit-image calls on real images, names,
configs, quantization of 16-bit data, degenerate images and the text syntax."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import scipy.stats
from PIL import Image
from skimage.color import rgb2gray
from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern
from skimage.transform import resize

from featx.errors import FeatxError
from featx.handcrafted import (
    DESCRIPTORS,
    FirstOrderSpec,
    GLCMSpec,
    HOGSpec,
    ImageInputError,
    LBPSpec,
    compute_all,
    make_spec,
    parse_handcrafted,
    quantize,
    spec_from_config,
    to_gray,
)
from featx.handcrafted.lbp import ror_codes
from tests.support import BREAST_NPZ, CHEST

XRAY_DIR = CHEST / "test" / "NORMAL"   # real chest X-rays committed in tests/data

ALL_DEFAULT = [HOGSpec(), LBPSpec(), GLCMSpec(), FirstOrderSpec()]
VARIANTS = ALL_DEFAULT + [
    LBPSpec(method="ror"),
    LBPSpec(method="nri_uniform", points_radii=[(8, 1)]),
    GLCMSpec(angle_mode="all"),
    GLCMSpec(angle_mode="mean_range", props=("contrast", "correlation", "entropy")),
    HOGSpec(size=(64, 48), pixels_per_cell=8, transform_sqrt=True),
]


@pytest.fixture(scope="module")
def xray():
    """One real chest X-ray as featx hands it to feature code (float32 RGB in [0, 1]) plus its
    8-bit gray values as PIL decodes them."""
    path = sorted(XRAY_DIR.glob("*.jpeg"))[0]
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
        gray_u8 = np.asarray(im.convert("L"))
    # the JPEGs are gray stored as RGB; the exact-equality tests below rely on it
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb.astype(np.float32) / 255.0, gray_u8


@pytest.fixture(scope="module")
def breast():
    with np.load(BREAST_NPZ) as d:
        return d["train_images"][:24]  # uint8 (24, 28, 28)


# ------------------------------------------------------------------ equality with scikit-image


def test_hog_equals_direct_skimage_on_chest_xray(xray):
    rgb, _ = xray
    # HOG bins orientations hard, so gradients on a bin edge (common in 8-bit data) make it
    # sensitive to 1e-8 changes of the input: the direct call starts from the same float image.
    gray = rgb2gray(rgb.astype(np.float64))
    ours = HOGSpec().compute(rgb)
    direct = hog(
        resize(gray, (128, 128), anti_aliasing=True),
        orientations=9,
        pixels_per_cell=(16, 16),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
    )
    assert ours.dtype == np.float32 and ours.shape == direct.shape == (1764,)
    assert np.allclose(ours, direct, atol=1e-6)

    spec = HOGSpec(orientations=12, pixels_per_cell=(8, 8), cells_per_block=(3, 3), block_norm="L1")
    direct = hog(
        resize(gray, (128, 128), anti_aliasing=True),
        orientations=12,
        pixels_per_cell=(8, 8),
        cells_per_block=(3, 3),
        block_norm="L1",
    )
    assert np.allclose(spec.compute(rgb), direct, atol=1e-6)


def test_lbp_equals_direct_skimage_on_chest_xray(xray):
    rgb, gray_u8 = xray
    ours = LBPSpec().compute(rgb)
    parts = []
    for P, R in [(8, 1), (16, 2), (24, 3)]:
        codes = local_binary_pattern(gray_u8, P, R, method="uniform")
        hist, _ = np.histogram(codes, bins=P + 2, range=(0, P + 2))
        parts.append(hist / codes.size)
    direct = np.concatenate(parts)
    assert ours.shape == direct.shape == (54,)
    assert np.allclose(ours, direct, atol=1e-7)
    # every histogram is normalized
    assert np.allclose([ours[:10].sum(), ours[10:28].sum(), ours[28:].sum()], 1.0)


def test_hog_lbp_glcm_equal_direct_skimage_on_breastmnist(breast):
    u8 = breast[0]
    img = u8.astype(np.float32) / 255.0
    direct_hog = hog(
        resize(u8 / 255.0, (128, 128), anti_aliasing=True),
        orientations=9,
        pixels_per_cell=(16, 16),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
    )
    assert np.allclose(HOGSpec().compute(img), direct_hog, atol=1e-6)

    codes = local_binary_pattern(u8, 8, 1, method="ror")
    assert np.isin(codes, ror_codes(8)).all()
    spec = LBPSpec(method="ror", points_radii=[(8, 1)])
    hist = np.array([(codes == c).sum() for c in ror_codes(8)]) / codes.size
    assert np.allclose(spec.compute(img), hist)

    # GLCM: 64 levels by floor(x * 64) == (u * 64) // 255, clipped to 63
    q = np.minimum((u8.astype(np.int64) * 64) // 255, 63).astype(np.uint8)
    P = graycomatrix(q, [1, 2, 3], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=64,
                     symmetric=True, normed=True)
    props = ["contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM"]
    direct = np.concatenate([graycoprops(P, p).mean(axis=1) for p in props])
    assert np.allclose(GLCMSpec().compute(img), direct, rtol=1e-5, atol=1e-6)
    direct_all = np.concatenate([graycoprops(P, p).ravel() for p in props])
    assert np.allclose(GLCMSpec(angle_mode="all").compute(img), direct_all, rtol=1e-5, atol=1e-6)

    # integer input is scaled by the dtype max and gives the same vectors as float input
    for spec in VARIANTS:
        assert np.array_equal(spec.compute(u8), spec.compute(u8 / 255.0))


def test_firstorder_matches_definitions(breast):
    u8 = breast[1]
    x = u8.astype(np.float64).ravel() / 255.0
    got = dict(zip(FirstOrderSpec().feature_names(), FirstOrderSpec().compute(u8)))
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    hist, _ = np.histogram(x, bins=64, range=(0.0, 1.0))
    p = hist[hist > 0] / x.size
    inner = x[(x >= p10) & (x <= p90)]
    expected = {
        "mean": x.mean(),
        "std": x.std(),
        "variance": x.var(),
        "skewness": scipy.stats.skew(x),
        "kurtosis": scipy.stats.kurtosis(x, fisher=False),
        "entropy": -(p * np.log2(p)).sum(),
        "uniformity": (p**2).sum(),
        "min": x.min(),
        "p10": p10,
        "p25": p25,
        "median": p50,
        "p75": p75,
        "p90": p90,
        "max": x.max(),
        "range": x.max() - x.min(),
        "iqr": p75 - p25,
        "mad": np.abs(x - x.mean()).mean(),
        "robust_mad": np.abs(inner - inner.mean()).mean(),
        "energy": (x**2).sum(),
        "rms": np.sqrt((x**2).mean()),
    }
    assert len(got) == 20
    for key, val in expected.items():
        assert got[f"firstorder_{key}"] == pytest.approx(val, rel=1e-5, abs=1e-6), key


def test_vectors_finite_and_informative_on_breastmnist(breast):
    for spec in VARIANTS:
        rows = np.stack([spec.compute(im.astype(np.float32) / 255.0) for im in breast])
        assert rows.shape == (len(breast), spec.n_features), spec.name
        assert rows.dtype == np.float32
        assert np.isfinite(rows).all(), spec.name
        # each vector has more than one value, and the images are told apart
        assert all(np.ptp(r) > 0 for r in rows), spec.name
        assert np.unique(rows, axis=0).shape[0] == len(breast), spec.name


def test_compute_all_equals_each_compute(xray):
    rgb, _ = xray
    out = compute_all(VARIANTS, rgb)
    assert list(out) == [s.name for s in VARIANTS]
    for spec in VARIANTS:
        assert np.array_equal(out[spec.name], spec.compute(rgb))


# ------------------------------------------------------------------ names and configs


def test_default_names():
    assert [s.name for s in ALL_DEFAULT] == ["hog", "lbp", "glcm", "firstorder"]
    # explicitly passing the defaults is still the default set
    assert HOGSpec(size=128, pixels_per_cell=16, cells_per_block=[2, 2]).name == "hog"
    assert LBPSpec(points_radii=[[8, 1], [16, 2], [24, 3]]).name == "lbp"
    assert GLCMSpec(angles_deg=[0, 45, 90, 135], distances=[1, 2, 3]).name == "glcm"


def test_names_get_readable_suffix_for_non_default_params():
    assert HOGSpec(orientations=12, pixels_per_cell=8).name == "hog_o12_ppc8"
    assert HOGSpec(size=(64, 96)).name == "hog_s64x96"
    assert LBPSpec(method="ror").name == "lbp_mror"
    assert LBPSpec(points_radii=[(8, 1), (16, 2.5)]).name == "lbp_pr8r1-16r2p5"
    assert GLCMSpec(levels=32, distances=(1, 2)).name == "glcm_q32_d1-2"
    assert FirstOrderSpec(bins=32).name == "firstorder_b32"
    long = GLCMSpec(props=("contrast", "dissimilarity", "homogeneity", "energy", "entropy"))
    assert long.name.startswith("glcm_h") and len(long.name) == len("glcm_h") + 10
    assert long.name == GLCMSpec(props=list(long.props)).name  # deterministic


def test_configs_are_json_complete_and_change_with_params():
    variations = {
        "hog": [dict(orientations=12), dict(size=64), dict(pixels_per_cell=8),
                dict(cells_per_block=3), dict(block_norm="L2"), dict(transform_sqrt=True),
                dict(anti_aliasing=False), dict(order=3)],
        "lbp": [dict(method="ror"), dict(method="nri_uniform"), dict(points_radii=[(8, 1)]),
                dict(levels=64)],
        "glcm": [dict(levels=32), dict(distances=[1]), dict(angles_deg=[0, 90]),
                 dict(props=["contrast"]), dict(symmetric=False), dict(angle_mode="all")],
        "firstorder": [dict(bins=32)],
    }
    for descriptor, changes in variations.items():
        base = make_spec(descriptor)
        cfg = base.config()
        assert json.loads(json.dumps(cfg)) == cfg
        assert cfg["kind"] == "handcrafted" and cfg["descriptor"] == descriptor
        assert isinstance(cfg["skimage_version"], str) and cfg["n_features"] == base.n_features
        seen_names = {base.name}
        seen_cfgs = [json.dumps(cfg, sort_keys=True)]
        for change in changes:
            spec = make_spec(descriptor, **change)
            c = spec.config()
            assert json.loads(json.dumps(c)) == c
            for key in change:
                assert key in c
            assert json.dumps(c, sort_keys=True) not in seen_cfgs, (descriptor, change)
            assert spec.name not in seen_names, (descriptor, change)
            seen_cfgs.append(json.dumps(c, sort_keys=True))
            seen_names.add(spec.name)
            # a config rebuilds an equal spec
            assert spec_from_config(json.loads(json.dumps(c))) == spec


def test_specs_are_frozen_hashable_picklable():
    for spec in VARIANTS:
        again = pickle.loads(pickle.dumps(spec))
        assert again == spec and hash(again) == hash(spec) and again.name == spec.name
        with pytest.raises(Exception):
            spec.levels = 3  # type: ignore[misc]


def test_n_features_matches_output_and_names():
    img = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    for spec in VARIANTS:
        names = spec.feature_names()
        assert len(names) == len(set(names)) == spec.n_features == spec.compute(img).shape[0]
        assert all(n.startswith(spec.name + "_") for n in names)
    assert HOGSpec().n_features == 1764
    assert LBPSpec().n_features == 10 + 18 + 26
    assert LBPSpec(method="ror").n_features == 3 * 36
    assert GLCMSpec().n_features == 18 and GLCMSpec(angle_mode="all").n_features == 72
    assert FirstOrderSpec().n_features == 20


def test_ror_code_table():
    # number of binary necklaces (OEIS A000031)
    assert [len(ror_codes(P)) for P in (4, 8, 12, 16)] == [6, 36, 352, 4116]
    img = quantize(np.random.default_rng(1).random((60, 60)), 256)
    for P, R in [(8, 1.0), (8, 2.5), (12, 2.0)]:
        assert np.isin(local_binary_pattern(img, P, R, "ror"), ror_codes(P)).all()


# ------------------------------------------------------------------ quantization


def test_quantization_rule():
    x = np.array([0.0, 0.5 / 64, 1 / 64, 0.5, 63.99 / 64, 1.0])
    assert quantize(x, 64).tolist() == [0, 0, 1, 32, 63, 63]
    u8 = np.arange(256, dtype=np.uint8)
    assert np.array_equal(quantize(to_gray(u8[None, :]), 256)[0], u8)
    assert quantize(x, 300).dtype == np.uint16


def test_16bit_ramp_keeps_its_levels():
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # the full 16-bit range
    gray = to_gray(ramp)
    assert gray.min() == 0.0 and gray.max() == 1.0
    q64 = quantize(gray, 64)
    assert np.unique(q64).size == 64
    assert np.all(np.bincount(q64.ravel()) == 1024)  # equal-width bins over [0, 1]
    q16 = quantize(gray, 65536)
    assert np.array_equal(q16, ramp)  # exact at 16-bit precision
    # a blind 8-bit cast would wrap a ramp around every 256 values; featx's GLCM sees it smooth
    long_ramp = np.arange(65536, dtype=np.uint16).reshape(64, 1024)
    g_ours = GLCMSpec(props=("contrast",), angle_mode="all").compute(long_ramp)
    g_wrapped = GLCMSpec(props=("contrast",), angle_mode="all").compute(long_ramp.astype(np.uint8))
    assert g_ours.max() <= 9.0  # neighbours at most 3 pixels apart: at most 3 levels apart
    assert g_wrapped[0] > 10 * g_ours[0]  # horizontal d=1: 255 -> 0 jumps in the wrapped one
    # a narrow 16-bit ramp (values 1000..1255) keeps 256 distinct LBP levels at levels=65536
    narrow = (1000 + np.arange(256, dtype=np.uint16))[None, :].repeat(8, axis=0)
    assert np.unique(quantize(to_gray(narrow), 65536)).size == 256
    lbp = LBPSpec(levels=65536, points_radii=[(8, 1)]).compute(narrow)
    assert np.isfinite(lbp).all() and lbp.sum() == pytest.approx(1.0)
    # the float32 form of 16-bit data (what Sample.load() hands over) gives the same histogram
    # of the full ramp at 64 levels as the uint16 form
    f32 = (ramp.astype(np.float64) / 65535.0).astype(np.float32)
    assert np.allclose(FirstOrderSpec().compute(f32), FirstOrderSpec().compute(ramp), rtol=1e-5)


# ------------------------------------------------------------------ degenerate input


@pytest.mark.parametrize(
    "image",
    [
        np.full((1, 1), 0.4, np.float32),
        np.zeros((1, 1, 3), np.float32),
        np.full((37, 23), 0.7, np.float32),
        np.ones((16, 16, 3), np.float32),
        np.zeros((2, 2), np.float32),
        np.array([[0.0, 1.0], [1.0, 0.0]], np.float32),
        np.linspace(0, 1, 50, dtype=np.float32)[None, :],
        np.linspace(0, 1, 50, dtype=np.float32)[:, None],
        np.zeros((9, 9, 1), np.uint8),
        np.ones((5, 7), bool),
    ],
    ids=["1x1", "1x1rgb", "const", "const-rgb", "2x2zero", "2x2checker", "row", "col", "hw1",
         "bool"],
)
def test_degenerate_images_give_finite_vectors(image):
    for spec in VARIANTS:
        vec = spec.compute(image)
        assert vec.shape == (spec.n_features,) and vec.dtype == np.float32
        assert np.isfinite(vec).all(), spec.name


def test_constant_image_conventions():
    img = np.full((20, 20), 0.5, np.float32)
    g = dict(zip(GLCMSpec().feature_names(), GLCMSpec().compute(img)))
    for d in (1, 2, 3):
        assert g[f"glcm_correlation_d{d}_mean"] == 1.0
        assert g[f"glcm_contrast_d{d}_mean"] == 0.0
        assert g[f"glcm_homogeneity_d{d}_mean"] == 1.0
        assert g[f"glcm_ASM_d{d}_mean"] == 1.0
    f = dict(zip(FirstOrderSpec().feature_names(), FirstOrderSpec().compute(img)))
    assert f["firstorder_skewness"] == 0.0 and f["firstorder_kurtosis"] == 0.0
    assert f["firstorder_entropy"] == 0.0 and f["firstorder_uniformity"] == 1.0
    assert f["firstorder_std"] == 0.0 and f["firstorder_mean"] == pytest.approx(0.5)
    assert np.all(HOGSpec().compute(img) == 0.0)
    # every pixel of a constant image has the same "uniform" code (borders compare with 0)
    lbp = LBPSpec(points_radii=[(8, 1)]).compute(img)
    assert lbp.sum() == pytest.approx(1.0)
    # an empty co-occurrence matrix (distance beyond a 1x1 image): 0, correlation 1
    one = GLCMSpec(props=("contrast", "correlation"), distances=(3,)).compute(np.ones((1, 1)))
    assert one.tolist() == [0.0, 1.0]


def test_large_image_is_resized_for_hog():
    big = np.random.default_rng(2).random((2500, 1800)).astype(np.float32)
    vec = HOGSpec().compute(big)
    assert vec.shape == (1764,) and np.isfinite(vec).all()
    assert np.allclose(vec, hog(resize(big.astype(np.float64), (128, 128), anti_aliasing=True),
                                orientations=9, pixels_per_cell=(16, 16),
                                cells_per_block=(2, 2)), atol=1e-6)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.full((4, 4), np.inf), "NaN or infinite"),
        (np.full((4, 4), 255.0), r"expected \[0, 1\]"),
        (np.full((4, 4), -0.5), r"expected \[0, 1\]"),
        (np.zeros((4, 4, 4)), "4 channels"),
        (np.zeros((0, 5)), "empty"),
        (np.zeros(5), "not \\(H, W\\)"),
        (np.zeros((2, 3, 3, 3)), "not \\(H, W\\)"),
        (np.array([["a"]]), "not a numeric"),
        (np.array([[-3]], np.int16), "negative"),
    ],
)
def test_bad_images_raise_featx_errors(image, match):
    with pytest.raises(ImageInputError, match=match) as info:
        HOGSpec().compute(image)
    assert isinstance(info.value, FeatxError) and "\n" not in str(info.value)


def test_tiny_float_overshoot_is_clipped():
    img = np.array([[-1e-4, 0.5], [0.5, 1.0 + 1e-4]])
    assert np.array_equal(FirstOrderSpec().compute(img),
                          FirstOrderSpec().compute(np.clip(img, 0, 1)))


# ------------------------------------------------------------------ parsing


def test_parse_names_and_overrides():
    assert [s.name for s in parse_handcrafted("hog,lbp")] == ["hog", "lbp"]
    assert [s.name for s in parse_handcrafted(" hog , glcm ,firstorder,")] == [
        "hog", "glcm", "firstorder"]
    specs = parse_handcrafted(
        "hog:orientations=12:pixels_per_cell=8x8,lbp:method=ror,"
        "glcm:levels=32,distances=(1, 2),angle_mode=all,firstorder"
    )
    assert specs == [
        HOGSpec(orientations=12, pixels_per_cell=(8, 8)),
        LBPSpec(method="ror"),
        GLCMSpec(levels=32, distances=(1, 2), angle_mode="all"),
        FirstOrderSpec(),
    ]
    (lbp,) = parse_handcrafted("lbp:points_radii=((8,1),(16,2)),method=nri_uniform")
    assert lbp.points_radii == ((8, 1.0), (16, 2.0)) and lbp.method == "nri_uniform"
    (h,) = parse_handcrafted("hog:block_norm=L2-Hys,transform_sqrt=true,size=64")
    assert h.transform_sqrt is True and h.size == (64, 64)
    # lists, specs and mappings
    assert parse_handcrafted(["hog", "lbp:method=ror"]) == [HOGSpec(), LBPSpec(method="ror")]
    assert parse_handcrafted([GLCMSpec(levels=16), {"descriptor": "firstorder", "bins": 8}]) == [
        GLCMSpec(levels=16), FirstOrderSpec(bins=8)]
    assert parse_handcrafted("") == [] and parse_handcrafted(None) == []


@pytest.mark.parametrize(
    "text, match",
    [
        ("hog,sift", r"unknown handcrafted feature 'sift'; known: hog, lbp, glcm, firstorder"),
        ("HOGG", "known: hog, lbp, glcm, firstorder"),
        ("hog:orientation=12", "unknown parameter 'orientation'; known: size, orientations"),
        ("orientations=12,hog", "before any handcrafted feature name"),
        ("hog:orientations=twelve", "orientations='twelve' is invalid"),
        ("hog:orientations=0", "orientations=0 is invalid"),
        ("hog:size=8", "holds no"),
        ("lbp:method=var", "method='var' is invalid; expected one of uniform, ror, nri_uniform"),
        ("lbp:method=ror,points_radii=((24,3),)", "points_radii P"),
        ("lbp:points_radii=((8,0),)", "radius 0 is invalid"),
        ("glcm:levels=1000", "levels=1000 is invalid"),
        ("glcm:props=(contrast)", "props="),
        ("glcm:distances=(1,1)", "repeats"),
        ("hog,hog", "'hog' is given twice"),
        ("hog:orientations=9,hog", "'hog' is given twice"),
        ("hog:orientations=9:orientations=10", "given twice"),
        ("glcm:levels=(1,2", "unbalanced"),
        ("hog:12", "expected key=value"),
    ],
)
def test_parse_errors_are_one_line_featx_errors(text, match):
    with pytest.raises(FeatxError, match=match) as info:
        parse_handcrafted(text)
    assert "\n" not in str(info.value)


def test_registry_is_complete():
    assert set(DESCRIPTORS) == {"hog", "lbp", "glcm", "firstorder"}
    for name, cls in DESCRIPTORS.items():
        assert cls().name == name == cls.descriptor
