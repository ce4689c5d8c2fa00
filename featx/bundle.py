"""Model bundles: a fitted pipeline with everything needed to use it on new images.

A bundle is one file, written under the name given (``-o``), plus a sidecar ``<name>.sha256`` in
``sha256sum`` format (``<hex>  <name>``). Two file formats, told apart by content, not by name:

* **skops** (the default, written by :func:`save_bundle`): a zip archive (``skops.io``) that
  describes every object by type name and holds arrays as ``.npy``. Loading builds only types on an
  explicit list, :data:`TRUSTED_TYPES` (skops' own list of scikit-learn/numpy/scipy types, plus the
  featx and xgboost classes named here); a file naming any other type is refused before anything
  is built, naming the type. So a bundle from someone else cannot run code when loaded. XGBoost
  boosters travel in xgboost's own serialization (its UBJSON model buffer), not as pickles.
* **joblib** (featx before safe bundles; ``save_bundle(..., file_format="joblib")``): a pickle. Unpickling
  can run any code, so such a file loads only with ``trust=True`` (``--trust``), and then only if
  its sidecar (when present) matches; :func:`resave_hint` says how to convert it.

:func:`load_bundle` hashes the file and compares it with the sidecar *before* reading it; it
refuses (``ModelError``) a file without a sidecar or whose hash differs, unless ``trust=True``.
The sidecar detects a corrupted, truncated or edited file; the type list is what makes a skops
bundle safe, whatever its sidecar says.
"""
from __future__ import annotations

import hashlib
import os
import platform
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from featx.errors import ModelError
from featx.safeio import atomic_write, atomic_write_text, not_regular_reason, open_regular, regular_file

BUNDLE_FORMAT = 1
FILE_FORMATS = ("skops", "joblib")
ZIP_MAGIC = b"PK\x03\x04"

#: Types a skops bundle may hold beyond skops' own trusted list (scikit-learn estimators, numpy,
#: scipy). Named one by one: a prefix ("sklearn.") would also admit functions that run code.
TRUSTED_TYPES: tuple[str, ...] = (
    # featx
    "featx.bundle.ModelBundle",
    "featx.fit.pipeline.Reduce",
    "featx.heads.wrappers.CalibratedHead",
    "featx.heads.wrappers.XGBoostHead",
    "featx.heads.wrappers.ELMHead",
    "featx.heads.elm.ELMClassifier",
    "featx.heads.elm.ELMRegressor",
    "featx.heads.ordinal.OrdinalClassifier",
    "featx.fit.ensemble.EnsembleClassifier",
    "featx.ood.OODDetector",
    "featx.engines.ray_fit.RayXGBoostHead",
    # xgboost: the sklearn wrapper and the booster, whose state is xgboost's own model buffer
    "xgboost.sklearn.XGBClassifier",
    "xgboost.core.Booster",
    # scikit-learn internals that skops does not list (private helpers of public estimators)
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.utils._bunch.Bunch",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    *(f"sklearn.metrics._dist_metrics.{m}Distance{b}" for m in ("Euclidean", "Manhattan", "Minkowski", "Chebyshev")
      for b in ("64", "32")),
)


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
    ood            a fitted :class:`featx.ood.OODDetector` on the pipeline's features, or None
                   (bundles made before it)
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
    ood: Any = None

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


def save_bundle(bundle: ModelBundle, path: str | os.PathLike, *, file_format: str = "skops") -> Path:
    """Write ``bundle`` to ``path`` (atomically, under that exact name) and its ``.sha256`` sidecar.

    ``file_format``: "skops" (default; loads without running code) or "joblib" (a pickle, as
    featx wrote before; only for tools that need it). Returns the path."""
    import sklearn

    import featx

    if file_format not in FILE_FORMATS:
        raise ModelError(f"unknown bundle file format {file_format!r}; choose {' or '.join(FILE_FORMATS)}",
                         path=path)
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    bundle.featx_version = bundle.featx_version or featx.__version__
    bundle.sklearn_version = bundle.sklearn_version or sklearn.__version__
    bundle.created = bundle.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    bundle.training.setdefault("python", platform.python_version())
    with atomic_write(path) as fh:  # temporary file, fsync, rename: never half a model
        if file_format == "skops":
            import skops.io

            fh.write(skops.io.dumps(bundle, compression=zipfile.ZIP_DEFLATED, compresslevel=6))
        else:
            import joblib

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


def bundle_file_format(path: str | os.PathLike) -> str:
    """"skops" for a zip archive (the safe format), "joblib" for anything else (a pickle)."""
    with open_regular(_model_file(path), "rb", what="model file", error=ModelError) as fh:
        return "skops" if fh.read(4) == ZIP_MAGIC else "joblib"


def resave_hint(path: str | os.PathLike) -> str:
    """One line telling how to convert a pickle-based bundle into the safe format."""
    new = Path(path).with_suffix(".skops")
    return (f"{Path(path).name} is a pickle-based bundle (can run code when loaded); re-save it in the safe "
            f"format: python -c \"from featx.bundle import load_bundle, save_bundle; "
            f"save_bundle(load_bundle('{path}', trust=True), '{new}')\"")


def untrusted_types(path: str | os.PathLike, extra_trusted: Sequence[str] = ()) -> list[str]:
    """The types a skops bundle names that are neither skops' trusted types nor
    :data:`TRUSTED_TYPES` (nor ``extra_trusted``); empty for a bundle featx can load."""
    import skops.io

    allowed = set(TRUSTED_TYPES) | set(extra_trusted)
    try:
        found = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # not a skops archive (a foreign zip, a truncated file)
        raise ModelError(f"cannot read model file ({type(exc).__name__}: {exc})", path=path) from exc
    return sorted(t for t in found if t not in allowed)


def _load_skops(path: Path, extra_trusted: Sequence[str]) -> Any:
    import skops.io

    refused = untrusted_types(path, extra_trusted)
    if refused:
        raise ModelError(f"refusing to load: the bundle holds type {refused[0]}"
                         + (f" (and {len(refused) - 1} more untrusted)" if len(refused) > 1 else "")
                         + ", which featx does not trust (featx.bundle.TRUSTED_TYPES)", path=path)
    try:
        return skops.io.load(path, trusted=[*TRUSTED_TYPES, *extra_trusted])
    except Exception as exc:
        raise ModelError(f"cannot read model file ({type(exc).__name__}: {exc})", path=path) from exc


def load_bundle(path: str | os.PathLike, trust: bool = False, *, extra_trusted: Sequence[str] = ()) -> ModelBundle:
    """Load a bundle written by :func:`save_bundle`.

    Unless ``trust`` is True the file's sha256 must match its sidecar (checked before reading).
    A skops bundle is built only from trusted types (:data:`TRUSTED_TYPES`, ``extra_trusted``;
    ``trust`` does not widen that list). A pickle-based (joblib) bundle needs ``trust=True`` and,
    when it has a sidecar, a matching one. Raises :class:`featx.errors.ModelError` for a missing,
    unverifiable, unreadable, foreign or untrusted file.
    """
    path = _model_file(path)
    fmt = bundle_file_format(path)
    if fmt == "joblib":
        if not trust:
            raise ModelError("pickle-based (joblib) bundle: loading it can run code; load it only if you or a "
                             "colleague made it, with --trust (trust=True), and re-save it", path=path)
        if _read_sidecar(path) is not None:
            verify_bundle(path)  # a pickle edited since it was saved is never loaded
        import joblib

        try:
            obj = joblib.load(path)
        except Exception as exc:  # a truncated or foreign file: say so in one line
            raise ModelError(f"cannot read model file ({type(exc).__name__}: {exc})", path=path) from exc
    else:
        if not trust:
            verify_bundle(path)
        obj = _load_skops(path, extra_trusted)
    if not isinstance(obj, ModelBundle):
        raise ModelError(f"not a featx model bundle (found {type(obj).__name__})", path=path)
    if getattr(obj, "format", None) != BUNDLE_FORMAT:
        raise ModelError(f"bundle format {getattr(obj, 'format', None)} is not supported by this "
                         f"featx (reads format {BUNDLE_FORMAT})", path=path)
    return obj
