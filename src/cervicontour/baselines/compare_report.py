"""The Markdown table and the figure of a comparison record (:func:`~.compare.read_comparison`'s dict)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _structures(record: dict) -> list[str]:
    names = list(record["train"].get("structures") or [])
    for method in record["methods"].values():
        names += [s for s in method["structures"] if s not in names]
    return names


def table(record: dict) -> str:
    """The record as Markdown: one row per method (Dice · HD95 mm · NSD 2 mm per structure), its notes, the data.

    A dash: the method does not predict that structure (or the value is not finite: HD95 of a
    prediction empty on at least half the cases).
    """
    names = _structures(record)
    lines = ["| method | " + " | ".join(f"{s} Dice · HD95 · NSD2" for s in names) + " | train s | predict s/case |",
             "|---|" + "---|" * (len(names) + 2)]  # fmt: skip
    for method, row in record["methods"].items():
        cells = []
        for s in names:
            m = row["structures"].get(s)
            cells.append("—" if m is None else f"{_cell(m['dice'], '.3f')} · {_cell(m['hd95_mm'], '.1f')} · {_cell(m['nsd_2mm'], '.3f')}")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {_seconds(row['train_seconds'])} | {_seconds(row['predict_seconds_per_case'])} |")
    train = record["train"]
    lines += ["", "Dice: mean over the test cases; HD95: median, mm; NSD2: surface Dice at 2 mm, mean. Seconds are wall time "
              "on the machine named below, shared with other jobs.", ""]  # fmt: skip
    lines += [f"- **{method}**: {row['notes']}" for method, row in record["methods"].items()]
    lines += ["", f"Data: {train['data']}. Train: {train['patients']} patients ({train['cohort']}); test: {len(record['test'])} patients "
              f"({', '.join(record['test'])}). Budget {train['budget_minutes']} min per trained method; {train['machine']}, "
              f"torch threads {train.get('threads') or 'default'}; commit {record.get('commit') or 'unknown'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_table(record: dict, path: str | os.PathLike) -> Path:
    from cervicontour.io import write_text_atomic

    write_text_atomic(path, table(record))
    return Path(path)


def write_figure(record: dict, path: str | os.PathLike) -> Path:
    """Bars per structure and method: mean Dice (left), median HD95 mm on a log scale (right); the PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervicontour.io import atomic_path

    names = _structures(record)
    methods = list(record["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(names))
    for i, method in enumerate(methods):
        per = record["methods"][method]["structures"]
        dice = [np.nan if per.get(s, {}).get("dice") is None else per[s]["dice"] for s in names]
        hd = [np.nan if per.get(s, {}).get("hd95_mm") is None else max(per[s]["hd95_mm"], 0.1) for s in names]
        axes[0].bar(x + i * width, dice, width, label=method)
        axes[1].bar(x + i * width, hd, width, label=method)
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("mean Dice (higher is better)", "median HD95 mm, log scale (lower is better; no bar: not predicted or not finite)")):
        ax.set_xticks(x + 0.4 - width / 2, names)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 5), fontsize=8, frameon=False)
    train = record["train"]
    fig.suptitle(f"{train['data']}\ntrain {train['patients']} / test {len(record['test'])} patients, budget {train['budget_minutes']} min", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return Path(path)
