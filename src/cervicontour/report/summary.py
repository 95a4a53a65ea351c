"""Cohort summary table (reads image headers only, never voxel data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cervicontour.cohort import Cohort
from cervicontour.structures import PRIMARY
from cervicontour.volume import orientation_code


def image_header(path: Path) -> dict:
    """Size, spacing and orientation code from a NIfTI header (no voxel data read)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {
        "size": reader.GetSize(),
        "spacing_mm": reader.GetSpacing(),
        "orientation": orientation_code(np.asarray(reader.GetDirection()).reshape(3, 3)),
    }


def cohort_rows(cohort: Cohort) -> list[dict]:
    rows = []
    for case in cohort.cases():
        row = {"patient_id": case.patient_id, "size": "", "spacing_mm": "", "orientation": ""}
        if case.image_path is not None and case.image_path.is_file():
            header = image_header(case.image_path)
            row.update(
                size="×".join(str(n) for n in header["size"]),
                spacing_mm=" × ".join(f"{s:.3g}" for s in header["spacing_mm"]),
                orientation=header["orientation"],
            )
        names = case.structure_names
        row["primary"] = " ".join(n for n in PRIMARY if n in names) if names else "hold-out"
        row["sub_structures"] = len([n for n in names if n not in PRIMARY])
        row["note"] = case.note
        rows.append(row)
    return rows


def cohort_table(cohort: Cohort):
    """A rich Table: one row per patient."""
    from rich.table import Table

    table = Table(title=f"{cohort.root} — {len(cohort.labelled())} labelled, {len(cohort.holdout())} hold-out")
    rows = cohort_rows(cohort)
    for column in ("patient_id", "size", "spacing_mm", "orientation", "primary", "sub_structures", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("patient_id", "size", "spacing_mm", "orientation", "primary",
                                                "sub_structures", "note")))
    return table
