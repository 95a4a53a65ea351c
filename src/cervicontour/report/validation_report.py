"""One self-contained HTML page of validation findings, grouped by patient.

Each patient's section shows the clinician's note from ``notes.csv`` beside the findings, and an
axial thumbnail (PNG, embedded as base64) for each geometry problem: overlaps, compound
mismatches, positions, components, masks off their image grid, displaced centroids. Thumbnails
sample the image and each mask at the same world points, so a mask whose header puts it in the
wrong place is drawn in the wrong place. Display: radiological (patient's right on the left,
anterior at the top), soft-tissue window.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from cervicontour.cohort import Case, load_cohort
from cervicontour.errors import InputError
from cervicontour.io.atomic import write_text_atomic
from cervicontour.report.preview import WINDOW_HU
from cervicontour.structures import COLOURS, PALETTE
from cervicontour.rules.findings import Finding, Severity, count_by_severity
from cervicontour.structures import try_canonical_name
from cervicontour.volume import Volume

#: checks whose findings get a thumbnail (when they carry ``where_mm``).
GEOMETRY_CHECKS = (
    "grid.mismatch",
    "rules.overlap",
    "rules.compound",
    "rules.position",
    "rules.laterality",
    "rules.components",
    "cohort.centroid",
)


def write_validation_report(
    findings: list[Finding],
    path: str | os.PathLike,
    *,
    cohort_root: str | os.PathLike,
    notes: dict[str, str] | None = None,
    patients: list[str] | None = None,
    title: str = "cervicontour validation",
    subtitle: str = "",
    max_thumbnails: int = 60,
) -> Path:
    """Write the report (atomically) and return its path.

    Args:
        findings: what to show (any order; shown cohort-wide first, then by patient).
        path: the ``.html`` file to write.
        cohort_root: the cohort the findings are about (thumbnails read its files).
        notes: ``patient_id → note`` (default: read from the cohort's ``notes.csv``).
        patients: every patient id, so patients without findings are listed too.
        subtitle: e.g. the rules file and its hash.
        max_thumbnails: at most this many thumbnails (they cost a read of the image each).

    Example:
        >>> result = validate_cohort("out/c")                                   # doctest: +SKIP
        >>> write_validation_report(list(result.findings), "qa.html", cohort_root="out/c")  # doctest: +SKIP
    """
    page = validation_html(
        findings, cohort_root=cohort_root, notes=notes, patients=patients, title=title,
        subtitle=subtitle, max_thumbnails=max_thumbnails,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page)
    return path


def validation_html(
    findings: list[Finding],
    *,
    cohort_root: str | os.PathLike,
    notes: dict[str, str] | None = None,
    patients: list[str] | None = None,
    title: str = "cervicontour validation",
    subtitle: str = "",
    max_thumbnails: int = 60,
) -> str:
    """The report as an HTML string (see :func:`write_validation_report`)."""
    root = Path(cohort_root)
    try:
        cohort = load_cohort(root)
    except InputError:
        cohort = None
    if notes is None:
        notes = {c.patient_id: c.note for c in cohort.cases()} if cohort is not None else {}
    order = list(patients or (list(cohort) if cohort is not None else []))
    for f in findings:
        if f.patient_id is not None and f.patient_id not in order:
            order.append(f.patient_id)
    by_patient: dict[str | None, list[Finding]] = {}
    for f in findings:
        by_patient.setdefault(f.patient_id, []).append(f)
    budget = [max_thumbnails]
    counts = count_by_severity(findings)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{_e(str(root))}{(' · ' + _e(subtitle)) if subtitle else ''}</p>",
        "<p class='counts'>" + " ".join(
            f"<span class='badge {s}'>{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}</span>"
            for s in ("error", "warning", "info")
        ) + "</p>",
    ]
    if by_patient.get(None):
        parts.append("<section><h2>Cohort</h2>")
        parts.append(_table(by_patient[None]))
        parts.append("</section>")
    clean = [p for p in order if not by_patient.get(p)]
    for pid in order:
        items = by_patient.get(pid)
        if not items:
            continue
        case = cohort.get(pid) if cohort is not None else None
        c = count_by_severity(items)
        badges = " ".join(f"<span class='badge {s}'>{c[s]}</span>" for s in ("error", "warning", "info") if c[s])
        note = notes.get(pid, "")
        parts.append(f"<section id='{_e(pid)}'><h2>{_e(pid)} {badges}</h2><div class='patient'>")
        parts.append("<div class='findings'>" + _table(items) + _thumbnails(items, case, budget) + "</div>")
        parts.append(
            "<aside class='note'><h3>Note (notes.csv)</h3>"
            + (f"<p>{_e(note)}</p>" if note else "<p class='none'>no note</p>")
            + "</aside></div></section>"
        )
    if clean:
        parts.append(f"<section><h2>No findings</h2><p>{_e(', '.join(clean))}</p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(items: list[Finding]) -> str:
    rows = [
        "<table><tr><th>severity</th><th>check</th><th>structure</th><th>expected</th><th>actual</th><th>what to do</th></tr>"
    ]
    for f in sorted(items, key=lambda f: (f.severity.rank, f.check, f.structure or "")):
        file = f"<div class='file'>{_e(f.file)}</div>" if f.file else ""
        rows.append(
            f"<tr class='{f.severity.value}'><td><span class='badge {f.severity.value}'>{f.severity.value}</span></td>"
            f"<td><code>{_e(f.check)}</code>{file}</td><td>{_e(f.structure or '')}</td><td>{_e(f.expected)}</td>"
            f"<td>{_e(f.actual)}</td><td>{_e(f.hint)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


# --------------------------------------------------------------------------- thumbnails
def _thumbnails(items: list[Finding], case: Case | None, budget: list[int]) -> str:
    wanted = [f for f in items if f.check in GEOMETRY_CHECKS and f.where_mm is not None and f.severity is not Severity.INFO]
    if not wanted or case is None or budget[0] <= 0:
        return ""
    try:
        image = case.load_image()
    except (InputError, ValueError, ImportError):
        return ""
    cells = []
    for f in wanted:
        if budget[0] <= 0:
            break
        names = [n for n in (f.structure or "").split("/") if n]
        masks = {}
        for name in names:
            canonical = try_canonical_name(name)
            if canonical is None or not case.has(canonical):
                continue
            try:
                masks[canonical] = case.load_structure(canonical)
            except (InputError, ValueError):
                continue
        png = axial_thumbnail(image, masks, f.where_mm)
        budget[0] -= 1
        caption = f"{f.check} · {f.structure or ''} · z = {f.where_mm[2]:.1f} mm"
        cells.append(
            f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "<div class='thumbs'>" + "".join(cells) + "</div>"


def sample_axial(volume: Volume, centre_mm, *, half_width_mm: float, step_mm: float) -> np.ndarray:
    """Nearest-neighbour samples of ``volume`` on an axial LPS plane through ``centre_mm``.

    Returns:
        2-D array ``[row, col]``: rows run anterior → posterior, columns patient right → left
        (radiological display). Points outside the volume are NaN.
    """
    offsets = np.arange(-half_width_mm, half_width_mm + step_mm / 2, step_mm)
    x = centre_mm[0] + offsets
    y = centre_mm[1] + offsets
    xx, yy = np.meshgrid(x, y)  # rows: y (anterior → posterior), cols: x (right → left)
    points = np.stack([xx, yy, np.full_like(xx, centre_mm[2])], axis=-1)
    index = np.rint(volume.world_to_index(points)).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(volume.shape)), axis=-1)
    out = np.full(xx.shape, np.nan)
    idx = index[inside]
    out[inside] = volume.array[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out


def axial_thumbnail(image: Volume, masks: dict[str, Volume], where_mm, *, half_width_mm: float = 80.0) -> bytes:
    """PNG bytes: the image around ``where_mm`` with mask outlines and a cross at ``where_mm``."""
    from matplotlib.figure import Figure  # no pyplot: no backend, no global state

    step = max(min(image.spacing_mm), 0.75)
    ct = sample_axial(image, where_mm, half_width_mm=half_width_mm, step_mm=step)
    fig = Figure(figsize=(2.6, 2.6), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    extent = (-half_width_mm, half_width_mm, half_width_mm, -half_width_mm)
    ax.imshow(np.nan_to_num(ct, nan=WINDOW_HU[0]), cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], extent=extent)
    for n, (name, mask) in enumerate(masks.items()):
        plane = sample_axial(mask, where_mm, half_width_mm=half_width_mm, step_mm=step)
        plane = np.nan_to_num(plane, nan=0.0) > 0
        if plane.any():
            colour = COLOURS.get(name, PALETTE[n % len(PALETTE)])
            offsets = np.linspace(-half_width_mm, half_width_mm, plane.shape[0])
            ax.contour(offsets, offsets, plane.astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
            ax.text(-half_width_mm + 3, -half_width_mm + 10 + 12 * n, name, color=colour, fontsize=7)
    ax.plot([0], [0], marker="+", color="#ff00ff", markersize=10, mew=1.5)
    ax.text(-half_width_mm + 3, half_width_mm - 4, "R", color="white", fontsize=7)
    ax.text(half_width_mm - 9, half_width_mm - 4, "L", color="white", fontsize=7)
    ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _e(text: str | None) -> str:
    return html.escape(text or "", quote=True)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
section { border-top: 1px solid #ddd; padding-top: 0.5em; margin-top: 1em; }
.patient { display: flex; gap: 1.5em; align-items: flex-start; }
.findings { flex: 1; min-width: 0; }
.note { width: 16em; background: #f6f5f4; padding: 0.5em 1em; border-radius: 6px; }
.note h3 { font-size: 0.9em; margin: 0.3em 0; color: #555; } .note .none { color: #999; }
table { border-collapse: collapse; width: 100%; font-size: 0.85em; }
th, td { border-bottom: 1px solid #eee; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
.badge { border-radius: 4px; padding: 0 0.4em; color: white; font-size: 0.85em; }
.badge.error { background: #c01c28; } .badge.warning { background: #b5835a; } .badge.info { background: #1c71d8; }
.file { color: #888; font-size: 0.85em; }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.8em; margin-top: 0.6em; }
figure { margin: 0; } figcaption { font-size: 0.75em; color: #555; max-width: 208px; }
"""

__all__ = ["GEOMETRY_CHECKS", "axial_thumbnail", "sample_axial", "validation_html", "write_validation_report"]
