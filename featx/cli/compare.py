"""featx compare: every feature-set choice x head on the same rows and folds, as a leaderboard."""
from __future__ import annotations

import click

from featx.cli.common import handle_errors, split_list
from featx.cli.fit import common_options, fit_kwargs


@click.command("compare")
@click.argument("cache", type=click.Path(exists=True, dir_okay=False))
@click.option("--features", "features", multiple=True, required=True, help="Choices: A,B,A+B (a '+' fuses sets into one model).")
@click.option("--heads", "heads", multiple=True, default=("svm,rf,xgboost,elm,logreg",), show_default=True, help="Heads to try, comma-separated.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="leaderboard.csv (a .md and a .png are written beside it).")
@click.option("--jobs", "n_jobs", type=int, default=-1, show_default=True, help="Runs in parallel (-1: all cores).")
@common_options
@handle_errors
def compare_cmd(cache, features, heads, output, n_jobs, **kw):
    """Compare heads and feature sets of CACHE on the same rows and folds."""
    from featx.fit import compare

    res = compare(cache, split_list(features), split_list(heads), out=output, n_jobs=n_jobs, **fit_kwargs(**kw))
    board = res.leaderboard
    best = board.iloc[0]
    click.echo(f"{len(board)} runs in {res.seconds:.1f} s; best: {best['features']} / {best['head']} "
               f"AUC {best['auc']:.3f} ACC {best['accuracy']:.3f} -> {output}")
    for f in board.attrs.get("failures", []):
        click.echo(f"note: failed: {f}", err=True)
