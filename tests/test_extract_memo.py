"""A re-run reads only what changed: featx extract trusts the cache's memo of (size, mtime, ctime,
inode) -> content id for unchanged files, re-hashes a changed file, and --rehash reads them all."""
from __future__ import annotations

import numpy as np
from PIL import Image

import featx.sources.base as base
from featx import cache as C
from featx.extraction import extract

HAND = dict(backbones=[], handcrafted="firstorder", progress=False, workers=0)


def test_rerun_hashes_only_changed_files_and_rehash_hashes_all(image_folder, tmp_path, hash_calls):
    cache = tmp_path / "c.h5"
    first = extract([image_folder], cache, **HAND)
    assert first.ok == 12
    calls = hash_calls
    calls.clear()   # count from here on
    again = extract([image_folder], cache, **HAND)
    assert calls == [] and again.reused == 12 and again.ok == 0

    changed = image_folder / "benign" / "benign_0.png"
    old_ids = set(C.read_state(cache).ids)
    Image.fromarray(np.full((40, 48, 3), 7, np.uint8)).save(changed)   # new bytes, new content id
    third = extract([image_folder], cache, **HAND)
    assert [p for p in calls] == [str(changed)]
    assert third.ok == 1 and third.reused == 11
    new_ids = set(C.read_state(cache).ids) - old_ids
    assert new_ids == {base.sha256_file(changed)}                      # the changed file got its new id

    calls.clear()
    extract([image_folder], cache, rehash=True, **HAND)
    assert len(calls) == 12
