"""JSON for results: numpy scalars and arrays, paths and anything else made plain (one place)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def json_default(o: Any):
    """``json.dumps(default=...)``: numpy scalars -> Python numbers, arrays -> lists, paths ->
    strings, anything else -> its repr."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (dicts, lists, str, numbers, None)."""
    return json.loads(json.dumps(obj, default=json_default))


def plain(v: Any) -> Any:
    """A numpy scalar as the Python value; anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v
