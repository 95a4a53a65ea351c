"""`demo` and `predict`: drafts for new CTs (NIfTI, DICOM or a cohort), with their record and report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli.data import synth
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard
from cervicontour.cli_common import reviewer_name as _who


@app.command()
def demo(
    out: Path = typer.Argument(Path("out/demo"), help="Folder for the demo cohort and outputs."),
    patients: int = typer.Option(4, "--patients", min=1, help="Synthetic test patients (labelled, held out from training)."),
    seed: int = typer.Option(4242, "--seed", help="Cohort seed (the default model never saw seed 4242)."),
    model: str = typer.Option("default", "--model", help="'default' (shipped), a run directory or a model.pt."),
) -> None:
    """End to end: synthesise a small cohort, predict it with the default model, evaluate, report."""
    import shutil

    from rich.console import Console
    from rich.table import Table

    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize, write_csv
    from cervicontour.metrics.summary import SUMMARY_COLUMNS
    from cervicontour.inference.cohort import predict as run_predict
    from cervicontour.progress import progress
    from cervicontour.report.metrics_report import write_metrics_report

    cohort_dir, pred_dir = out / "cohort", out / "predictions"
    for folder in (cohort_dir, pred_dir):
        if folder.exists():
            shutil.rmtree(folder)
    synth(cohort_dir, patients=patients, holdout=0, seed=seed, size="small", preview=False, phantom=None, style=None, primary_only=False)
    with progress() as show:
        written = _guard(run_predict, cohort_dir, pred_dir, model=model, all_cases=True, on_case=show.counter("predicting patients", patients))
    typer.echo(f"predicted {len(written)} patients from their CT alone into {pred_dir}")
    typer.echo("CTVn: the default nodal groups (no para-aortic extension, a clinical choice the CT does not show); "
               "patients whose reference CTVn includes para-aortic nodes score lower (`predict --para-aortic`).")
    settings = EvaluationSettings(tolerances_mm=(2.0, 5.0))
    with progress() as show:
        result = _guard(evaluate_cohort, cohort_dir, pred_dir, settings=settings, on_progress=lambda done, total: show("evaluating patients", done, total))
    summary = summarize(result.rows, result.metric_columns)
    write_csv(result.rows, result.columns, out / "metrics.csv")
    write_csv(summary, SUMMARY_COLUMNS, out / "metrics_summary.csv")
    table = Table(title=f"default model on {patients} fresh synthetic patients (seed {seed}; synthetic data, not clinical)")
    for column in ("structure", "Dice (mean)", "HD95 mm (mean)", "volume diff cc (mean)"):
        table.add_column(column)
    by = {(r["structure"], r["metric"]): r for r in summary}
    names = list(dict.fromkeys(r["structure"] for r in result.rows))
    for name in names:
        cell = lambda m: f"{by[(name, m)]['mean']:.3f}" if (name, m) in by else "-"  # noqa: E731
        table.add_row(name, cell("dice"), cell("hd95_mm"), cell("volume_diff_cc"))
    Console().print(table)
    html = write_metrics_report(result.rows, result.metric_columns, out / "report.html", columns=result.columns, notes=[f"synthetic cohort seed {seed}, model {model}"])
    typer.echo(f"report: {html}\nmetrics: {out / 'metrics.csv'}")



@app.command()
def predict(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="A NIfTI CT, a DICOM series folder, or a cohort folder."),
    out: Path = typer.Option(..., "--out", help="Output folder: OUT/<patient_id>/structures/<Name>.nii.gz + prediction.json."),
    model: str = typer.Option("default", "--model", help="'default' (shipped), a run directory or a model.pt."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation (left-right mirror; 2x slower)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    all_cases: bool = typer.Option(False, "--all", help="For a cohort: every patient (default: the hold-out ones, or all if none)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write probability maps (percent, uint8)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML enforced on the predictions (default: the clinicians' rules)."),
    rtstruct: bool = typer.Option(False, "--rtstruct", help="Also write OUT/<patient_id>/RS.dcm referencing the input DICOM series, or, for a NIfTI input, the CT written as a DICOM series in OUT/<patient_id>/CT."),
    report: bool = typer.Option(False, "--report", help="Also write the per-case QA report (OUT/<patient_id>/report/index.html)."),
    nodal_groups: Optional[str] = typer.Option(
        None, "--nodal-groups",
        help="CTVn = union of these predicted groups (models that predict LN_* groups): default GTVn,LN_CommonIliac,LN_Pelvic; "
        "'reference' = the groups each labelled cohort case's own contours include.",
    ),
    para_aortic: bool = typer.Option(False, "--para-aortic", help="Extend CTVn with the para-aortic nodes (adds LN_ParaAortic to the groups)."),
    who: Optional[str] = typer.Option(None, "--who", help="Who chooses the nodal groups (logged in each case's compose_log.jsonl; default: the login name)."),
    force: bool = typer.Option(False, "--force", help="Predict an image the input gate finds implausible (slice count, HU range, empty body, DICOM Modality not CT) when you know it is a CT in HU; the case is flagged out of scope. Non-finite values and unreadable files are never forced."),
    patient_id: Optional[str] = typer.Option(None, "--patient-id", help="Name of the case for a single NIfTI CT or DICOM series (default: the file's stem, the case folder's name, or the series' PatientID)."),
) -> None:
    """Draft contours on the input's exact grid, rules enforced, with a prediction.json per case.

    All or nothing: every case is written to a staging folder and moved into --out at the end; an
    image the input gate refuses (exit 2) leaves --out as it was.
    """

    from rich.console import Console

    from cervicontour.export.provenance import read_prediction_record
    from cervicontour.inference.cohort import find_inputs, predict as run_predict
    from cervicontour.report.deliver import deliver_case
    from cervicontour.progress import progress

    from cervicontour.structures import DEFAULT_NODAL_GROUPS
    from cervicontour.rules import load_rules

    loaded_rules = _guard(load_rules, rules)
    cases = _guard(find_inputs, input_path, all_cases=all_cases, patient_id=patient_id)
    groups = None
    if nodal_groups == "reference":
        if para_aortic:
            _fail("--para-aortic and --nodal-groups reference contradict each other: the reference decides")
        groups = "reference"
    elif nodal_groups is not None or para_aortic:
        # parsed, canonicalised and de-duplicated by contours.compose.parse_parts in inference
        groups = [*(nodal_groups.split(",") if nodal_groups else DEFAULT_NODAL_GROUPS), *(["LN_ParaAortic"] if para_aortic else [])]
    with progress() as show:
        written = _guard(
            run_predict, input_path, out, model=model, tta=tta, device=device, rules=loaded_rules,
            all_cases=all_cases, save_probabilities=probabilities, nodal_groups=groups, force=force, who=_who(who), patient_id=patient_id,
            on_case=show.counter("predicting cases", len(cases)),
        )  # fmt: skip
    console = Console()
    for path in written:
        record = read_prediction_record(path.parent)
        flagged = ", ".join(record.review_closely) or "none"
        console.print(f"{record.patient_id}: {path.parent} ({record.timings_s['total_case']:.1f} s, {len(record.rule_changes)} rule changes, review closely: {flagged})", highlight=False)
        for reason in record.out_of_scope:
            console.print(f"  [bold red]outside what this model was made for:[/] {reason}", highlight=False)
        if not (rtstruct or report):
            continue
        source = Path(record.input.path)
        cohort = input_path if input_path.is_dir() and not source.samefile(input_path) else None
        done = _guard(deliver_case, path.parent, rtstruct=rtstruct, report=report, cohort=cohort, rules=loaded_rules)
        if done.rtstruct:
            written_series = f"the NIfTI CT written as DICOM in {done.series_written}" if done.series_written else f"series in {source}"
            console.print(f"  RTSTRUCT: {done.rtstruct} (AUTOMATIC, references {written_series})", highlight=False)
        if done.report:
            console.print(f"  report: {done.report}", highlight=False)
