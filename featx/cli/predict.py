"""featx predict: apply a saved model to images (through the cache) or to a cache."""
from __future__ import annotations

import sys

import click

from featx.cli.common import WholeNumber, is_cache

PREDICT_EPILOG = """\b
Examples:
  featx predict svm.joblib new_images/ -o predictions.csv
  featx predict svm.joblib test.h5 -o predictions.csv   (features already in a cache)
"""


@click.command("predict", epilog=PREDICT_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="CSV to write: one row per sample.")
@click.option("--cache", "cache", type=click.Path(dir_okay=False), default=None, help="Cache to extract into (kept; reused next time). Default: a temporary file.")
@click.option("--trust", is_flag=True, help="Load the model even if its .sha256 sidecar is missing or does not match.")
@click.option("--device", default=None, help="Extraction device (auto|cpu|cuda...).")
@click.option("--batch-size", type=WholeNumber(1, "images per batch"), default=None, help="Extraction batch size (default: the model's).")
@click.option("--workers", type=WholeNumber(0, "processes; 0 decodes in the main process"), default=None, help="Decoding worker processes.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--force", is_flag=True, help="Overwrite an existing output of another kind (never an input).")
def predict_cmd(model, sources, output, cache, trust, device, batch_size, workers, quiet, force):
    """Predict with MODEL on SOURCES: image folders/files/npz/DICOM/manifests (features are
    extracted with the model's extractor settings), or a featx cache (.h5)."""
    from featx.errors import FeatxError
    from featx.fit import predict
    from featx.ood import ood_summary
    from featx.safeio import check_output

    check_output(output, [model, *sources, *([cache] if cache else [])], kind="csv", force=force)
    if cache:
        check_output(cache, [model, *sources], kind="cache", force=force)

    caches = [s for s in sources if is_cache(s)]
    if caches:
        if len(sources) > 1 or cache:
            raise FeatxError("give either one cache or image sources (with --cache to keep their features)")
        df = predict(model, cache=caches[0], out=output, trust=trust)
    else:
        opts = {k: v for k, v in dict(device=device, batch_size=batch_size, workers=workers).items() if v is not None}
        opts["progress"] = not quiet and sys.stderr.isatty()
        df = predict(model, list(sources), cache=cache, out=output, trust=trust, extract_options=opts)
    failed = int((df["predicted_index"] < 0).sum())
    click.echo(f"{len(df)} rows ({failed} without a prediction) -> {output}")
    summary = df.attrs.get("summary") or {}
    if summary.get("accuracy") is not None:
        click.echo(f"accuracy {summary['accuracy']:.3f} on the {summary['n_labelled']} labelled rows "
                   "(true and predicted classes compared by name)")
    if summary.get("ood_scored"):
        click.echo(ood_summary(df["ood"], summary["n_predicted"]))
    elif summary.get("n_predicted"):
        click.echo("note: this model has no out-of-distribution detector (fitted before featx stored one); "
                   "re-fit it to get ood flags", err=True)
    for note in df.attrs.get("notes", []):
        click.echo(f"note: {note}", err=True)
