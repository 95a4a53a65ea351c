"""What a comparison is asked for (:class:`CompareOptions`) and what each method hands back
(:class:`MethodResult`): shared by :mod:`.compare` (the run and its record) and
:mod:`.compare_methods` (the runners), which imports nothing else of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name


@dataclass(frozen=True)
class CompareOptions:
    """Every knob of a comparison besides the cohorts and the methods.

    Attributes:
        budget_minutes: wall-clock training budget of each method that trains (fit, scratch,
            nnU-Net, UniverSeg); the shipped default, the atlases and MedSAM do not train.
        structures: the structures compared (default: the primary five).
        medsam_structures: MedSAM's structures (default: ``structures``); ~5 s per slice encoded.
        medsam_cases: MedSAM's test cases (default: all).
        medsam_margin_px: margin of MedSAM's boxes, in pixels (2: on the real CT, boxes 2 px outside the
            mask gave a better bladder than tight ones from either source; benchmarks/medsam_real_ct.py).
        atlas_k: atlases fused per case (majority vote, demons). universeg_k: support size.
        threads: torch threads (default: torch's own). device: ``cpu`` or ``cuda``.
        data: what the cohorts are (recorded under ``train.data``), e.g. "synthetic phantom 1, ...".
    """

    budget_minutes: float
    structures: tuple[str, ...] = PRIMARY
    medsam_structures: tuple[str, ...] | None = None
    medsam_cases: tuple[str, ...] | None = None
    medsam_margin_px: int = 2
    atlas_k: int = 5
    universeg_k: int = 4
    threads: int | None = None
    device: str = "cpu"
    data: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "structures", tuple(dict.fromkeys(canonical_name(s) for s in self.structures)))
        if self.medsam_structures is not None:
            object.__setattr__(self, "medsam_structures", tuple(dict.fromkeys(canonical_name(s) for s in self.medsam_structures)))
        if not self.budget_minutes > 0:
            raise InputError(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


@dataclass
class MethodResult:
    """What one method produced: where its predictions are, what it cost, and what to know about it."""

    pred: Path
    train_seconds: float | None
    predict_seconds_per_case: float | None
    notes: str
    extra: dict = field(default_factory=dict)
