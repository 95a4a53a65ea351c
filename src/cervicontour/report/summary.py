"""Cohort summary table (reads image headers only, never voxel data)."""

from __future__ import annotations

from pathlib import Path

from cervicontour.cohort import Cohort
from cervicontour.structures import PRIMARY
from cervicontour.volume import orientation_code


def image_header(path: Path) -> dict:
    """Size, spacing and orientation code from a NIfTI header (no voxel data read).

    Raises:
        InputError: a header the input gate refuses (see :func:`cervicontour.io.read_nifti_information`).
    """
    from cervicontour.io import read_nifti_information

    size, spacing, direction = read_nifti_information(path)
    return {"size": size, "spacing_mm": spacing, "orientation": orientation_code(direction)}


def cohort_rows(cohort: Cohort) -> list[dict]:
    rows = []
    for case in cohort.cases():
        row = {"patient_id": case.patient_id, "size": "", "spacing_mm": "", "orientation": ""}
        if case.image_path is not None and case.image_path.is_file():
            header = image_header(case.image_path)
            row.update(
                size="×".join(str(n) for n in header["size"]),
                spacing_mm="×".join(f"{s:.3g}" for s in header["spacing_mm"]),
                orientation=header["orientation"],
            )
        names = case.structure_names
        present = [n for n in PRIMARY if n in names]
        missing = [n for n in PRIMARY if n not in names]
        row["primary"] = "hold-out" if not names else f"{len(present)}/{len(PRIMARY)}" + (
            f" (no {', '.join(missing)})" if missing else "")
        row["sub_structures"] = len([n for n in names if n not in PRIMARY])
        row["note"] = case.note
        rows.append(row)
    return rows


def cohort_table(cohort: Cohort):
    """A rich Table: one row per patient."""
    from rich.table import Table

    table = Table(title=f"{cohort.root} — {len(cohort.labelled())} labelled, {len(cohort.holdout())} hold-out")
    rows = cohort_rows(cohort)
    headers = {"patient_id": "patient", "size": "size", "spacing_mm": "spacing mm", "orientation": "orient",
               "primary": "targets", "sub_structures": "subs", "note": "note"}
    for key, header in headers.items():
        table.add_column(header, no_wrap=key != "note", ratio=1 if key == "note" else None)
    for row in rows:
        table.add_row(*(str(row[key]) for key in headers))
    return table
