"""`rtstruct export|import`, `export-dicom`, `dicom-to-cohort`: the planning system's DICOM both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard


rtstruct_app = typer.Typer(no_args_is_help=True, help="DICOM RT Structure Sets: export drafts for planning, import a clinic's contours.")
app.add_typer(rtstruct_app, name="rtstruct")


@rtstruct_app.command("export")
def rtstruct_export(
    series: Path = typer.Option(..., "--series", help="Folder of the CT series' slice files the contours are drawn on."),
    masks: Path = typer.Option(..., "--masks", help="A case folder, its structures/ folder, or a predict output for that patient."),
    out: Path = typer.Option(..., "--out", help="RTSTRUCT file to write (e.g. RS.dcm)."),
    generation: Optional[str] = typer.Option(None, "--generation", help="AUTOMATIC | SEMIAUTOMATIC | MANUAL (default: AUTOMATIC with a prediction.json, else MANUAL)."),
    series_uid: Optional[str] = typer.Option(None, "--series-uid", help="SeriesInstanceUID when the folder holds several series."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file (refused otherwise)."),
    label_names: Optional[str] = typer.Option(None, "--label-names", help="Names of a label map's values, e.g. 1=Bladder,2=Anorectum (default label_<n>)."),
) -> None:
    """Write the masks as a DICOM RT Structure Set referencing the CT series.

    A label map (one file with values 0..N) becomes one ROI per label. The series must carry the
    Study, Series and SOP Instance UIDs and the Frame of Reference UID the references need.
    """
    from cervicontour.export.rtstruct import export_case
    from cervicontour.progress import working

    names = {}
    for item in (label_names or "").split(","):
        if item.strip():
            value, sep, name = item.partition("=")
            if not sep or not value.strip().isdigit() or not name.strip():
                _fail(f"--label-names: {item!r}; expected VALUE=NAME pairs, e.g. 1=Bladder,2=Anorectum")
            names[int(value)] = name.strip()
    with working("writing the RTSTRUCT"):
        result = _guard(export_case, series, masks, out, generation=generation, series_uid=series_uid, overwrite=overwrite, label_names=names)
    for roi in result.rois:
        typer.echo(f"ROI {roi.number} {roi.name} ({roi.interpreted_type or 'no type'}): {roi.contours} contours on {roi.slices} slices, {roi.volume_cc:.1f} cc")
    for line in result.skipped:
        typer.echo(f"skipped: {line}", err=True)
    typer.echo(f"wrote {result.path}")


@rtstruct_app.command("import")
def rtstruct_import(
    series: Path = typer.Option(..., "--series", help="Folder of the CT series the structure set was drawn on."),
    rtstruct: Path = typer.Option(..., "--rtstruct", help="The RT Structure Set file."),
    out: Path = typer.Option(..., "--out", help="New case folder, e.g. COHORT/<patient_id>."),
    series_uid: Optional[str] = typer.Option(None, "--series-uid", help="SeriesInstanceUID when the folder holds several series."),
    allow_empty: bool = typer.Option(False, "--allow-empty", help="Import although some ROIs' contours lie outside the image (listed, not written; a warning)."),
) -> None:
    """Rasterise every ROI onto the CT grid and write a cohort case (image + structures).

    An ROI whose contours cover no voxel of the CT (another series or frame of reference) is an
    error naming it, unless --allow-empty.
    """
    from cervicontour.export.rtstruct_import import import_rtstruct_case
    from cervicontour.progress import working

    with working("rasterising the structure set"):
        case = _guard(import_rtstruct_case, series, rtstruct, out, series_uid=series_uid, allow_empty=allow_empty)
    for name, roi in case.structures.items():
        typer.echo(f"{name} <- {roi!r}")
    for stem, roi in case.other.items():
        typer.echo(f"structures/other/{stem} <- {roi!r} (not a vocabulary name)")
    for roi, why in case.not_rasterised.items():
        typer.echo(f"not rasterised: {roi!r}: {why}", err=True)
    typer.echo(f"wrote {case.folder} ({len(case.structures)} structures; notes in {case.folder / 'import.json'})")


@app.command("export-dicom")
def export_dicom_command(
    case: Path = typer.Argument(..., help="A cohort case folder (CASE/image.nii.gz) or a NIfTI CT file."),
    out: Path = typer.Option(..., "--out", help="Series folder to write (new or empty): one CT_<nnnn>.dcm per slice."),
    patient_id: Optional[str] = typer.Option(None, "--patient-id", help="DICOM PatientID (default: the case id: the case folder's name or the file's stem)."),
    patient_name: Optional[str] = typer.Option(None, "--patient-name", help="DICOM PatientName, e.g. Doe^Jane (default: the patient id)."),
    patient_position: str = typer.Option("", "--patient-position", help="DICOM PatientPosition (HFS, FFS, HFP, FFP, ...); a NIfTI does not record it (default: empty)."),
    force: bool = typer.Option(False, "--force", help="Export an image the input gate finds implausible as a CT (slice count, HU range, empty body)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a series folder written before (a folder of .dcm files only)."),
) -> None:
    """Write a NIfTI CT as a DICOM CT series (exact geometry and HU, UIDs stable per case), for an RTSTRUCT to reference.

    Then: cervicontour rtstruct export --series OUT --masks CASE --out RS.dcm
    """
    from cervicontour.export.ct_series import export_dicom
    from cervicontour.progress import working

    with working("writing the DICOM series"):
        result = _guard(export_dicom, case, out, patient_id=patient_id, patient_name=patient_name, patient_position=patient_position,
                        force=force, overwrite=overwrite)  # fmt: skip
    typer.echo(f"wrote {result.slices} CT slices ({result.orientation}, RescaleIntercept {result.rescale_intercept}) for patient "
               f"{result.patient_id} to {result.folder}\nStudyInstanceUID {result.study_uid}\nSeriesInstanceUID {result.series_uid}")
    if result.rounded_hu:
        typer.echo(f"note: the CT held non-integer values; rounded to whole HU (largest change {result.rounded_hu:.3f} HU)", err=True)


@app.command("dicom-to-cohort")
def dicom_to_cohort_command(
    source: Path = typer.Argument(..., help="Folder with one sub-folder per patient, each holding a CT series and its RTSTRUCT."),
    out: Path = typer.Argument(..., help="Cohort folder to write (patients already in it are refused)."),
) -> None:
    """Import a clinic's DICOM export (CT + RTSTRUCT per patient) as a training cohort. Exit 1 if a patient failed."""
    from cervicontour.export.dicom_cohort import dicom_to_cohort
    from cervicontour.progress import progress

    with progress() as show:
        result = _guard(dicom_to_cohort, source, out, on_patient=show.counter("importing patients"))
    for patient in result.patients:
        if patient.case is None:
            typer.echo(f"{patient.patient_id}: not imported: {patient.problem}", err=True)
        else:
            typer.echo(f"{patient.patient_id}: {', '.join(patient.case.structures) or 'no vocabulary structures'}"
                       + (f"; {len(patient.case.other)} kept under structures/other" if patient.case.other else ""))
        for note in patient.notes:
            typer.echo(f"  note: {note}", err=True)
    typer.echo(f"imported {len(result.imported)} of {len(result.patients)} patients into {out}")
    raise typer.Exit(1 if result.failed else 0)
