"""``fit.toml``: every knob of :func:`cervicontour.training.fit` as one frozen dataclass (flat keys)."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from cervicontour.errors import InputError


@dataclass(frozen=True)
class FitConfig:
    """What a fit depends on besides the cohort and the init (stored resolved in ``fit.json``).

    Attributes:
        budget_minutes: wall time for the whole fit (gate, targets, both stages, selection,
            export). Each training stage turns its share into a *step count* when it starts,
            from the speed measured on a few steps, so a resumed stage runs the same steps.
        stage1_share: fraction of the training time left at stage 1's start that stage 1
            gets; the refiner gets what remains after stage 1 and the reserve for selection.
        folds, fold, seed: the validation split (a held-out fold of a seeded permutation of
            the labelled patients; ``folds = 1``: none, which ``fit`` refuses: it must select).
        lr, batch_size, head_prior, strategy: stage 1 (fine-tuning; see :class:`TrainConfig`).
        refiner_lr, refiner_batch_size: the second stage.
        min_steps, max_stage1_steps, max_refiner_steps: floors and caps on the step counts
            (caps make a short fit for tests and demos).
        device, amp, threads: where it runs (CUDA: mixed precision unless ``amp = false``).
    """

    budget_minutes: float = 45.0
    stage1_share: float = 0.6
    folds: int = 5
    fold: int = 0
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 2
    head_prior: float = 0.02
    strategy: str = "full"
    refiner_lr: float = 1e-3
    refiner_batch_size: int = 4
    min_steps: int = 2
    max_stage1_steps: int | None = None
    max_refiner_steps: int | None = None
    device: str = "cpu"
    amp: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.budget_minutes > 0:
            raise InputError(f"budget_minutes must be > 0, got {self.budget_minutes}")
        if not 0 < self.stage1_share < 1:
            raise InputError(f"stage1_share must lie in (0, 1), got {self.stage1_share}")
        if self.folds < 2:
            raise InputError(f"folds must be ≥ 2 (fit selects on held-out patients), got {self.folds}")
        if not 0 <= self.fold < self.folds:
            raise InputError(f"fold {self.fold} is outside 0..{self.folds - 1}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def replace(self, **changes) -> "FitConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_fit_config(path: str | os.PathLike | None = None, **overrides) -> FitConfig:
    """Read ``fit.toml`` (flat keys; unknown keys refused with a suggestion); apply non-None overrides."""
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"{path}: cannot read the fit config ({exc})") from None
    known = {f.name for f in fields(FitConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        import difflib

        hints = [f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, known, 1)) else "") for u in unknown]
        raise InputError(f"{path}: unknown fit config keys {', '.join(hints)}; known: {', '.join(sorted(known))}")
    return FitConfig(**data).replace(**overrides)


__all__ = ["FitConfig", "load_fit_config"]
