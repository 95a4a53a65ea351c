"""`compose`, `margin`, `review`, `decide`: the clinician's choices, the review page and the decision log."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard
from cervicontour.cli_common import reviewer_name as _who


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
    from cervicontour.contours.compose import compose_case

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

    from cervicontour.contours.margin import margin_case
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
