"""`cervicontour baseline ...`: the baselines' thin front ends, gathered under one Typer group.

Each front end imports only typer at module level, so ``cervicontour --help`` stays instant.
"""

from __future__ import annotations

import typer

from cervicontour.baselines import atlas_cli, nnunet_cli, totalseg_cli, universeg_cli

app = typer.Typer(
    no_args_is_help=True,
    help="Baselines on the same cases and metrics: nnU-Net v2, TotalSegmentator (rule CTVn), UniverSeg-style, multi-atlas.",
)
app.add_typer(nnunet_cli.app, name="nnunet", help="nnU-Net v2: region-based export of overlapping structures, import, run.")
app.add_typer(universeg_cli.app, name="universeg", help="UniverSeg-style 2D in-context segmentation: meta-train, predict.")
app.command("totalseg")(totalseg_cli.totalseg)
app.command("atlas")(atlas_cli.atlas)
