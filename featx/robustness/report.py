"""The robustness report: ``robustness.json``, one degradation plot per corruption, ``summary.md``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from featx.jsonutil import to_jsonable
from featx.safeio import atomic_write_text


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def summary_markdown(result: dict[str, Any]) -> str:
    """The result as a Markdown table: AUC / accuracy / OOD rate per corruption and severity."""
    clean = result["clean"]
    lines = ["# Robustness", "",
             f"{result['n_images']} images; clean AUC {_fmt(clean['auc'])}, accuracy {_fmt(clean['accuracy'])}, "
             f"flagged out-of-distribution {_fmt(clean['ood_rate'])}.", "",
             "AUC / accuracy / OOD-flag rate at severities 1-5:", "",
             "| corruption | " + " | ".join(f"severity {s}" for s in range(1, 6)) + " |",
             "|---|" + "---|" * 5]
    for name, sevs in result["corruptions"].items():
        cells = [f"{_fmt(m['auc'])} / {_fmt(m['accuracy'])} / {_fmt(m['ood_rate'])}" for m in sevs.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("adversarial"):
        lines += ["", "Adversarial (worse of FGSM and PGD, L-inf budget on the 0..1 pixel scale):", "",
                  "| eps | AUC | accuracy |", "|---|---|---|"]
        for eps, m in result["adversarial"].items():
            lines.append(f"| {eps} | {_fmt(m['auc'])} | {_fmt(m['accuracy'])} |")
    for note in result.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def plot_degradation(result: dict[str, Any], name: str, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sevs = result["corruptions"][name]
    xs = [0] + [int(s) for s in sevs]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for key, label in (("auc", "AUC"), ("accuracy", "accuracy"), ("ood_rate", "OOD-flag rate")):
        ys = [result["clean"][key]] + [m[key] for m in sevs.values()]
        ax.plot(xs, [float("nan") if v is None else v for v in ys], marker="o", label=label)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylim(0, 1.02)
    ax.set_title(name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_robustness_report(result: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``robustness.json``, ``<corruption>.png`` per corruption and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "robustness.json", json.dumps(to_jsonable(result), indent=2) + "\n")
    for name in result["corruptions"]:
        plot_degradation(result, name, out / f"{name}.png")
    atomic_write_text(out / "summary.md", summary_markdown(result))
    return out
