"""The compiled execution path (AOTInductor package, freezing): features match eager ones, the
package lands in featx's cache dir, a second model loads it instead of compiling (and waits for
a build in progress rather than compiling its own), configs record ``compiled`` only when compiled, and a failed
compilation falls back to eager with one warning."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from featx import load_features
from featx.backbones.inference import (CompiledModel, compile_model, graph_is_cached, graph_package, prepare_model,
                                       run_model, should_compile)
from featx.cache import list_sets
from featx.errors import FeatxError
from featx.extraction import extract
from featx.runtime import make_runtime
from tests.support import TINY
from tests.support.images import make_class_folders




@pytest.fixture
def inductor_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path / "featx-cache"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    yield tmp_path / "featx-cache" / "inductor"


def test_auto_compiles_only_long_runs():
    from featx.backbones.inference import AUTO_COMPILE_MIN_IMAGES as N
    assert not should_compile("auto", N - 1) and should_compile("auto", N)
    assert should_compile("on", 1) and not should_compile("off", 10**9)


@pytest.mark.slow
def test_compiled_features_match_eager_and_use_the_cache_dir(inductor_dir, monkeypatch):
    rt = make_runtime("cpu", "fp32")
    eager = prepare_model(TINY, rt, weights="none")
    torch.manual_seed(0)
    x = torch.randn(5, 3, 64, 64)
    want = run_model(eager.model, x, rt)["head"]
    # two models (two Ray actors on one node, say) reach the empty cache at once: one exports and
    # compiles, the other waits on the package lock and loads what it wrote
    exports = []
    real_export = torch.export.export

    def counting_export(*args, **kwargs):
        exports.append(1)
        return real_export(*args, **kwargs)
    both = [compile_model(eager, batch_size=8), compile_model(prepare_model(TINY, rt, weights="none"), batch_size=8)]
    with monkeypatch.context() as m, ThreadPoolExecutor(2) as pool:
        m.setattr(torch.export, "export", counting_export)
        outs = list(pool.map(lambda c: run_model(c.model, x, rt)["head"], both))  # 5 rows: padded to 8
    assert len(exports) == 1, "both models compiled although one waited on the lock"
    assert sorted(c.model.loaded_from_disk for c in both) == [False, True]
    np.testing.assert_array_equal(outs[0], outs[1])
    comp = next(c for c in both if not c.model.loaded_from_disk)
    got = run_model(comp.model, x, rt)["head"]
    assert comp.compiled and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert any(inductor_dir.rglob("*")), "nothing written under the featx inductor cache dir"
    assert not comp.model.loaded_from_disk and graph_package(eager, 8).is_file()

    # a second model (another run or process) loads the package: nothing is exported again
    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the package is on disk")
    with monkeypatch.context() as m:
        m.setattr(torch.export, "export", no_export)
        again = compile_model(prepare_model(TINY, rt, weights="none"), batch_size=8)
        assert again.compiled and graph_is_cached(again, 8)
        np.testing.assert_array_equal(run_model(again.model, x, rt)["head"], got)
        assert again.model.loaded_from_disk and again.compiled

    # a damaged package is compiled again, not trusted
    graph_package(eager, 8).write_bytes(b"not a zip")
    fresh = compile_model(prepare_model(TINY, rt, weights="none"), batch_size=8)
    np.testing.assert_allclose(run_model(fresh.model, x, rt)["head"], want, rtol=1e-4, atol=1e-5)
    assert fresh.compiled and not fresh.model.loaded_from_disk
    assert graph_package(eager, 8).stat().st_size > 1000


def test_failed_compilation_warns_once_and_runs_eager(caplog, monkeypatch):
    rt = make_runtime("cpu", "fp32")
    prepared = prepare_model(TINY, rt, weights="none")
    model = CompiledModel(prepared.model, batch_size=4)

    def broken(*args, **kwargs):
        raise RuntimeError("no C compiler found\nsecond line")
    monkeypatch.setattr(torch.export, "export", broken)
    x = torch.randn(3, 3, 32, 32)
    with caplog.at_level(logging.WARNING, logger="featx"):
        a = run_model(model, x, rt)["head"]
        b = run_model(model, x, rt)["head"]
    lines = [r.getMessage() for r in caplog.records if "compilation failed" in r.getMessage()]
    assert len(lines) == 1 and "no C compiler found" in lines[0] and "second line" not in lines[0]
    np.testing.assert_allclose(a, run_model(prepared.model, x, rt)["head"], rtol=1e-6)
    np.testing.assert_array_equal(a, b)


def test_unknown_compile_mode_is_one_line(image_folder, tmp_path):
    with pytest.raises(FeatxError, match="unknown compile mode 'yes'"):
        extract([image_folder], tmp_path / "c.h5", backbones=[TINY], weights="none", compile="yes", progress=False)


@pytest.mark.slow
def test_compiled_run_records_it_and_an_eager_run_extends_the_same_set(image_folder, tmp_path, inductor_dir):
    cache, off = tmp_path / "c.h5", tmp_path / "off.h5"
    kw = dict(backbones=[TINY], weights="none", precision="fp32", batch_size=4, workers=0, progress=False)
    extract([image_folder], off, compile="off", **kw)
    s = extract([image_folder], cache, compile="on", **kw)
    (name,) = s.sets
    assert list_sets(cache)[name]["compiled"] == {"backend": "aot_inductor", "freezing": True}
    assert "compiled" not in list_sets(off)[name]
    a, b = load_features(off, name), load_features(cache, name)
    assert (a.ids == b.ids).all()
    np.testing.assert_allclose(b.X, a.X, rtol=1e-4, atol=1e-5)
    # an eager run with new images fills the compiled set instead of starting a twin
    more = make_class_folders(tmp_path / "more", seed=1)
    s2 = extract([image_folder, more], cache, compile="off", **kw)
    assert s2.sets == [name] and list(list_sets(cache)) == [name] and s2.ok == 12
    assert len(load_features(cache, name).ids) == 24


def test_auto_compiles_shorter_runs_whose_graph_is_cached():
    from featx.backbones.inference import AUTO_COMPILE_CACHED_MIN_IMAGES as M
    assert M < 2500
    assert not should_compile("auto", M - 1, graph_cached=True) and should_compile("auto", M, graph_cached=True)
    assert not should_compile("auto", M, graph_cached=False)
    assert not should_compile("off", 10**9, graph_cached=True)


@pytest.mark.slow
def test_a_compiled_graph_is_remembered_and_auto_then_compiles(image_folder, tmp_path, inductor_dir, monkeypatch):
    import featx.backbones.inference as inference
    from featx.backbones.inference import graph_is_cached, graph_package
    rt = make_runtime("cpu", "fp32")
    prepared = prepare_model(TINY, rt, weights="none")
    assert not graph_is_cached(prepared, 4)
    assert graph_package(prepared, 4) != graph_package(prepared, 8)
    assert graph_package(prepared, 4) != graph_package(prepare_model(TINY, rt, weights="none", pooling="max"), 4)
    kw = dict(backbones=[TINY], weights="none", precision="fp32", batch_size=4, workers=0, progress=False)
    monkeypatch.setattr(inference, "AUTO_COMPILE_CACHED_MIN_IMAGES", 1)   # 12 images count as enough
    s = extract([image_folder], tmp_path / "a.h5", compile="auto", **kw)
    assert "compiled" not in list_sets(tmp_path / "a.h5")[s.sets[0]]     # nothing cached yet: eager
    extract([image_folder], tmp_path / "on.h5", compile="on", **kw)       # compiles, remembers the graph
    assert graph_is_cached(prepared, 4) and graph_package(prepared, 4).parent.parent == inductor_dir
    s = extract([image_folder], tmp_path / "b.h5", compile="auto", **kw)
    assert list_sets(tmp_path / "b.h5")[s.sets[0]]["compiled"] == {"backend": "aot_inductor", "freezing": True}
    np.testing.assert_allclose(load_features(tmp_path / "b.h5", s.sets[0]).X,
                               load_features(tmp_path / "a.h5", s.sets[0]).X, rtol=1e-4, atol=1e-5)
