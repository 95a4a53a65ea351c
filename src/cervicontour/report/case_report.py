"""One-page QA report of one case, for a clinician to read in a minute.

``CASE_DIR/report/index.html`` plus PNGs beside it: axial/coronal/sagittal overlays through each
structure's centroid and through the superior and inferior ends of the targets (drawn by
:func:`cervicontour.report.preview.render_overlay`), volumes against the cohort's range and the
rules' plausible range, the rule findings (:func:`cervicontour.rules.check`), uncertainty flags,
the model, its version and config hash, the input hash, and what was composed or expanded. A
banner says it is a draft for review. Works on any case folder in the cohort layout
(``image.nii.gz`` + ``structures/``); fields of the engine's ``prediction.json`` are shown when
the file is there, otherwise the page says "not a model prediction".
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.export.provenance import (
    find_prediction_json,
    image_path,
    read_prediction_record,
    rule_changes,
    structure_uncertainty,
    uncertainty_flags,
)
from cervicontour.io.atomic import check_writable, file_sha256, write_text_atomic
from cervicontour.structures import COMPOUND, PRIMARY, STRUCTURES, Role
from cervicontour.volume import Volume

BANNER = "DRAFT for clinician review — not for clinical use without review"
#: Targets whose superior and inferior ends get their own overlay.
END_VIEWS = ("CTVn", "CTVp")
_MARKER_ARM = 2  # voxels: the plus-shaped marker at an end point
#: Fewer cohort patients than this give a range too thin to flag a volume against.
MIN_COHORT = 3


@dataclass(frozen=True)
class VolumeRow:
    """One structure's volume and where it sits in the cohort and in the rules' range."""

    structure: str
    volume_cc: float
    cohort: tuple[float, float, float, int] | None  # min, median, max, n
    plausible: tuple[float, float] | None  # the rules' min_cc, max_cc
    uncertainty: float | None = None  # the model's score, from prediction.json

    cohort_z: float | None = None  # robust z of the log-volume against the cohort

    @property
    def status(self) -> str:
        """"ok", or why the volume stands out: a cohort outlier (the criterion of ``cervicontour
        validate``: robust z of the log-volume beyond ``outlier_z`` *and* more than
        ``volume_floor_factor`` times off the median), or outside the rules' plausible range."""
        from cervicontour.validate.options import ValidateOptions

        options = ValidateOptions()
        words = []
        if self.cohort and self.cohort_z is not None and self.cohort[3] >= MIN_COHORT and self.volume_cc > 0:
            factor = self.volume_cc / self.cohort[1] if self.cohort[1] > 0 else float("inf")
            if abs(self.cohort_z) > options.outlier_z and max(factor, 1 / factor) > options.volume_floor_factor:
                words.append(f"cohort outlier (×{factor:.2f} the median, robust z {self.cohort_z:+.1f})")
        if self.plausible and not self.plausible[0] <= self.volume_cc <= self.plausible[1]:
            words.append("outside plausible range")
        return "; ".join(words) or "ok"


def _case_masks(case_dir: Path) -> dict[str, Path]:
    from cervicontour.contours.compose import case_structure_paths

    return {n: p for n, p in case_structure_paths(case_dir).items()
            if n in PRIMARY or STRUCTURES[n].role is Role.SUB_TARGET}


def cohort_volumes(cohort_dir: str | os.PathLike, names: list[str], *, exclude: str | None = None) -> dict[str, list[float]]:
    """Volumes (cc) of ``names`` over a cohort's labelled patients, leaving out ``exclude``."""
    from cervicontour.cohort import load_cohort

    out: dict[str, list[float]] = {n: [] for n in names}
    for case in load_cohort(cohort_dir).labelled():
        if case.patient_id == exclude:
            continue
        for name in names:
            if case.has(name):
                mask = case.load_structure(name)
                out[name].append(float(np.count_nonzero(mask.array)) * mask.voxel_volume_cc)
    return out


def _end_marker(mask: Volume, superior: bool) -> tuple[Volume, tuple[float, float, float]]:
    """A plus-shaped marker at the superior (or inferior) end of ``mask``, and that point in mm."""
    points = np.argwhere(mask.array)
    z = mask.index_to_world(points)[:, 2]
    extreme = z.max() if superior else z.min()
    slab = points[np.abs(z - extreme) < 1e-3]
    centre = slab[np.argmin(np.linalg.norm(slab - slab.mean(axis=0), axis=1))]
    marker = np.zeros(mask.shape, np.uint8)
    for axis in range(3):
        lo, hi = centre.copy(), centre.copy()
        lo[axis] = max(centre[axis] - _MARKER_ARM, 0)
        hi[axis] = min(centre[axis] + _MARKER_ARM, mask.shape[axis] - 1)
        marker[tuple(slice(a, b + 1) for a, b in zip(lo, hi))] = 1
    return mask.with_array(marker), tuple(float(v) for v in mask.index_to_world(centre))




def write_case_report(
    case_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    cohort: str | os.PathLike | None = None,
    rules=None,
) -> Path:
    """Write the QA report of one case and return the path of its ``index.html``.

    Args:
        case_dir: ``CASE_DIR`` with ``structures/`` (cohort layout) and its CT: ``image.nii.gz``, or
            for a predict output the ``input.path`` its ``prediction.json`` records. An optional
            ``prediction.json``, ``compose_log.jsonl`` and ``planning/`` are shown too.
        out_dir: where to write ``index.html`` and the PNGs (default ``CASE_DIR/report``).
        cohort: a cohort folder whose labelled patients give the volume ranges (this case left
            out); without it the column says "no cohort given".
        rules: rule set for the findings (default the clinicians' rules).

    Raises:
        InputError: no image, or no structures, or a mask off the image grid.

    Example:
        >>> write_case_report("pred/p01", cohort="data/cohort")  # doctest: +SKIP
        PosixPath('pred/p01/report/index.html')
    """
    from cervicontour.io import read_nifti, read_volume
    from cervicontour.contours.compose import read_log
    from cervicontour.report.preview import render_overlay
    from cervicontour.rules import check, default_rules, sort_findings
    from cervicontour.validate.robust import robust_z

    case_dir = Path(case_dir)
    prediction = read_prediction_record(case_dir)
    source = image_path(case_dir, prediction)
    if source is None:
        raise InputError(
            f"{case_dir}: no image.nii.gz (nor an existing input.path in prediction.json); expected a case folder "
            "in the cohort layout (image.nii.gz + structures/)"
        )
    paths = _case_masks(case_dir)
    if not paths:
        raise InputError(f"{case_dir}: no structure masks in structures/ or structures/sub/; nothing to report")
    out = Path(out_dir) if out_dir else case_dir / "report"
    rules = rules or default_rules()
    image = read_volume(source)
    masks = {n: read_nifti(p) for n, p in paths.items()}
    for name, mask in masks.items():
        if not image.same_grid(mask):
            raise InputError(f"{paths[name]}: not on the image grid ({'; '.join(image.grid_differences(mask))}); run `cervicontour clean`")
    check_writable(out / "index.html")  # everything read and checked before the first file is written
    out.mkdir(parents=True, exist_ok=True)
    case_id = case_dir.resolve().name

    # --- pictures
    shown = {n: m for n, m in masks.items() if n in PRIMARY and m.array.any()}
    pictures: list[tuple[str, str]] = []
    for name in shown:
        png = render_overlay(image, shown, out / f"centroid_{name}.png", centre_on=name, title=f"{case_id}: through the centroid of {name}")
        pictures.append((png.name, f"through the centroid of {name}"))
    for name in END_VIEWS:
        if name not in shown:
            continue
        for superior in (True, False):
            end = "superior" if superior else "inferior"
            marker, point = _end_marker(shown[name], superior)
            label = f"{name} {end} end"
            png = render_overlay(image, {**shown, label: marker}, out / f"{end}_{name}.png", centre_on=label,
                                 title=f"{case_id}: {label} (+ marker) at LPS ({point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f}) mm")
            pictures.append((png.name, f"{label}, white + marks the most {end} voxel"))

    # --- numbers
    names = [n for n in [*PRIMARY, *sorted(set(masks) - set(PRIMARY))] if n in masks]
    ranges = cohort_volumes(cohort, names, exclude=case_id) if cohort else None
    plausible = {r.structure: (r.min_cc, r.max_cc) for r in rules.volume}
    scores = structure_uncertainty(prediction)
    rows = []
    for name in names:
        cc = float(np.count_nonzero(masks[name].array)) * masks[name].voxel_volume_cc
        values = [v for v in (ranges or {}).get(name) or [] if v > 0]
        stats = (min(values), float(np.median(values)), max(values), len(values)) if values else None
        z = robust_z(math.log(cc), np.log(values))[0] if values and cc > 0 else None
        rows.append(VolumeRow(name, cc, stats, plausible.get(name), scores.get(name), z))
    findings = sort_findings(check(masks, rules=rules, patient_id=case_id))

    page = _page(
        case_id=case_id, case_dir=case_dir, image=image, image_label=str(source.relative_to(case_dir) if source.is_relative_to(case_dir) else source),
        image_sha256=file_sha256(source) if source.is_file() else "", prediction=prediction,
        prediction_path=find_prediction_json(case_dir), rows=rows, cohort=cohort, findings=findings, pictures=pictures,
        log=read_log(case_dir), rules_label=f"{rules.source} (sha256 {rules.sha256[:12]})" if rules.sha256 else rules.source,
        planning=sorted((case_dir / "planning").glob("*_overlap.csv")) if (case_dir / "planning").is_dir() else [],
    )
    path = out / "index.html"
    write_text_atomic(path, page)
    return path


# ------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1b}
.banner{background:#b00020;color:#fff;font-weight:700;font-size:1.25em;padding:.7em 1.2em;text-align:center;letter-spacing:.02em}
main{max-width:1200px;margin:0 auto;padding:1em 1.5em 3em}
h1{font-size:1.5em;margin:.6em 0 .2em} h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;background:#fff;font-size:.92em} th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eee} td.num{text-align:right;font-variant-numeric:tabular-nums}
.error{color:#b00020;font-weight:700} .warning{color:#a05a00;font-weight:700} .info{color:#1c6e8c}
.flag{background:#fff3cd} .ok{color:#2b7a0b} .muted{color:#666}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:.8em} figure{margin:0;background:#000;padding:.3em}
figure img{width:100%;height:auto;display:block} figcaption{color:#ddd;font-size:.85em;padding:.3em}
code{font-size:.9em;word-break:break-all}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _page(*, case_id, case_dir, image, image_label, image_sha256, prediction, prediction_path, rows, cohort, findings, pictures,
          log, rules_label, planning) -> str:
    from cervicontour import __version__

    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<link rel='icon' href='data:,'>",  # no favicon request (a 404 in the console)
        f"<title>QA {_e(case_id)} — draft for review</title><style>{_CSS}</style></head><body>",
        f"<div class='banner' role='alert'>{_e(BANNER)}</div><main>",
        f"<h1>Case {_e(case_id)}</h1>",
        f"<p class='muted'>{_e(case_dir)} · image {_e(repr(image))} · report written {created} by cervicontour {__version__}</p>",
        _scope(prediction),
        _provenance(prediction, prediction_path, image_label, image_sha256),
        _uncertainty(prediction),
        _volumes(rows, cohort),
        _findings(findings, rules_label),
        _history(log, planning, case_dir),
        "<h2>Overlays</h2><p class='muted'>Axial and coronal: patient's right on the image's left; "
        "sagittal: anterior on the left; soft-tissue window.</p><div class='grid'>",
    ]
    for name, caption in pictures:
        parts.append(f"<figure><img src='{_e(name)}' alt='{_e(caption)}'><figcaption>{_e(caption)}</figcaption></figure>")
    parts.append("</div></main></body></html>")
    return "\n".join(parts)


def _provenance(prediction, prediction_path, image_label, image_sha256) -> str:
    rows = [("image", f"<code>{_e(image_label)}</code>")]
    if image_sha256:
        rows.append(("image file sha256", f"<code>{_e(image_sha256)}</code>"))
    if prediction is None:
        head = "<p class='flag'><strong>Not a model prediction</strong>: no prediction.json in the case folder " \
               "(drawn, imported or edited structures).</p>"
    else:
        head = f"<p>Model prediction, from <code>{_e(prediction_path.name)}</code>.</p>"
        for label, value in prediction.provenance().items():
            rows.append((label, f"<code>{_e(value)}</code>" if value else "<span class='muted'>not recorded</span>"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Provenance</h2>{head}<table>{body}</table>"


def _scope(prediction) -> str:
    """The out-of-scope flag (``prediction.json``'s ``out_of_scope``), first and in red when raised."""
    reasons = prediction.out_of_scope if prediction is not None else ()
    if not reasons:
        return ""
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    return f"<div class='flag' role='alert'><h2 class='error'>Outside what this model was made for</h2><ul>{items}</ul></div>"


def _uncertainty(prediction) -> str:
    if prediction is None:
        return "<h2>Uncertainty flags</h2><p class='muted'>not a model prediction: no uncertainty estimate.</p>"
    flags = uncertainty_flags(prediction)
    parts = ["<h2>Uncertainty flags</h2>"]
    if flags:
        parts.append("<ul class='flag'>" + "".join(f"<li>{_e(f)}</li>" for f in flags) + "</ul>")
    else:
        parts.append("<p class='ok'>none raised by the model.</p>")
    changes = rule_changes(prediction)
    if changes:
        parts.append("<p>Edits the rules made to the prediction:</p><ul>" + "".join(f"<li>{_e(c)}</li>" for c in changes) + "</ul>")
    return "".join(parts)


def _volumes(rows: list[VolumeRow], cohort) -> str:
    scored = any(row.uncertainty is not None for row in rows)
    head = ("<tr><th>structure</th><th>volume (cc)</th><th>cohort min · median · max (n)</th>"
            "<th>plausible (rules)</th>" + ("<th>model uncertainty</th>" if scored else "") + "<th>status</th></tr>")
    body = []
    for row in rows:
        cohort_cell = (f"{row.cohort[0]:.1f} · {row.cohort[1]:.1f} · {row.cohort[2]:.1f} ({row.cohort[3]})" if row.cohort
                       else "<span class='muted'>" + ("no cohort given" if not cohort else "not in cohort") + "</span>")
        plausible = f"{row.plausible[0]:g} – {row.plausible[1]:g}" if row.plausible else "<span class='muted'>—</span>"
        status = f"<span class='{'ok' if row.status == 'ok' else 'warning'}'>{_e(row.status)}</span>"
        parent = next((t for t, members in COMPOUND.items() if row.structure in members), None)
        label = _e(row.structure) + (f" <span class='muted'>(part of {parent})</span>" if parent else "")
        score = ("<td class='num'>" + (f"{row.uncertainty:.2f}" if row.uncertainty is not None else "") + "</td>") if scored else ""
        body.append(f"<tr><td>{label}</td><td class='num'>{row.volume_cc:.2f}</td><td>{cohort_cell}</td>"
                    f"<td>{plausible}</td>{score}<td>{status}</td></tr>")
    source = f" (cohort: {_e(cohort)}, this case left out; outliers flagged as `cervicontour validate` does, with n ≥ {MIN_COHORT})" if cohort else ""
    return f"<h2>Volumes{source}</h2><table>{head}{''.join(body)}</table>"


def _findings(findings, rules_label: str) -> str:
    if not findings:
        return f"<h2>Rule findings</h2><p class='ok'>Every rule holds ({_e(rules_label)}).</p>"
    head = "<tr><th>severity</th><th>structure</th><th>check</th><th>expected</th><th>actual</th><th>what to do</th></tr>"
    body = "".join(
        f"<tr><td class='{f.severity.value}'>{_e(f.severity.value)}</td><td>{_e(f.structure or '')}</td><td>{_e(f.check)}</td>"
        f"<td>{_e(f.expected)}</td><td>{_e(f.actual)}</td><td>{_e(f.hint)}</td></tr>"
        for f in findings
    )
    return f"<h2>Rule findings</h2><p class='muted'>rules {_e(rules_label)}</p><table>{head}{body}</table>"


def _history(log: list[dict], planning: list[Path], case_dir: Path) -> str:
    if not log and not planning:
        return ""
    parts = ["<h2>Composition and margins</h2>"]
    if log:
        rows = "".join(
            f"<tr><td>{_e(r.get('when', ''))}</td><td>{_e(r.get('who', ''))}</td><td>{_e(r.get('action', ''))}</td>"
            f"<td>{_e(r.get('note') or _margin_note(r))}</td></tr>"
            for r in log
        )
        parts.append(f"<table><tr><th>when</th><th>who</th><th>what</th><th>detail</th></tr>{rows}</table>")
    for table in planning:
        import csv

        with table.open(newline="", encoding="utf-8") as handle:
            lines = list(csv.reader(handle))
        if not lines:
            continue
        head = "".join(f"<th>{_e(c)}</th>" for c in lines[0])
        body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in line) + "</tr>" for line in lines[1:])
        parts.append(f"<p>OAR overlap, <code>{_e(table.relative_to(case_dir))}</code></p><table><tr>{head}</tr>{body}</table>")
    return "".join(parts)


def _margin_note(record: dict) -> str:
    margin = record.get("margin_mm") or {}
    mm = ", ".join(f"{k} {v:g} mm" for k, v in margin.items()) if isinstance(margin, dict) else str(margin)
    minus = f" minus {', '.join(record.get('subtracted') or [])}" if record.get("subtracted") else ""
    return f"{record.get('target', '')} = {record.get('source', '')} + ({mm}){minus}: {record.get('volume_cc', 0):.1f} cc"
