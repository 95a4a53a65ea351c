"""Training configuration: one frozen dataclass, every knob a field, loadable from TOML, hashed."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name

STRATEGIES = ("full", "frozen-encoder", "discriminative-lr")


def source_structures() -> tuple[str, ...]:
    """The source task of ``cervicontour pretrain``: every anatomy label of the vocabulary plus
    Bladder (a TotalSegmentator-like task: bones, vessels, muscles, bowel, kidneys, body)."""
    from cervicontour.structures import STRUCTURES, Role

    return ("Bladder", *(s.name for s in STRUCTURES.values() if s.role is Role.ANATOMY))


@dataclass(frozen=True)
class Augmentation:
    """Per-sample probabilities and ranges (nnU-Net's defaults, trimmed for a CPU)."""

    rotation_p: float = 0.2
    rotation_deg: float = 15.0
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.85, 1.15)
    elastic_p: float = 0.1
    elastic_voxels: float = 2.0
    gamma_p: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_p: float = 0.15
    noise_std: float = 0.1
    brightness_p: float = 0.15
    contrast_p: float = 0.15
    lowres_p: float = 0.2
    lowres_range: tuple[float, float] = (1.0, 2.0)
    mirror_axes: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (the run directory stores it resolved, with its hash).

    Attributes:
        structures: output channels (canonical names), one sigmoid each.
        network: architecture preset (see :data:`cervicontour.networks.network.PRESETS`).
        spacing_mm: fixed working spacing, or ``None`` for the cohort median (plan).
        patch_budget_voxels: largest training patch (the plan fits the patch to it).
        patch_size: a fixed patch instead (rounded up to the network's stride); also overrides
            a transfer source's patch, so that scratch and transfer runs can cost the same.
        head_prior: the new segmentation head starts predicting this foreground probability
            everywhere (bias ``log(p / (1 - p))``, as RetinaNet does) instead of 0.5, which
            saves the first few hundred steps of a short CPU run.
        batch_size, steps, lr, weight_decay, seed: the optimisation (AdamW, poly LR decay 0.9).
        fg_oversample: fraction of patches centred on a foreground voxel.
        soft_labels: train on partial-volume targets — each working voxel's fraction inside the
            contour (linear resampling of the binary mask, kept as a fraction) — instead of that
            fraction thresholded at 0.5. Thin structures (the 7 mm CTVn shell is ~2 working
            voxels thick) lose least on the way back to the input grid.
        val_every, checkpoint_every: in steps; ``val_cases`` caps how many validation cases are scored.
        fold, folds: cross-validation split of the labelled cases (``folds=1``: no validation).
        strategy: transfer-learning strategy (``full``, ``frozen-encoder``, ``discriminative-lr``).
        encoder_lr_factor: encoder learning-rate multiplier for ``discriminative-lr``.
        max_minutes: stop after this much training time (``None``: run all steps).
        lr_schedule: ``"steps"`` decays the learning rate (poly 0.9) over ``steps``; ``"time"``
            decays it over whichever ends first, ``steps`` or ``max_minutes`` of training time — for
            a machine whose speed is not known ahead (a lent GPU): the run ends with a decayed
            rate however many steps fit. Not bit-reproducible (the step at which time runs out
            varies); ``"steps"`` on CPU is.
        device: ``cpu`` or ``cuda``; ``amp``: mixed precision on CUDA (ignored on CPU).
        threads: CPU threads (``None``: torch default).
        unlabelled_ok: channels allowed to have no label in any training patient (left out of
            the loss: their head rows stay as transferred). Anything else without a label is
            refused, since it would train on nothing.
    """

    structures: tuple[str, ...] = PRIMARY
    network: str = "cpu-small"
    spacing_mm: tuple[float, float, float] | None = None
    patch_budget_voxels: int = 64 * 64 * 32
    patch_size: tuple[int, int, int] | None = None
    head_prior: float = 0.02
    batch_size: int = 2
    steps: int = 1000
    lr: float = 3e-3
    weight_decay: float = 3e-5
    seed: int = 0
    fg_oversample: float = 0.5
    soft_labels: bool = False
    val_every: int = 100
    val_cases: int = 4
    checkpoint_every: int = 25
    fold: int = 0
    folds: int = 5
    strategy: str = "full"
    encoder_lr_factor: float = 0.1
    max_minutes: float | None = None
    lr_schedule: str = "steps"
    device: str = "cpu"
    amp: bool = True
    threads: int | None = None
    augmentation: Augmentation = field(default_factory=Augmentation)
    unlabelled_ok: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "structures", tuple(canonical_name(n) for n in self.structures))
        object.__setattr__(self, "unlabelled_ok", tuple(canonical_name(n) for n in self.unlabelled_ok))
        if self.strategy not in STRATEGIES:
            raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not 0 <= self.fold < max(self.folds, 1):
            raise InputError(f"fold {self.fold} is outside 0..{self.folds - 1} (folds={self.folds})")
        if self.lr_schedule not in ("steps", "time"):
            raise InputError(f"lr_schedule must be 'steps' or 'time', got {self.lr_schedule!r}")
        if self.lr_schedule == "time" and self.max_minutes is None:
            raise InputError("lr_schedule 'time' decays the learning rate over max_minutes: set max_minutes (--max-minutes) too")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        if not 0 < self.head_prior < 1:
            raise InputError(f"head_prior must lie in (0, 1), got {self.head_prior}")
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        if isinstance(self.augmentation, dict):
            object.__setattr__(self, "augmentation", _aug_from_dict(self.augmentation))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["structures"] = list(self.structures)
        d["unlabelled_ok"] = list(self.unlabelled_ok)
        if not d["unlabelled_ok"]:
            del d["unlabelled_ok"]  # configs without it keep their hash
        return d

    def sha256(self) -> str:
        """Hash of the resolved configuration (key order and float formatting normalised)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _aug_from_dict(d: dict) -> Augmentation:
    known = {f.name for f in fields(Augmentation)}
    unknown = set(d) - known
    if unknown:
        raise InputError(f"unknown augmentation keys {sorted(unknown)}; known: {sorted(known)}")
    return Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def config_from_dict(d: dict, *, source: str = "<memory>") -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(d) - known
    if unknown:
        import difflib

        hints = [f"{u!r} (did you mean {difflib.get_close_matches(u, known, 1)[0]!r}?)" if difflib.get_close_matches(u, known, 1) else repr(u) for u in sorted(unknown)]
        raise InputError(f"{source}: unknown config keys {', '.join(hints)}")
    values = {k: tuple(v) if isinstance(v, list) and k != "augmentation" else v for k, v in d.items()}
    return TrainConfig(**values)


def load_config(path: str | os.PathLike | None = None, **overrides) -> TrainConfig:
    """Read a TOML config (flat keys plus an optional ``[augmentation]`` table); apply overrides.

    ``None`` overrides are ignored, so CLI options left unset keep the file's values.
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"{path}: cannot read the training config ({exc})") from None
    config = config_from_dict(data, source=str(path or "<defaults>"))
    return config.replace(**overrides)


def to_toml(config: TrainConfig) -> str:
    """The resolved config as TOML (what the run directory stores as ``config.toml``)."""
    lines = [f"# resolved training config, sha256 {config.sha256()}"]
    aug = None
    for key, value in config.to_dict().items():
        if key == "augmentation":
            aug = value
            continue
        if value is None:
            lines.append(f"# {key} = (unset)")
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("\n[augmentation]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in (aug or {}).items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)
