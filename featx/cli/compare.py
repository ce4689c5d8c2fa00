"""featx compare: every feature-set choice x head on the same rows and folds, as a leaderboard."""
from __future__ import annotations

import click

from featx.cli.common import WholeNumber, require_cache, split_list
from featx.cli.fit import JOBS, common_options, fit_kwargs, start_loading

COMPARE_EPILOG = """\b
Examples:
  featx compare breast.h5 --features efficientnet_lite0,hog,efficientnet_lite0+hog -o board.csv
  featx compare breast.h5 --features efficientnet_lite0,efficientnet_lite2 --heads svm,logreg --ensemble -o board.csv
"""


@click.command("compare", epilog=COMPARE_EPILOG)
@click.argument("cache", type=click.Path(exists=True))
@click.option("--features", "features", multiple=True, required=True, help="Choices: A,B,A+B (a '+' fuses sets into one model).")
@click.option("--heads", "heads", multiple=True, default=("svm,rf,xgboost,elm,logreg",), show_default=True, help="Heads to try, comma-separated.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="leaderboard.csv (a .md and a .png are written beside it).")
@click.option("--jobs", "n_jobs", type=JOBS, default=-1, show_default=True, help="Runs in parallel (-1: all cores).")
@click.option("--ensemble", is_flag=True, help="Add a row: the greedy-selected ensemble of all these runs (selected on val / out-of-fold, never test).")
@click.option("--rounds", type=WholeNumber(1, "selection rounds"), default=50, show_default=True, help="--ensemble: greedy selection rounds.")
@common_options
def compare_cmd(cache, features, heads, output, n_jobs, ensemble, rounds, quiet, force, **kw):
    """Compare heads and feature sets of CACHE on the same rows and folds."""
    from featx.safeio import check_output

    require_cache(cache)
    check_output(output, [cache], kind="csv", force=force)
    from featx.errors import FeatxError
    from featx.heads.zoo import check_head_name

    try:
        head_names = [check_head_name(h) for h in split_list(heads)]
    except FeatxError as e:
        raise click.BadParameter(str(e), param_hint="'--heads'") from None
    progress = start_loading(cache, quiet)
    try:
        from featx.fit import compare

        res = compare(cache, split_list(features), head_names, out=output, n_jobs=n_jobs, **fit_kwargs(**kw),
                      progress=progress, ensemble=ensemble, ensemble_options={"rounds": rounds})
    finally:
        progress.close()
    board = res.leaderboard
    best = board.iloc[0]
    click.echo(f"{len(board)} runs in {res.seconds:.1f} s; best: {best['features']} / {best['head']} "
               f"AUC {best['auc']:.3f} ACC {best['accuracy']:.3f} -> {output}")
    for f in board.attrs.get("failures", []):
        click.echo(f"note: failed: {f}", err=True)
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
