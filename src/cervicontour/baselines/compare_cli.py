"""`cervicontour compare`: the thin front end of :func:`cervicontour.baselines.compare.compare` (typer only at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def compare(
    train: Path = typer.Option(..., "--train", help="Labelled cohort the methods train on (also the atlases and UniverSeg's support)."),
    test: Path = typer.Option(..., "--test", help="Labelled cohort never trained on: every method predicts it, scored against its masks."),
    out: Path = typer.Option(..., "--out", help="Folder: comparison.json/.md/.png and methods/<name>/ (run again to resume)."),
    budget_minutes: float = typer.Option(..., "--budget-minutes", help="Wall-clock training budget of each method that trains."),
    methods: str = typer.Option("default,fit,scratch,atlas", "--methods",
                                help="Comma list of default, fit, scratch, nnunet, atlas, universeg, medsam-oracle, medsam-auto."),
    use: list[str] = typer.Option([], "--use", help="NAME=DIR: score an existing run (predictions folder or trained model) instead of training. Repeatable."),
    structures: str = typer.Option("Bladder,Anorectum,CTVn,CTVp,Parametrium", "--structures", help="The structures compared."),
    medsam_structures: Optional[str] = typer.Option(None, "--medsam-structures", help="MedSAM only on these (~5 s per slice encoded); default: --structures."),
    medsam_cases: Optional[str] = typer.Option(None, "--medsam-cases", help="MedSAM only on these test patients (comma list); default: all."),
    medsam_margin_px: int = typer.Option(2, "--medsam-margin-px", min=0, help="Margin of MedSAM's boxes, pixels (0: the mask's own box)."),
    atlas_k: int = typer.Option(5, "--atlas-k", min=1, help="Atlases fused per case."),
    universeg_k: int = typer.Option(4, "--universeg-k", min=1, help="UniverSeg support slices."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch threads (default: torch's)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    data: str = typer.Option("", "--data", help="What the cohorts are, recorded with the results, e.g. 'synthetic phantom 1, seeds 2002/3003, default convention'."),
) -> None:
    """Train and score several methods on the same unseen test cases: comparison.json, a table and a figure."""
    import time

    from cervicontour.baselines.compare import CompareOptions, compare as run_compare, parse_methods
    from cervicontour.cli_common import fail as _fail
    from cervicontour.cli_common import guard as _guard

    chosen = _guard(parse_methods, methods)
    uses = {}
    for item in use:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            _fail(f"--use {item!r}: expected NAME=DIR, e.g. --use nnunet=out/nnunet_long")
        uses[name.strip()] = Path(folder.strip())
    options = _guard(CompareOptions, budget_minutes=budget_minutes, structures=_names(structures), medsam_structures=_names(medsam_structures),
                     medsam_cases=_names(medsam_cases), medsam_margin_px=medsam_margin_px, atlas_k=atlas_k, universeg_k=universeg_k,
                     threads=threads, device=device, data=data)  # fmt: skip
    _guard(run_compare, train, test, out, methods=chosen, options=options, use=uses,
           on_event=lambda line: typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}", err=True))  # fmt: skip
    typer.echo((out / "comparison.md").read_text())
    typer.echo(f"wrote {out / 'comparison.json'}, {out / 'comparison.md'}, {out / 'comparison.png'}")
