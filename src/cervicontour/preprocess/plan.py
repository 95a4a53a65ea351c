"""Planning: a cohort fingerprint → ``plan.json`` (working spacing, patch size, CT normalisation, crop).

nnU-Net's recipe, made explicit and small:

* target spacing: the per-axis median of the cohort's spacings (``spacing_rule="median"``), or a
  fixed working spacing (``"fixed"``). With anisotropic data (the coarsest median axis more than
  3× the finest) the coarse axis takes the 10th percentile instead of the median, as nnU-Net does.
* patch size: the median working shape of the body crops, shrunk axis by axis (largest first)
  until the network's activations fit a memory budget, and divisible by the network's total stride.
* CT normalisation: clip to the 0.5/99.5 percentiles of foreground HU (voxels inside any label),
  then z-score with the foreground mean and standard deviation.
* crop: the body (HU above a threshold) plus a margin.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io.atomic import write_text_atomic
from cervicontour.structures import canonical_name

PLAN_VERSION = 1
#: Foreground voxels sampled per case for the intensity fingerprint (nnU-Net samples 10 000).
FOREGROUND_SAMPLES = 10_000


@dataclass(frozen=True)
class Normalization:
    """CT normalisation: ``(clip(hu, lower, upper) - mean) / std``."""

    lower_hu: float
    upper_hu: float
    mean: float
    std: float

    def apply(self, hu: np.ndarray) -> np.ndarray:
        """Float32 normalised copy of ``hu`` (any shape); never modifies ``hu``."""
        out = np.clip(np.asarray(hu, dtype=np.float32), self.lower_hu, self.upper_hu)
        out -= np.float32(self.mean)
        out /= np.float32(max(self.std, 1e-6))
        return out


@dataclass(frozen=True)
class Plan:
    """Everything preprocessing needs, saved as ``plan.json`` beside a model.

    Attributes:
        structures: output channels, in order (canonical names).
        spacing_mm: working spacing along the LPS-reoriented axes (L, P, S).
        spacing_rule: ``"median"`` or ``"fixed"``.
        patch_size: training/inference patch, working voxels per axis.
        normalization: see :class:`Normalization`.
        body_threshold_hu, margin_mm: the body crop.
        fingerprint: what the plan was derived from (spacings, shapes, HU percentiles).
    """

    structures: tuple[str, ...]
    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization: Normalization
    spacing_rule: str = "median"
    body_threshold_hu: float = -500.0
    margin_mm: float = 10.0
    fingerprint: dict = field(default_factory=dict, compare=False)
    version: int = PLAN_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["structures"] = list(self.structures)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        if d.get("version") != PLAN_VERSION:
            raise InputError(f"plan version {d.get('version')!r} is not supported (expected {PLAN_VERSION}); re-plan the cohort")
        return cls(
            structures=tuple(canonical_name(n) for n in d["structures"]),
            spacing_mm=tuple(float(v) for v in d["spacing_mm"]),  # type: ignore[arg-type]
            patch_size=tuple(int(v) for v in d["patch_size"]),  # type: ignore[arg-type]
            normalization=Normalization(**d["normalization"]),
            spacing_rule=d.get("spacing_rule", "median"),
            body_threshold_hu=float(d.get("body_threshold_hu", -500.0)),
            margin_mm=float(d.get("margin_mm", 10.0)),
            fingerprint=d.get("fingerprint", {}),
        )

    def with_structures(self, structures) -> "Plan":
        from dataclasses import replace

        return replace(self, structures=tuple(canonical_name(n) for n in structures))

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def save_plan(plan: Plan, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(plan.to_dict(), indent=2) + "\n")
    return path


def load_plan(path: str | os.PathLike) -> Plan:
    path = Path(path)
    try:
        return Plan.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a readable plan.json ({exc}); run `cervicontour train` to make one") from None


def fingerprint_cohort(cases, structures, *, seed: int = 0) -> dict:
    """Spacings, shapes and foreground HU statistics of labelled cases.

    Args:
        cases: :class:`~cervicontour.cohort.Case` objects with an image and the ``structures``.
        structures: names whose union is the foreground.

    Returns:
        ``{"spacings_mm": [...], "shapes": [...], "foreground_hu": {"p00_5", "p99_5", "mean", "std"}}``
        (percentiles over up to 10 000 sampled foreground voxels per case).
    """
    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], []
    for case in cases:
        image = case.load_image()
        spacings.append(list(image.spacing_mm))
        shapes.append(list(image.shape))
        fg = np.zeros(image.shape, bool)
        for name in structures:
            if case.has(name):
                fg |= case.load_structure(name).array > 0
        values = image.array[fg]
        if values.size:
            samples.append(rng.choice(values, size=min(FOREGROUND_SAMPLES, values.size), replace=False))
    if not spacings:
        raise InputError("cannot plan from zero labelled cases; the cohort needs labelled patients")
    hu = np.concatenate(samples).astype(np.float64) if samples else np.array([-1000.0, 1000.0])
    return {
        "cases": len(spacings),
        "spacings_mm": spacings,
        "shapes": shapes,
        "foreground_hu": {
            "p00_5": float(np.percentile(hu, 0.5)),
            "p99_5": float(np.percentile(hu, 99.5)),
            "mean": float(hu.mean()),
            "std": float(hu.std()),
        },
    }


def target_spacing(spacings_mm: np.ndarray, *, anisotropy: float = 3.0) -> tuple[float, float, float]:
    """Per-axis median spacing; a coarse axis (> ``anisotropy`` × the finest) takes its 10th percentile.

    Example:
        >>> target_spacing(np.array([[1.0, 1.0, 5.0], [0.8, 0.8, 5.0], [1.2, 1.2, 2.0]]))
        (1.0, 1.0, 2.6)
    """
    spacings_mm = np.asarray(spacings_mm, dtype=float)
    target = np.median(spacings_mm, axis=0)
    worst = int(np.argmax(target))
    if target[worst] > anisotropy * target.min():
        target[worst] = np.percentile(spacings_mm[:, worst], 10)
    return tuple(round(float(v), 4) for v in target)  # type: ignore[return-value]


def patch_size_for(shape, *, divisor=(16, 16, 8), budget_voxels: int = 96 * 96 * 48, minimum=(32, 32, 16)) -> tuple[int, int, int]:
    """A patch no larger than ``shape`` (rounded up to ``divisor``) and at most ``budget_voxels``.

    The largest axis is shrunk first (by one divisor step at a time) until the budget holds.

    Example:
        >>> patch_size_for((120, 100, 50), budget_voxels=96 * 96 * 48)
        (80, 96, 56)
    """
    div = np.asarray(divisor)
    low = np.asarray(minimum)
    patch = np.maximum(np.ceil(np.asarray(shape, float) / div).astype(int) * div, low)
    while int(np.prod(patch)) > budget_voxels:
        shrinkable = patch - div >= low
        if not shrinkable.any():
            break
        axis = int(np.argmax(np.where(shrinkable, patch, -1)))
        patch[axis] -= div[axis]
    return tuple(int(v) for v in patch)  # type: ignore[return-value]


def make_plan(
    cohort_cases,
    structures,
    *,
    spacing_mm=None,
    budget_voxels: int = 96 * 96 * 48,
    divisor=(16, 16, 8),
    body_threshold_hu: float = -500.0,
    margin_mm: float = 10.0,
) -> Plan:
    """Plan preprocessing for ``structures`` from labelled cases.

    Args:
        cohort_cases: labelled :class:`~cervicontour.cohort.Case` objects.
        structures: output structures (names or synonyms), in channel order.
        spacing_mm: a fixed working spacing, or ``None`` for the cohort median (see :func:`target_spacing`).
        budget_voxels: largest patch, in voxels (a memory budget).
        divisor: the network's total stride per axis; patch sizes are multiples of it.

    Spacings are taken along the LPS-reoriented axes (so RAS and LPS files agree).
    """
    from cervicontour.preprocess.grid import working_grid_of

    names = tuple(canonical_name(n) for n in structures)
    cases = list(cohort_cases)
    fp = fingerprint_cohort(cases, names)
    lps = []
    crop_mm = []
    for case in cases:
        image = case.load_image()
        order = [int(np.argmax(np.abs(image.direction[w, :]))) for w in range(3)]
        sp = np.asarray([image.spacing_mm[a] for a in order])
        lps.append(sp)
        grid, cropped = working_grid_of(image, sp, body_threshold_hu=body_threshold_hu, margin_mm=margin_mm)
        crop_mm.append(np.asarray(cropped.shape) * sp)
    fp["lps_spacings_mm"] = [list(map(float, s)) for s in lps]
    fp["body_extent_mm"] = [list(map(float, e)) for e in crop_mm]
    if spacing_mm is None:
        rule, spacing = "median", target_spacing(np.asarray(lps))
    else:
        rule, spacing = "fixed", tuple(float(v) for v in spacing_mm)
    median_shape = np.median(np.asarray(crop_mm), axis=0) / np.asarray(spacing)
    hu = fp["foreground_hu"]
    return Plan(
        structures=names,
        spacing_mm=spacing,  # type: ignore[arg-type]
        patch_size=patch_size_for(median_shape, divisor=divisor, budget_voxels=budget_voxels),
        normalization=Normalization(hu["p00_5"], hu["p99_5"], hu["mean"], hu["std"]),
        spacing_rule=rule,
        body_threshold_hu=body_threshold_hu,
        margin_mm=margin_mm,
        fingerprint=fp,
    )
