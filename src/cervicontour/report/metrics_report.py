"""Metric reports: one box-plot PNG per metric (a box per structure) and an HTML page.

The page shows, per structure and metric, the median [IQR], the mean with its bootstrap 95 %
CI, and how many values were NaN (undefined) or inf (distance to an empty mask): those are
never dropped silently. Every value it shows comes from the rows it is given; nothing is
recomputed here.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cervicontour.io.atomic import write_text_atomic
from cervicontour.metrics.summary import summarize

_UNITS = (("_mm", "mm"), ("_cc", "cc"))


def metric_label(metric: str) -> str:
    """Human label of a metric column, e.g. ``hd95_mm`` → ``hd95 (mm)``, ``nsd_2mm`` → ``nsd 2 mm``."""
    nsd = re.fullmatch(r"nsd_(.+)mm", metric)
    if nsd:
        return f"surface Dice at {nsd.group(1)} mm"
    for suffix, unit in _UNITS:
        if metric.endswith(suffix):
            return f"{metric[: -len(suffix)].replace('_', ' ')} ({unit})"
    return metric.replace("_", " ")


def write_boxplots(
    rows: Sequence[Mapping[str, object]], metrics: Sequence[str], out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write ``<out_dir>/<metric>.png``: one box per structure, finite values, points overlaid.

    Returns:
        ``{metric: png path}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    structures = list(dict.fromkeys(str(r["structure"]) for r in rows))
    written = {}
    for metric in metrics:
        data, labels = [], []
        for structure in structures:
            values = np.array([float(r[metric]) for r in rows if r["structure"] == structure], float)  # type: ignore[arg-type]
            finite = values[np.isfinite(values)]
            extra = []
            if np.isinf(values).any():
                extra.append(f"{int(np.isinf(values).sum())} inf")
            if np.isnan(values).any():
                extra.append(f"{int(np.isnan(values).sum())} NaN")
            data.append(finite)
            labels.append(f"{structure}\nn={finite.size}" + (f"\n({', '.join(extra)})" if extra else ""))
        fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(structures), 3.6), dpi=100)
        ax.boxplot([d if d.size else [np.nan] for d in data], showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        rng = np.random.default_rng(0)
        for position, values in enumerate(data, start=1):
            ax.plot(position + rng.uniform(-0.12, 0.12, values.size), values, "o", ms=3, alpha=0.6, color="#1c71d8")
        ax.set_title(metric_label(metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path)
        plt.close(fig)
        written[metric] = path
    return written


def _fmt(value: float) -> str:
    if isinstance(value, float) and not np.isfinite(value):
        return "–" if np.isnan(value) else ("∞" if value > 0 else "−∞")
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_table_html(summary: Sequence[Mapping[str, object]]) -> str:
    """HTML table of :func:`~cervicontour.metrics.summary.summarize` rows."""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("structure", "metric", "n", "NaN", "inf", "median [IQR]", "mean (95 % CI)")
    )
    body = []
    for s in summary:
        body.append(
            "<tr>"
            f"<td>{html.escape(str(s['structure']))}</td><td>{html.escape(metric_label(str(s['metric'])))}</td>"
            f"<td>{s['n']}</td><td>{s['n_nan']}</td><td>{s['n_inf']}</td>"
            f"<td>{_fmt(s['median'])} [{_fmt(s['q1'])}, {_fmt(s['q3'])}]</td>"  # type: ignore[arg-type]
            f"<td>{_fmt(s['mean'])} ({_fmt(s['ci95_low'])}, {_fmt(s['ci95_high'])})</td>"  # type: ignore[arg-type]
            "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def rows_table_html(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"  # type: ignore[arg-type]
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left}
.plots img{max-width:480px;margin:4px;border:1px solid #eee}
"""


def write_metrics_report(
    rows: Sequence[Mapping[str, object]],
    metrics: Sequence[str],
    path: str | os.PathLike,
    *,
    columns: Sequence[str] | None = None,
    title: str = "Contour evaluation",
    notes: Sequence[str] = (),
) -> Path:
    """Write an HTML page (summary table, box plots, all rows) and its PNGs beside it.

    Args:
        rows: metric rows (``patient_id``, ``structure`` and the metric columns).
        metrics: metric columns to summarise and plot.
        path: the ``.html`` file; PNGs go to ``<stem>_files/`` next to it.
        columns: columns of the full table (default: ids then ``metrics``).
        title: page title.
        notes: lines shown above the tables (e.g. settings, unmatched patients).

    Returns:
        The HTML path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = write_boxplots(rows, metrics, path.parent / f"{path.stem}_files")
    summary = summarize(rows, metrics)
    columns = list(columns or ["patient_id", "structure", *metrics])
    gallery = "".join(
        f'<img src="{html.escape(p.parent.name)}/{html.escape(p.name)}" alt="{html.escape(m)}">'
        for m, p in images.items()
    )
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{len(rows)} rows, {len({r['patient_id'] for r in rows})} patients. "
        "Statistics use finite values; NaN (undefined) and inf (distance to an empty mask) are counted apart.</p>"
        f"<ul>{notes_html}</ul>"
        f"<h2>Summary per structure</h2>{summary_table_html(summary)}"
        f"<h2>Box plots</h2><div class='plots'>{gallery}</div>"
        f"<h2>All rows</h2>{rows_table_html(rows, columns)}</body></html>"
    )
    write_text_atomic(path, page)
    return path
