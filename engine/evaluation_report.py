"""The evaluation's report files: CSV (per class, summary, confusion matrix) and a self-contained
HTML page that embeds the confusion matrix as a PNG when matplotlib is importable and always as a
colour-shaded table."""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .evaluation import UNCLASSIFIED, EvaluationResult

SUMMARY_KEYS = (("oa", "overall accuracy"), ("miou", "mean IoU"), ("mf1", "mean F1"), ("kappa", "kappa"))


def write_csv(result: EvaluationResult, path: str) -> None:
    """Per-class scores, the summary, then the confusion matrix (rows = reference)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["value", "class", "iou", "f1", "precision", "recall", "support_px", "predicted_px"])
        for r in result.rows():
            w.writerow([r["value"], r["name"]] + [_fmt(r[k]) for k in ("iou", "f1", "precision", "recall")]
                       + [r["support"], r["predicted"]])
        w.writerow([])
        for key, label in SUMMARY_KEYS:
            w.writerow([key, label, _fmt(result.summary[key])])
        for key, value in result.pixels.items():
            w.writerow([f"{key}_px", f"{key} pixels", value])
        w.writerow([])
        w.writerow(["reference \\ predicted"] + result.names + [UNCLASSIFIED])
        for i, name in enumerate(result.names):
            w.writerow([name] + [int(v) for v in result.matrix[i]])


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return f"{x:.6f}" if isinstance(x, float) else str(x)


def _matrix_png(result: EvaluationResult) -> Optional[bytes]:
    """Row-normalised confusion matrix as a PNG; None without matplotlib (no hard dependency)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    n = len(result.classes)
    cm = result.matrix[:n].astype(np.float64)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    labels = result.names + [UNCLASSIFIED]
    size = 2.5 + 0.55 * (n + 1)
    fig = Figure(figsize=(size + 1.0, size))  # no pyplot: no global state inside QGIS
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n + 1))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n))
    ax.set_yticklabels(labels[:n], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(n):
        for j in range(n + 1):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the reference row")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _shade(share: float) -> str:
    """Blue shade for a table cell (white at 0, dark blue at 1)."""
    r = int(247 - share * (247 - 8))
    g = int(251 - share * (251 - 48))
    b = int(255 - share * (255 - 107))
    return f"#{r:02x}{g:02x}{b:02x}"


def write_html(result: EvaluationResult, path: str, title: str = "ModalSeg accuracy assessment",
               details: Sequence[Tuple[str, str]] = ()) -> None:
    """A self-contained HTML report (the picture is embedded as a data URI)."""
    e = html.escape
    n = len(result.classes)
    parts = [f"<html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;font-size:10pt} table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #bbb;padding:3px 6px;text-align:right} th{background:#eee}"
             "td.name{text-align:left}</style></head><body>", f"<h2>{e(title)}</h2>"]
    if details:
        parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td class='name'>{e(v)}</td></tr>"
                                         for k, v in details) + "</table>")
    parts.append("<h3>Summary</h3><table>" + "".join(
        f"<tr><th>{e(label)}</th><td>{_fmt(result.summary[key]) or 'n/a'}</td></tr>" for key, label in SUMMARY_KEYS)
        + "".join(f"<tr><th>{e(k)} pixels</th><td>{v}</td></tr>" for k, v in result.pixels.items()) + "</table>")
    parts.append("<h3>Per class</h3><table><tr><th>value</th><th>class</th><th>IoU</th><th>F1</th>"
                 "<th>precision</th><th>recall</th><th>reference px</th><th>predicted px</th></tr>")
    for r in result.rows():
        parts.append(f"<tr><td>{r['value']}</td><td class='name'>{e(r['name'])}</td>"
                     + "".join(f"<td>{_fmt(r[k]) or 'n/a'}</td>" for k in ("iou", "f1", "precision", "recall"))
                     + f"<td>{r['support']}</td><td>{r['predicted']}</td></tr>")
    parts.append("</table><h3>Confusion matrix</h3><p>Rows: reference; columns: prediction. "
                 "Cell shade: share of the reference row.</p>")
    png = _matrix_png(result)
    if png is not None:
        parts.append("<img alt='confusion matrix' src='data:image/png;base64,"
                     + base64.b64encode(png).decode("ascii") + "'/>")
    names = result.names + [UNCLASSIFIED]
    parts.append("<table><tr><th>reference \\ predicted</th>" + "".join(f"<th>{e(x)}</th>" for x in names) + "</tr>")
    for i in range(n):
        row = result.matrix[i]
        total = max(int(row.sum()), 1)
        parts.append(f"<tr><th>{e(names[i])}</th>" + "".join(
            f"<td style='background:{_shade(v / total)};color:{'white' if v / total > 0.5 else 'black'}'>{int(v)}</td>"
            for v in row) + "</tr>")
    parts.append("</table>")
    if result.messages:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(m)}</li>" for m in result.messages) + "</ul>")
    parts.append("</body></html>")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
