"""Model bundles: a fitted pipeline with everything needed to use it on new images.

A bundle is one joblib file, ``MODEL.joblib``, holding a :class:`ModelBundle`, plus a sidecar
``MODEL.joblib.sha256`` in ``sha256sum`` format (``<hex>  MODEL.joblib``).

:func:`load_bundle` hashes the file and compares it with the sidecar *before* unpickling; it
refuses (``ModelError``) a file without a sidecar or whose hash differs, unless ``trust=True``.
The sidecar detects a corrupted, truncated or edited file; it does not make a file from an
untrusted source safe (anyone can write a matching sidecar, and unpickling runs code), so only
load bundles you or your colleagues made.
"""
from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import joblib

from featx.errors import ModelError
from featx.safeio import atomic_write, atomic_write_text, not_regular_reason, open_regular, regular_file

BUNDLE_FORMAT = 1


@dataclass
class ModelBundle:
    """What ``featx fit`` saves and ``featx predict`` loads.

    pipeline       fitted sklearn Pipeline taking the feature sets concatenated in ``feature_sets`` order
    class_names    class name per label index (the cache's ``class_names``)
    classes        label indices the pipeline knows (``pipeline.classes_``)
    feature_sets   names of the cache feature sets, in column order
    set_configs    the complete extractor config of each set (from ``FeatureTable.configs``)
    set_dims       number of columns of each set
    head           head name ("svm", "rf", ...), ``params`` the head's chosen hyper-parameters
    metrics        training-time evaluation (what ``metrics.json`` holds)
    featx_version, sklearn_version, created, format: provenance
    """

    pipeline: Any
    class_names: list[str]
    classes: list[int]
    feature_sets: list[str]
    set_configs: dict[str, dict]
    set_dims: dict[str, int]
    head: str
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    featx_version: str = ""
    sklearn_version: str = ""
    created: str = ""
    format: int = BUNDLE_FORMAT

    def summary(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "feature_sets": list(self.feature_sets),
            "class_names": list(self.class_names),
            "params": dict(self.params),
            "featx_version": self.featx_version,
            "created": self.created,
        }


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".sha256")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open_regular(path, "rb", what="model file", error=ModelError) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_bundle(bundle: ModelBundle, path: str | os.PathLike) -> Path:
    """Write ``bundle`` to ``path`` (atomically) and its ``.sha256`` sidecar. Returns the path."""
    import sklearn

    import featx

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    bundle.featx_version = bundle.featx_version or featx.__version__
    bundle.sklearn_version = bundle.sklearn_version or sklearn.__version__
    bundle.created = bundle.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    bundle.training.setdefault("python", platform.python_version())
    with atomic_write(path) as fh:  # temporary file, fsync, rename: never half a model
        joblib.dump(bundle, fh, compress=3)
    atomic_write_text(sidecar_path(path), f"{file_sha256(path)}  {path.name}\n")
    return path


def _model_file(path: str | os.PathLike) -> Path:
    if not_regular_reason(path) == "does not exist":
        raise ModelError("model file not found", path=path)
    return regular_file(path, "model file", ModelError)


def _read_sidecar(path: Path) -> str | None:
    side = sidecar_path(path)
    reason = not_regular_reason(side)
    if reason == "does not exist":
        return None
    if reason:
        raise ModelError(f"sidecar {side.name} {reason}", path=path)
    with open_regular(side, "rb", what="sidecar", error=ModelError) as fh:
        text = fh.read(4096).decode("utf-8", "replace").strip()
    digest = text.split()[0].lower() if text else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelError(f"sidecar {side.name} is not a sha256 digest", path=path)
    return digest


def verify_bundle(path: str | os.PathLike) -> str:
    """Check ``path`` against its sidecar; returns the digest or raises ModelError saying why."""
    path = _model_file(path)
    expected = _read_sidecar(path)
    if expected is None:
        raise ModelError(f"no {sidecar_path(path).name} sidecar next to the model, so its integrity "
                         "cannot be checked; pass --trust (trust=True) to load it anyway", path=path)
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(f"sha256 mismatch: the file changed since it was saved (expected "
                         f"{expected[:12]}…, got {actual[:12]}…); pass --trust (trust=True) to load "
                         "it anyway", path=path)
    return actual


def load_bundle(path: str | os.PathLike, trust: bool = False) -> ModelBundle:
    """Load a bundle written by :func:`save_bundle`.

    Unless ``trust`` is True the file's sha256 must match its sidecar (checked before unpickling).
    Raises :class:`featx.errors.ModelError` for a missing, unverifiable, unreadable or foreign file.
    """
    path = _model_file(path)
    if not trust:
        verify_bundle(path)
    try:
        obj = joblib.load(path)
    except Exception as exc:  # a truncated or foreign file: say so in one line
        raise ModelError(f"cannot read model file ({type(exc).__name__}: {exc})", path=path) from exc
    if not isinstance(obj, ModelBundle):
        raise ModelError(f"not a featx model bundle (found {type(obj).__name__})", path=path)
    if getattr(obj, "format", None) != BUNDLE_FORMAT:
        raise ModelError(f"bundle format {getattr(obj, 'format', None)} is not supported by this "
                         f"featx (reads format {BUNDLE_FORMAT})", path=path)
    return obj
