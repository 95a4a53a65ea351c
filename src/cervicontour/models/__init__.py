"""Shipped model weights (package data) and their model card.

``default/model.pt`` is trained by ``benchmarks/train_default_model.py`` on synthetic cohorts only;
read ``default/MODEL_CARD.md`` before using it. Not for clinical use.
"""

from __future__ import annotations

from pathlib import Path

from cervicontour.errors import InputError


def default_model_path() -> Path:
    """Path of the packaged default model (``cervicontour/models/default/model.pt``)."""
    path = Path(__file__).parent / "default" / "model.pt"
    if not path.is_file():
        raise InputError(
            f"the default model is not installed ({path} is missing); train one with "
            "`python benchmarks/train_default_model.py` or pass --model RUN"
        )
    return path
