"""featx explain: where a saved model looks on images, and whether the maps are faithful."""
from __future__ import annotations

import click

from featx.cli.common import WholeNumber

EXPLAIN_EPILOG = """\b
Examples:
  featx explain svm.joblib new_images/ -o explain/            (input x gradient, or occlusion for trees/knn)
  featx explain svm.joblib scans/ -o explain/ --method gradcam --target malignant --limit 20
Writes maps/<id>.npy (float32, input resolution), overlays/<id>.png, index.html (self-contained),
per_set.json (how much of the decision each feature set carries) and faithfulness.json
(deletion AUC vs random maps: salient pixels replaced first by the image's mean intensity, the
target probability normalised per image between the original and the fully deleted image, sampled
densely over the first eighth; images whose score does not fall when fully deleted are skipped and
counted; rank correlation with maps of a randomised network).
"""


@click.command("explain", epilog=EXPLAIN_EPILOG)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder to write maps, overlays and index.html to.")
@click.option("--method", type=click.Choice(["auto", "input-x-gradient", "gradcam", "ig", "occlusion"]),
              default="auto", show_default=True,
              help="auto: input x gradient (offset from the image's mean intensity) when the head has an exact "
              "torch mirror (logreg, svm, elm), occlusion otherwise.")
@click.option("--target", default="predicted", show_default=True, help="Class to explain: 'predicted' or a class name.")
@click.option("--limit", type=WholeNumber(1, "images"), default=None, help="Explain at most this many images.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None, help="Only the samples the sources mark with this split.")
@click.option("--no-faithfulness", is_flag=True, help="Skip the deletion metric and the randomisation check (faster).")
@click.option("--trust", is_flag=True, help="Load the model even if its .sha256 sidecar is missing or does not match.")
def explain_cmd(model, sources, output, method, target, limit, split, no_faithfulness, trust):
    """Saliency maps of MODEL's predictions on SOURCES (image folders, files, npz, DICOM, manifests)."""
    from featx.explain import explain

    result = explain(model, list(sources), output, method=method, target=target, limit=limit, trust=trust,
                     faithfulness=not no_faithfulness, split=split)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for path, reason in result.failures:
        click.echo(f"featx: warning: {path}: {reason}", err=True)
    click.echo(result.line())
