"""Reports: metrics.json, Markdown and HTML summaries, and PNG plots (matplotlib, Agg backend).

``write_fit_report(result, out_dir)`` writes, for one :class:`featx.fit.FitResult`::

    metrics.json        {"test": {...}} (data with a test split) or {"cv": {...}}, plus
                        "tuning", "protocol", "model" (and "notes")
    report.md           the same, readable
    report.html         self-contained page (tables, and the plots embedded as base64 PNG)
    roc.png             ROC curve(s) of the held-out scores (one-vs-rest per class if multi-class)
    pr.png              precision-recall curve(s)
    confusion.png       confusion matrix (counts and row-normalised)
    predictions.csv     the held-out rows, in the columns of `featx predict`'s CSV: id, path, split,
                        true_label, predicted_label, predicted_index, [fold], score_<class> per class
    per_set.json        (models on several feature sets, fitted from a cache) drop-set attribution of
                        each set on the evaluated rows (featx.explain.drop_set_attribution)

``write_leaderboard(board, out)`` writes a compare leaderboard as CSV, Markdown and PNG.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featx.csvutil import write_csv
from featx.jsonutil import to_jsonable


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(ci: dict | None, key: str) -> str:
    if not ci or key not in ci or ci[key][0] is None:
        return ""
    lo, hi = ci[key]
    return f"{lo:.3f}–{hi:.3f}"


def _curves(ev) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, positives, scores) for each curve to draw: one for binary, one per class
    otherwise (classes with both positives and negatives and finite scores)."""
    labels = ev.labels
    if len(labels) == 2:
        pos = labels[1]
        return [(ev.class_names[pos], ev.y_true == pos, ev.scores[:, pos])]
    out = []
    for k in labels:
        s = ev.scores[:, k]
        p = ev.y_true == k
        if np.isfinite(s).all() and 0 < p.sum() < p.size:
            out.append((ev.class_names[k], p, s))
    return out


def plot_roc(ev, path: str | os.PathLike, title: str = "") -> Path:
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pos, s in _curves(ev):
        fpr, tpr, _ = roc_curve(pos, s)
        ax.plot(fpr, tpr, lw=1.8, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           xlim=(0, 1), ylim=(0, 1.01), title=title or f"ROC ({ev.name})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_pr(ev, path: str | os.PathLike, title: str = "") -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, pos, s in _curves(ev):
        prec, rec, _ = precision_recall_curve(pos, s)
        ap = average_precision_score(pos, s)
        ax.plot(rec, prec, lw=1.8, label=f"{name} (AP {ap:.3f}, prevalence {pos.mean():.2f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01),
           title=title or f"Precision-recall ({ev.name})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: list[list[int]], class_names: list[str], path: str | os.PathLike,
                   title: str = "") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    k = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(axis=1, keepdims=True)
    size = max(4.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(np.nan_to_num(norm), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            frac = norm[i, j]
            ax.text(j, i, f"{cm[i, j]}\n{frac:.0%}" if np.isfinite(frac) else str(cm[i, j]),
                    ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(frac) and frac > 0.6 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def png_data_uri(path: str | os.PathLike) -> str:
    """A PNG file as a ``data:`` URI, so an HTML page carries its images inside."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _summary_rows(block: dict) -> list[tuple[str, str, str]]:
    ci = block.get("ci95", {})
    rows = [("accuracy", _fmt(block.get("accuracy")), _ci(ci, "accuracy")),
            ("balanced accuracy", _fmt(block.get("balanced_accuracy")), _ci(ci, "balanced_accuracy")),
            ("AUC" + (" (one-vs-rest macro)" if len(block["class_names"]) > 2 else ""),
             _fmt(block.get("auc")), _ci(ci, "auc")),
            ("F1 (macro)", _fmt(block.get("f1")), _ci(ci, "f1"))]
    return rows


def _class_rows(block: dict) -> list[list[str]]:
    ci = block.get("ci95", {}).get("per_class", {})
    out = []
    for name, m in block["per_class"].items():
        c = ci.get(name, {})
        out.append([name, str(m["support"]),
                    _fmt(m["sensitivity"]) + (f" ({_ci(c, 'sensitivity')})" if _ci(c, "sensitivity") else ""),
                    _fmt(m["specificity"]) + (f" ({_ci(c, 'specificity')})" if _ci(c, "specificity") else ""),
                    _fmt(m["precision"]), _fmt(m["f1"])])
    return out


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in [header] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _protocol_text(metrics: dict) -> str:
    p = metrics["protocol"]
    t = metrics.get("tuning", {})
    search = t.get("search", "none")
    if p["kind"] == "split":
        s = (f"The data's own split: trained on {p['n_train']} train rows, "
             f"hyper-parameters tuned on {t.get('on', p['tuning'])} ({search} search, "
             f"{t.get('candidates', 1)} candidates, scoring {t.get('scoring')}), refitted on "
             f"{p['refit_on']} ({p['n_refit']} rows), reported on the {p['n_test']} test rows.")
    else:
        s = (f"{'Grouped ' if p['grouped'] else ''}stratified {p['n_splits']}-fold cross-validation "
             f"over {p['n']} labelled rows" + (" (StratifiedGroupKFold: no group on both sides of a fold)"
                                               if p["grouped"] else "")
             + (f"; {search} search nested inside each training fold" if t.get("nested") else "")
             + ". Metrics are computed on the pooled out-of-fold predictions; the saved model is "
             "tuned and refitted on all labelled rows.")
    return s + " 95% CIs: percentile bootstrap of the evaluated rows (seeded)."


def per_set_attribution(result) -> tuple[dict | None, str]:
    """Drop-set attribution (:func:`featx.explain.drop_set_attribution`) of a fused model on the
    rows its metrics were computed on, and one sentence saying what it is or why it is missing.

    The rows' features are read back from the cache the model was fitted on (matched by sample
    id). Split protocol: the held-out test rows. CV: the pooled out-of-fold rows, which the saved
    model (refitted on all of them) has seen, so the attribution is in-sample there."""
    bundle = result.bundle
    if len(result.feature_sets) < 2:
        return None, ""
    if bundle is None:
        return None, "Per-set attribution: not computed (no final model was fitted)."
    cache = bundle.training.get("cache")
    if not cache or not Path(cache).is_file():
        return None, "Per-set attribution: not computed (the features were not read from a cache file)."
    from featx.explain import drop_set_attribution
    from featx.explain.model import set_slices
    from featx.fit.tables import load_table

    table = load_table(cache, result.feature_sets)
    where = {str(i): k for k, i in reversed(list(enumerate(table.ids)))}
    rows = np.array([where[str(i)] for i in result.evaluation.ids if str(i) in where], dtype=np.int64)
    if rows.size == 0:
        return None, f"Per-set attribution: not computed (no evaluated row found in {cache})."
    X = np.asarray(table.X, dtype=np.float64)[rows]
    X = X[np.isfinite(X).all(1)]
    out = drop_set_attribution(bundle.pipeline, X, set_slices(bundle))
    out["rows"] = "test" if result.evaluation.name == "test" else "cv (in-sample for the saved model)"
    shares = ", ".join(f"{k} {v['share']:.0%}" if v["share"] is not None else f"{k} -"
                       for k, v in out["sets"].items())
    what = ("the held-out test rows" if result.evaluation.name == "test" else
            "all labelled rows; the saved model was refitted on them, so this is in-sample")
    return out, (f"Per-set attribution (share of the decision carried by each feature set: mean absolute "
                 f"change of the predicted class's {out['score']} when the set is replaced by its training "
                 f"mean; {out['n_rows']} rows, {what}): {shares}.")


def write_fit_report(result, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write metrics.json, report.md, report.html, roc.png, pr.png, confusion.png and
    predictions.csv for a :class:`featx.fit.FitResult` into ``out_dir`` (created); with more
    than one feature set also per_set.json (:func:`per_set_attribution`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = result.evaluation
    block = result.primary
    files: dict[str, Path] = {}
    metrics = to_jsonable(result.metrics)
    metrics["timings_s"] = {k: round(v, 2) for k, v in result.timings.items()}
    files["metrics"] = out / "metrics.json"
    files["metrics"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    what = "test" if ev.name == "test" else "out-of-fold"
    files["roc"] = plot_roc(ev, out / "roc.png", f"ROC, {what} — {result.head} on {'+'.join(result.feature_sets)}")
    files["pr"] = plot_pr(ev, out / "pr.png", f"Precision-recall, {what}")
    files["confusion"] = plot_confusion(block["confusion_matrix"], block["class_names"],
                                        out / "confusion.png", f"Confusion matrix, {what}")
    files["predictions"] = out / "predictions.csv"
    write_csv(result.predictions, files["predictions"])
    per_set, per_set_line = per_set_attribution(result)
    if per_set is not None:
        files["per_set"] = out / "per_set.json"
        files["per_set"].write_text(json.dumps(per_set, indent=2) + "\n", encoding="utf-8")
    per_set_rows = [[k, _fmt(v["mean_drop"]), _fmt(v["mean_abs_drop"]),
                     "-" if v["share"] is None else f"{v['share']:.0%}"] for k, v in (per_set or {}).get("sets", {}).items()]
    per_set_head = ["feature set", "mean drop", "mean |drop|", "share"]

    title = f"featx: {result.head} on {' + '.join(result.feature_sets)}"
    params = json.dumps(result.best_params, sort_keys=True, default=str)
    summary = [[a, b, c] for a, b, c in _summary_rows(block)]
    classes = _class_rows(block)
    cm = block["confusion_matrix"]
    cm_rows = [[f"true {n}"] + [str(v) for v in row] for n, row in zip(block["class_names"], cm)]
    cm_head = [""] + [f"pred {n}" for n in block["class_names"]]
    notes = metrics.get("notes", [])
    extra_md, extra_html = "", ""
    if ev.name == "cv":
        fold_rows = [[str(i), _fmt(f["accuracy"]), _fmt(f["balanced_accuracy"]), _fmt(f["auc"]), str(f["n"])]
                     for i, f in enumerate(block["folds"])]
        fold_rows.append(["mean ± sd", *[f"{_fmt(block['mean'][k])} ± {_fmt(block['std'][k])}"
                                         for k in ("accuracy", "balanced_accuracy", "auc")], ""])
        fh = ["fold", "accuracy", "balanced accuracy", "AUC", "n"]
        extra_md = "\n## Folds\n\n" + _md_table(fh, fold_rows) + "\n"
        extra_html = "<h2>Folds</h2>" + _html_table(fh, fold_rows)

    md = [f"# {title}", "",
          f"Evaluated on: **{what}** ({block['n']} rows). {_protocol_text(metrics)}", "",
          f"Head parameters: `{params}`", "",
          _md_table(["metric", "value", "95% CI"], summary), "",
          "## Per class", "",
          _md_table(["class", "support", "sensitivity (95% CI)", "specificity (95% CI)", "precision", "F1"], classes),
          "", "## Confusion matrix", "", _md_table(cm_head, cm_rows), extra_md,
          "## Plots", "", "![ROC](roc.png) ![Precision-recall](pr.png) ![Confusion matrix](confusion.png)", ""]
    if per_set_line:
        md += ["## Per feature set", "", per_set_line, ""] + ([_md_table(per_set_head, per_set_rows), ""]
                                                            if per_set_rows else [])
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    files["markdown"] = out / "report.md"
    files["markdown"].write_text("\n".join(md), encoding="utf-8")

    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:32%;"
             "margin-right:1%}code{background:#f5f5f5;padding:0 .3em}")
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>Evaluated on: <b>{what}</b> ({block['n']} rows). {html.escape(_protocol_text(metrics))}</p>",
            f"<p>Head parameters: <code>{html.escape(params)}</code></p>",
            _html_table(["metric", "value", "95% CI"], summary),
            "<h2>Per class</h2>",
            _html_table(["class", "support", "sensitivity (95% CI)", "specificity (95% CI)", "precision", "F1"], classes),
            "<h2>Confusion matrix</h2>", _html_table(cm_head, cm_rows), extra_html,
            "<h2>Plots</h2><p>" + "".join(f"<img src='{png_data_uri(files[key])}' alt='{alt}'>" for key, alt in
                                          (("roc", "ROC"), ("pr", "precision-recall"),
                                           ("confusion", "confusion matrix"))) + "</p>"]
    if per_set_line:
        page += ["<h2>Per feature set</h2>", f"<p>{html.escape(per_set_line)}</p>"]
        page += [_html_table(per_set_head, per_set_rows)] if per_set_rows else []
    if notes:
        page.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    page.append("</body></html>")
    files["html"] = out / "report.html"
    files["html"].write_text("\n".join(page), encoding="utf-8")
    return files


# --------------------------------------------------------------------------------------------
# Leaderboard
# --------------------------------------------------------------------------------------------


def _stem(out: str | os.PathLike) -> Path:
    p = Path(out)
    return p.with_suffix("") if p.suffix.lower() in (".csv", ".md", ".png") else p


def write_leaderboard(board: pd.DataFrame, out: str | os.PathLike,
                      protocol: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``board`` as ``<stem>.csv``, ``<stem>.md`` and ``<stem>.png`` (``out`` may be any
    of them or the bare stem). Returns the paths."""
    stem = _stem(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    files = {"csv": stem.with_suffix(".csv"), "markdown": stem.with_suffix(".md"),
             "plot": stem.with_suffix(".png")}
    write_csv(board, files["csv"])

    def ci(row, key):
        lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
        return "" if lo is None or pd.isna(lo) else f" ({lo:.3f}–{hi:.3f})"

    header = ["#", "features", "head", "AUC (95% CI)", "accuracy (95% CI)", "balanced acc.", "F1",
              "n features", "s"]
    rows = [[str(r["rank"]), r["features"], r["head"], _fmt(r["auc"]) + ci(r, "auc"),
             _fmt(r["accuracy"]) + ci(r, "accuracy"), _fmt(r["balanced_accuracy"]), _fmt(r["f1"]),
             str(r["n_features"]), _fmt(r["seconds"], 1)] for r in board.to_dict("records")]
    lines = ["# featx compare", ""]
    if protocol:
        evaluated = "test split" if protocol.get("kind") == "split" else f"{protocol.get('n_splits')}-fold CV (pooled out-of-fold)"
        lines += [f"Evaluated on: {evaluated}; every run uses the same rows and folds. Sorted by AUC, "
                  "then balanced accuracy.", ""]
    lines += [_md_table(header, rows), ""]
    failures = board.attrs.get("failures") or []
    if failures:
        lines += ["Failed runs:", ""] + [f"- {f}" for f in failures] + [""]
    files["markdown"].write_text("\n".join(lines), encoding="utf-8")

    plt = _plt()
    n = len(board)
    labels = [f"{f} | {h}" for f, h in zip(board["features"], board["head"])]
    width = 5.5 + 0.075 * max((len(t) for t in labels), default=10)
    fig, ax = plt.subplots(figsize=(min(width, 24), max(2.5, 0.32 * n + 1.2)))
    heads = list(dict.fromkeys(board["head"]))
    colors = {h: plt.cm.tab10(i % 10) for i, h in enumerate(heads)}
    ypos = np.arange(n)[::-1]
    auc = board["auc"].astype(float).to_numpy()
    lo = board.get("auc_lo", pd.Series([np.nan] * n)).astype(float).to_numpy()
    hi = board.get("auc_hi", pd.Series([np.nan] * n)).astype(float).to_numpy()
    err = np.vstack([np.nan_to_num(auc - lo), np.nan_to_num(hi - auc)])
    ax.barh(ypos, auc, xerr=err, color=[colors[h] for h in board["head"]], capsize=2,
            error_kw={"lw": 0.8})
    ax.set_yticks(ypos, labels, fontsize=8)
    finite = auc[np.isfinite(auc)]
    left = max(0.0, (np.nanmin(lo) if np.isfinite(lo).any() else finite.min() if finite.size else 0.5) - 0.05)
    ax.set_xlim(left, 1.0)
    ax.set_xlabel("AUC (95% bootstrap CI)")
    ax.set_title("featx compare")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[h]) for h in heads]
    ax.legend(handles, heads, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(files["plot"], dpi=110)
    plt.close(fig)
    return files
