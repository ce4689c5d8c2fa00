"""featx fit: train a head on cached features, evaluate it, save the model bundle."""
from __future__ import annotations

import json

import click

from featx.cli.common import (FiniteNumber, PcaAmount, RegistryChoice, SuggestChoice, WholeNumber, require_cache,
                              require_labels, split_list)
from featx.cli.progress import make_progress
from featx.heads.zoo import HEADS, check_head_params

JOBS = WholeNumber(1, also={-1: "all cores"})

FIT_EPILOG = """\b
Examples:
  featx fit breast.h5 --features efficientnet_lite0,efficientnet_lite2 -o ens.joblib --report report/  (ensemble)
  featx fit chest.h5 --features efficientnet_lite0,hog --head logreg --param C=0.1 -o lr.joblib
"""


def parse_params(values) -> dict:
    """--param C=3 --param gamma=scale -> {"C": 3, "gamma": "scale"} (values parsed as JSON when they can be)."""
    out = {}
    for item in values or ():
        if "=" not in item:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="'--param'")
        key, val = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val.strip()
    return out


def checked_params(head: str, values) -> dict:
    """Parse --param and check every value against the head's declared types and ranges."""
    from featx.errors import FeatxError

    params = parse_params(values)
    if not params:  # nothing to check: do not import sklearn before "loading CACHE" shows
        return params
    try:
        check_head_params(head, params)
    except FeatxError as e:
        raise click.BadParameter(str(e), param_hint="'--param'") from None
    return params


def checked_heads(text: str) -> list[str]:
    """--heads svm,logreg -> canonical head names; BadParameter naming --heads otherwise."""
    from featx.errors import FeatxError
    from featx.heads.zoo import check_head_name

    try:
        return [check_head_name(h) for h in split_list([text])]
    except FeatxError as e:
        raise click.BadParameter(str(e), param_hint="'--heads'") from None


def _ci(block, key):
    lo, hi = (block.get("ci95") or {}).get(key, [None, None])
    return f" ({lo:.3f}-{hi:.3f})" if lo is not None else ""


def summary_line(result) -> str:
    m = result.primary
    where = "test" if result.evaluation.name == "test" else f"{m.get('n_splits')}-fold CV"
    auc = "n/a" if m.get("auc") is None else f"{m['auc']:.3f}{_ci(m, 'auc')}"
    graded = f" QWK {m['qwk']:.3f}{_ci(m, 'qwk')} MAE {m['mae_grade']:.3f}" if m.get("qwk") is not None else ""
    if result.head == "ensemble":
        members = ", ".join(f"{e['weight']:.2f} {e['features']}/{e['head']}" for e in result.best_params["members"])
    else:
        members = json.dumps(result.best_params, sort_keys=True, default=str)
    return (f"{result.head} on {'+'.join(result.feature_sets)}: {where} ACC {m['accuracy']:.3f}{_ci(m, 'accuracy')} "
            f"AUC {auc} balanced ACC {m['balanced_accuracy']:.3f}{graded} [{members}]")


def common_options(fn):
    """Options fit and compare share."""
    opts = [
        click.option("--cv", "cv", type=WholeNumber(2, "folds: cross-validation needs at least 2"), default=5, show_default=True, help="Folds for CV (evaluation without a test split, and tuning without a val split); at least 2."),
        click.option("--search", type=SuggestChoice(["grid", "random", "none"]), default="grid", show_default=True, help="Hyper-parameter search over the head's default space."),
        click.option("--n-iter", type=WholeNumber(1, "candidates"), default=20, show_default=True, help="Candidates for --search random."),
        click.option("--pca", type=PcaAmount(), default=None, help="PCA inside the pipeline: components (128; clipped to the data) or variance fraction in (0, 1) (0.95)."),
        click.option("--select-k", type=WholeNumber(1, "features to keep"), default=None, help="Keep the K features with the highest ANOVA F (training rows only)."),
        click.option("--variance-threshold", type=FiniteNumber(0.0, meaning="a feature variance"), default=0.0, show_default=True, help="Per set, drop features whose training variance is <= this, before standardization (0 drops constant columns)."),
        click.option("--fusion-weights", type=SuggestChoice(["equal", "none"]), default="equal", show_default=True, help="equal: each fused set carries the same total variance; none: plain concatenation."),
        click.option("--class-weight", type=SuggestChoice(["balanced", "none"]), default="none", show_default=True, help="Reweight classes (imbalanced data)."),
        click.option("--scoring", type=RegistryChoice("featx.fit:SCORINGS", default="auc"), default="auc", show_default=True, help="What the search maximizes."),
        click.option("--protocol", type=SuggestChoice(["auto", "split", "cv"]), default="auto", show_default=True, help="auto: the cache's train/val/test split if it has one, else (grouped) CV."),
        click.option("--refit-on", type=SuggestChoice(["train+val", "train"]), default="train+val", show_default=True, help="Rows the tuned model is refitted on before the test split (split protocol)."),
        click.option("--bootstrap", "n_boot", type=WholeNumber(0, "resamples; 0 = no CIs"), default=1000, show_default=True, help="Bootstrap resamples for the 95% CIs (0: none)."),
        click.option("--seed", type=WholeNumber(0), default=0, show_default=True),
        click.option("--drop-nonfinite", is_flag=True, help="Drop rows with NaN/Inf features instead of stopping."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display."),
        click.option("--force", is_flag=True, help="Overwrite an existing output of another kind (never an input)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def fit_kwargs(cv, search, n_iter, pca, select_k, variance_threshold, fusion_weights, class_weight, scoring,
               protocol, refit_on, n_boot, seed, drop_nonfinite) -> dict:
    return dict(cv=cv, search=search, n_iter=n_iter, pca=pca, select_k=select_k,
                variance_threshold=variance_threshold, fusion_weights=fusion_weights,
                class_weight=None if class_weight == "none" else class_weight, scoring=scoring,
                protocol=protocol, refit_on=refit_on, n_boot=n_boot, seed=seed, drop_nonfinite=drop_nonfinite)


def start_loading(cache: str, quiet: bool):
    """Check CACHE is a labelled featx cache, then show "loading CACHE" at once (before the slow
    imports and the read), and return the progress display to hand to the library."""
    require_cache(cache)
    require_labels(cache)
    progress = make_progress(quiet)
    progress.start(0, f"loading {cache}")
    return progress


@click.command("fit", epilog=FIT_EPILOG)
@click.argument("cache", type=click.Path(exists=True))
@click.option("--features", "features", multiple=True, required=True, help="Feature set(s) to fuse: a,b (see `featx info`).")
@click.option("--head", type=SuggestChoice(HEADS + ("ensemble",)), default="ensemble", show_default=True, help="A head, or ensemble: greedy ensemble selection over --heads x --choices (tuned and selected on train/val only).")
@click.option("--heads", "ensemble_heads", default="svm,logreg,xgboost,elm", show_default=True, help="--head ensemble: candidate heads, comma-separated.")
@click.option("--choices", default=None, help="--head ensemble: feature choices 'A;A+B;...' (default: each set alone and all fused).")
@click.option("--rounds", type=WholeNumber(1, "selection rounds"), default=50, show_default=True, help="--head ensemble: greedy selection rounds (members picked with replacement).")
@click.option("--select-on", type=SuggestChoice(["auto", "val", "oof"]), default="auto", show_default=True, help="--head ensemble: rows the selection scores: val, or out-of-fold over train+val (oof; auto = oof).")
@click.option("--decision", type=SuggestChoice(["argmax", "accuracy", "balanced_accuracy"]), default="argmax", show_default=True, help="--head ensemble, two classes: argmax, or the probability threshold maximizing accuracy / balanced accuracy on the selection rows (saved in the model).")
@click.option("--ordinal/--nominal", "ordinal", default=None, help="Graded labels: ordinal head (Frank & Hall). Default: ordinal when the class names are ordered integers (3 or more).")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="Model bundle to write (MODEL.joblib, plus MODEL.joblib.sha256).")
@click.option("--report", "report", type=click.Path(file_okay=False), default=None, help="Write metrics.json, report.md/.html and plots here.")
@click.option("--param", "params", multiple=True, help="Fix a head parameter: --param C=3 (repeatable; removed from the search).")
@click.option("--jobs", "n_jobs", type=JOBS, default=-1, show_default=True, help="Parallel search candidates (-1: all cores).")
@common_options
@click.option("--engine", type=SuggestChoice(["local", "ray"]), default="local", show_default=True, help="ray: search/CV fits as Ray tasks ($RAY_ADDRESS or a local Ray); xgboost on large caches through Ray Train. Needs featx[ray].")
def fit_cmd(cache, features, head, ensemble_heads, choices, rounds, select_on, decision, ordinal, output, report, params, n_jobs,
            quiet, force, engine="local", **kw):
    """Fit a HEAD (default: an ensemble of heads) on feature sets of CACHE, evaluate it and save the model."""
    from featx.safeio import check_output

    require_cache(cache)  # a folder or an image given as CACHE is the likelier mistake: say that first
    check_output(output, [cache], kind="model", force=force)
    ensemble = head == "ensemble"
    if ensemble:
        for flag, bad in (("--param", params), ("--engine ray", engine == "ray")):
            if bad:
                raise click.UsageError(f"{flag} does not apply to --head ensemble (pick a single --head)")
        ensemble_heads = checked_heads(ensemble_heads)
    else:
        params = checked_params(head, params)
    if engine == "ray":
        from featx.engines import require_ray
        require_ray()  # before anything is shown or loaded
    progress = start_loading(cache, quiet)
    try:
        if engine == "ray":
            from featx.engines.ray_fit import fit_ray as fit
        else:
            from featx.fit import fit
        if ensemble:
            extra = dict(heads=ensemble_heads, choices=choices, rounds=rounds, select_on=select_on,
                         decision=decision, ordinal=ordinal)
        else:
            extra = {} if engine == "ray" else {"ordinal": ordinal}
        result = fit(cache, split_list(features), head, params=params, n_jobs=n_jobs, **fit_kwargs(**kw),
                     progress=progress, **extra)
    finally:
        progress.close()
    path = result.save(output)
    click.echo(summary_line(result) + f" -> {path}")
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if report:
        files = result.write_report(report)
        click.echo(f"report: {files['html']}")
