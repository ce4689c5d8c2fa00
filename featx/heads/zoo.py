"""The classical heads featx trains on cached features: one :class:`HeadSpec` per head.

``HEAD_SPECS`` is the registry: each spec names the estimator class, featx's defaults, the grid
``featx fit --search grid`` explores, the distributions of ``--search random``, whether saved
models wrap it in :class:`CalibratedHead`, and whether it takes ``class_weight``. The functions
below (``make_head``, ``default_grid``, ...) read it; so does the CLI (``--head`` choices, and
``--param`` checked against the estimator's ``_parameter_constraints`` before any data is read).
Parameter names are the head's own (no ``head__`` prefix).

Heads:
    svm      sklearn SVC, RBF kernel. No ``probability=True`` (deprecated in sklearn 1.9): scores
             come from ``decision_function``; wrap with :class:`CalibratedHead` for probabilities.
    rf       RandomForestClassifier.
    xgboost  :class:`XGBoostHead`, a thin sklearn wrapper over ``xgboost.XGBClassifier`` that
             accepts ``class_weight`` (turned into sample weights) and any label values.
    elm      :class:`ELMHead`: ``featx.heads.elm.ELMClassifier`` (extreme learning machine) with
             ``class_weight``.
    logreg   LogisticRegression (lbfgs, L2).
    knn      KNeighborsClassifier (ignores ``class_weight``: it has no notion of one).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from featx.errors import FeatxError

# Light on purpose: the CLI reads HEADS while parsing options, before it shows anything. sklearn,
# scipy and the wrappers are imported when a head is built or checked.
_WRAPPERS = ("XGBoostHead", "CalibratedHead", "ELMHead")


def __getattr__(name):  # zoo.XGBoostHead etc., imported on first use
    if name in _WRAPPERS:
        from featx.heads import wrappers
        return getattr(wrappers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _wrapper(name):
    return lambda: __getattr__(name)


def _stats():
    import scipy.stats
    return scipy.stats

__all__ = ["HeadSpec", "HEAD_SPECS", "HEADS", "CALIBRATED_HEADS", "head_spec", "check_head_name",
           "check_head_params", "make_head", "default_grid", "default_distributions", "needs_calibration",
           "XGBoostHead", "CalibratedHead", "ELMHead"]


@dataclass(frozen=True)
class HeadSpec:
    """What featx knows about one head.

    ``estimator_class()`` returns the class (imported on first use); ``defaults(class_weight, seed)``
    featx's constructor arguments, which ``make_head`` overrides with the user's parameters.
    """

    name: str
    estimator_class: Callable[[], type]
    defaults: Callable[[Any, Any], dict]
    grid: dict[str, list]
    distributions: Callable[[], dict]
    needs_calibration: bool = False
    supports_class_weight: bool = True
    aliases: tuple[str, ...] = ()
    summary: str = ""

    def parameter_constraints(self) -> dict[str, list]:
        """sklearn's ``_parameter_constraints`` of the estimator class (parameter -> accepted)."""
        return dict(getattr(self.estimator_class(), "_parameter_constraints", {}))

    def parameter_names(self) -> list[str]:
        return sorted(self.estimator_class()().get_params(deep=False))


def _svc():
    from sklearn.svm import SVC
    return SVC


def _rf():
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier


def _logreg():
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression


def _knn():
    from sklearn.neighbors import KNeighborsClassifier
    return KNeighborsClassifier


HEAD_SPECS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec(
        "svm", _svc,
        lambda cw, seed: dict(kernel="rbf", C=1.0, gamma="scale", class_weight=cw, random_state=seed, cache_size=500),
        grid={"C": [0.3, 1.0, 3.0, 10.0, 30.0], "gamma": ["scale"]},
        distributions=lambda: {"C": _stats().loguniform(0.1, 100.0)},
        needs_calibration=True, aliases=("svc",), summary="RBF support vector machine"),
    HeadSpec(
        "rf", _rf,
        lambda cw, seed: dict(n_estimators=200, max_features="sqrt", min_samples_leaf=1,
                              class_weight="balanced_subsample" if cw == "balanced" else cw,
                              random_state=seed, n_jobs=1),
        grid={"max_features": ["sqrt", 0.05], "min_samples_leaf": [1, 3]},
        distributions=lambda: {"max_features": _stats().uniform(0.01, 0.3), "min_samples_leaf": _stats().randint(1, 6)},
        aliases=("randomforest",), summary="random forest"),
    HeadSpec(
        "xgboost", _wrapper("XGBoostHead"),
        lambda cw, seed: dict(class_weight=cw, random_state=seed),
        grid={"max_depth": [2, 4], "colsample_bytree": [0.1, 0.3]},
        distributions=lambda: {"max_depth": _stats().randint(2, 7), "learning_rate": _stats().loguniform(0.02, 0.3),
                               "colsample_bytree": _stats().uniform(0.1, 0.7),
                               "min_child_weight": _stats().loguniform(0.5, 10)},
        aliases=("xgb",), summary="gradient-boosted trees"),
    # The head sees per-feature standardized inputs, and deep features are strongly correlated, so
    # unit-scale random projections saturate tanh; weight_scale 0.25 keeps the hidden layer in its
    # useful range (BreastMNIST Lite0 test AUC 0.852 -> 0.885).
    HeadSpec(
        "elm", _wrapper("ELMHead"),
        lambda cw, seed: dict(n_hidden=1000, alpha=100.0, weight_scale=0.25, class_weight=cw, random_state=seed),
        grid={"n_hidden": [1000, 2000], "alpha": [1.0, 10.0, 100.0, 1000.0]},
        distributions=lambda: {"n_hidden": _stats().randint(256, 3001), "alpha": _stats().loguniform(1e-2, 1e3)},
        needs_calibration=True, summary="extreme learning machine"),
    HeadSpec(
        "logreg", _logreg,
        lambda cw, seed: dict(C=0.1, max_iter=3000, class_weight=cw, random_state=seed),
        grid={"C": [0.001, 0.01, 0.1, 1.0]},
        distributions=lambda: {"C": _stats().loguniform(1e-4, 10.0)},
        aliases=("lr", "logistic"), summary="L2 logistic regression"),
    HeadSpec(
        "knn", _knn,
        lambda cw, seed: dict(n_neighbors=11, weights="distance"),
        grid={"n_neighbors": [5, 11, 21], "weights": ["uniform", "distance"]},
        distributions=lambda: {"n_neighbors": _stats().randint(3, 41), "weights": ["uniform", "distance"]},
        supports_class_weight=False, summary="k nearest neighbours"),
)}

HEADS: tuple[str, ...] = tuple(HEAD_SPECS)
CALIBRATED_HEADS: tuple[str, ...] = tuple(n for n, s in HEAD_SPECS.items() if s.needs_calibration)
_ALIASES = {alias: spec.name for spec in HEAD_SPECS.values() for alias in spec.aliases}


def check_head_name(name: str) -> str:
    """The registry name of head ``name`` (case-insensitive; aliases such as "xgb" accepted).

    Raises :class:`FeatxError` naming the accepted heads, and the closest one if there is one.
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in HEAD_SPECS:
        close = difflib.get_close_matches(key, list(HEAD_SPECS) + list(_ALIASES), n=1)
        hint = f"did you mean {_ALIASES.get(close[0], close[0])!r}? " if close else ""
        raise FeatxError(f"unknown head {name!r}; {hint}choose from {', '.join(HEADS)}")
    return key




def head_spec(name: str) -> HeadSpec:
    return HEAD_SPECS[check_head_name(name)]


def check_head_params(name: str, params: dict[str, Any]) -> None:
    """Check ``params`` (parameter -> value) against head ``name``'s parameters and their declared
    types and ranges, without building or fitting anything. Raises :class:`FeatxError` naming the
    parameter, the value and what is accepted."""
    spec = head_spec(name)
    valid = spec.parameter_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        lower = {v.lower(): v for v in valid}
        close = [difflib.get_close_matches(u.lower(), list(lower), n=1, cutoff=0.5) for u in unknown]
        hints = "".join(f" (did you mean {lower[c[0]]}?)" for c in close if c)
        raise FeatxError(f"head {spec.name!r} has no parameter(s) {', '.join(unknown)}{hints}; "
                         f"valid: {', '.join(valid)}")
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    constraints = spec.parameter_constraints()
    for key, value in params.items():
        if key not in constraints:
            continue
        try:
            validate_parameter_constraints({key: constraints[key]}, {key: value},
                                           caller_name=spec.estimator_class().__name__)
        except InvalidParameterError as e:
            reason = str(e).rstrip(".").replace(". Got ", "; got ")
            reason = reason[:1].lower() + reason[1:]
            raise FeatxError(f"{key}={value!r} is not valid for head {spec.name!r}: {reason}") from None


def make_head(name: str, *, class_weight: Any = None, seed: int | None = 0, **params):
    """An unfitted classifier for head ``name`` with featx's defaults, overridden by ``params``.

    ``class_weight`` ("balanced", a dict or None) and ``seed`` are passed to heads that take them.
    Unknown parameter names raise :class:`featx.errors.FeatxError`.
    """
    spec = head_spec(name)
    base = spec.defaults(class_weight, seed)
    base.update(params)
    valid = set(spec.parameter_names())
    unknown = sorted(set(base) - valid)
    if unknown:
        raise FeatxError(f"head {spec.name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(valid))}")
    return spec.estimator_class()(**base)


def default_grid(name: str) -> dict[str, list]:
    """The parameter grid ``--search grid`` explores for head ``name``.

    Sized to stay cheap on two CPU cores (≤ 16 candidates): the aim is a sensible default, not
    an exhaustive search. Keys are the head's own parameter names.
    """
    return {k: list(v) for k, v in head_spec(name).grid.items()}


def default_distributions(name: str) -> dict[str, Any]:
    """scipy.stats distributions (or lists) for ``--search random`` on head ``name``."""
    return head_spec(name).distributions()


def needs_calibration(name: str) -> bool:
    """True for heads whose outputs are margins, not probabilities: SVC (no ``predict_proba``
    without the deprecated ``probability=True``) and the ELM (a softmax of least-squares
    outputs). featx wraps them in :class:`CalibratedHead` in saved models, so ``predict``
    reports calibrated per-class probabilities."""
    return head_spec(name).needs_calibration
