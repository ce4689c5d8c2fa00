"""featx robustness: a saved model under image corruptions and adversarial perturbations."""
from __future__ import annotations

import click

from featx.cli.common import WholeNumber, split_list

ROBUSTNESS_EPILOG = """\b
Examples:
  featx robustness svm.skops breastmnist.npz --split test --report robust/
  featx robustness lr.skops chest_test/ --corruptions gaussian_noise,contrast --no-adversarial --report robust/
"""


@click.command("robustness", epilog=ROBUSTNESS_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("--report", "report", required=True, type=click.Path(file_okay=False), help="Folder for robustness.json, plots and summary.md.")
@click.option("--corruptions", default=None, help="Comma-separated subset (default: all).")
@click.option("--split", default=None, help="Use only this split of the sources (e.g. test).")
@click.option("--max-images", type=WholeNumber(1, "images"), default=None, help="A random subset of this many images (cost grows with 46x the images).")
@click.option("--eps", "eps", default="1,2,4", show_default=True, help="Adversarial L-inf budgets in 1/255 pixel steps, comma-separated.")
@click.option("--no-adversarial", is_flag=True, help="Skip FGSM/PGD.")
@click.option("--trust", is_flag=True, help="Load the model even if its .sha256 sidecar is missing or does not match.")
@click.option("--seed", type=WholeNumber(0, "a seed"), default=0, show_default=True)
def robustness_cmd(model, sources, report, corruptions, split, max_images, eps, no_adversarial, trust, seed):
    """Evaluate MODEL on the labelled images of SOURCES, clean and corrupted (five severities each),
    and under FGSM/PGD for heads with an exact torch mirror."""
    from featx.errors import FeatxError
    from featx.robustness import evaluate_robustness, write_robustness_report

    try:
        epsilons = [float(e) / 255 for e in split_list([eps])]
    except ValueError:
        raise click.BadParameter(f"{eps!r} is not a comma-separated list of numbers", param_hint="'--eps'") from None
    if any(e <= 0 for e in epsilons):
        raise FeatxError("--eps budgets must be positive")
    res = evaluate_robustness(model, list(sources), corruptions=split_list([corruptions]) if corruptions else None,
                              split=split, max_images=max_images, epsilons=epsilons,
                              adversarial=not no_adversarial, trust=trust, seed=seed)
    out = write_robustness_report(res, report)
    clean = res["clean"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    click.echo(f"{res['n_images']} images; clean AUC {fmt(clean['auc'])}, accuracy {fmt(clean['accuracy'])}; "
               f"{len(res['corruptions'])} corruptions -> {out}/robustness.json")
    for note in res["notes"]:
        click.echo(f"note: {note}", err=True)
