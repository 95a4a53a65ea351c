"""Safety margins: an exact ellipsoidal expansion in world millimetres (CTV → PTV).

A voxel centre ``x`` is in the expanded structure when some voxel centre ``y`` of the structure
satisfies ``(dx/m_LR)² + (dy/m_AP)² + (dz/m_SI)² ≤ 1`` with ``d = x − y`` in patient (LPS) mm:
the Minkowski sum of the voxel centres with an ellipsoid whose semi-axes are the left-right,
antero-posterior and supero-inferior margins. Scaling each world axis by ``1 / m`` turns this into
"Euclidean distance ≤ 1", which :func:`scipy.ndimage.distance_transform_edt` computes exactly on the
anisotropic grid (its ``sampling`` is the scaled spacing) — no structuring-element approximation.

A zero margin along an axis expands only within planes perpendicular to it. On an oblique grid
only an isotropic margin is exact (the world axes are not grid axes); anisotropic ones are refused.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import STRUCTURES, Role, canonical_name
from cervicontour.volume import Volume, is_oblique

AXES = ("left-right", "antero-posterior", "supero-inferior")
#: Organs at risk listed in the overlap table when the case has them (besides role OAR).
PELVIC_OARS = ("Bowel_Small", "Colon_Sigmoid", "Femur_Head_L", "Femur_Head_R", "Kidney_L", "Kidney_R")
_NO_MARGIN = 1e9  # scaled spacing along a zero-margin axis: any step along it is "too far"


def parse_margin(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"10"`` → (10, 10, 10); ``"10,10,5"`` → (LR, AP, SI) mm; all ≥ 0.

    Example:
        >>> parse_margin("10,8,5")
        (10.0, 8.0, 5.0)
    """
    values = [v.strip() for v in text.split(",")] if isinstance(text, str) else list(text)
    try:
        numbers = [float(v) for v in values if str(v) != ""]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3 or not all(np.isfinite(n) and n >= 0 for n in numbers):
        raise InputError(
            f"margin {text!r}: expected one number or three comma-separated numbers in mm "
            "(left-right, antero-posterior, supero-inferior), each >= 0, e.g. 10,10,5"
        )
    return tuple(numbers)  # type: ignore[return-value]


def expand(mask: Volume, margin_mm: tuple[float, float, float]) -> Volume:
    """Expand a binary mask by an ellipsoidal margin given along the patient's axes.

    Args:
        mask: binary Volume (non-zero = inside), any orientation. Not modified.
        margin_mm: ``(left-right, antero-posterior, supero-inferior)`` semi-axes in mm, ≥ 0.

    Returns:
        A binary uint8 Volume on the same grid. The expansion stops at the grid's edge (use
        :func:`clipped_at_edge` to know whether it would have gone further). An empty mask stays
        empty; a zero margin returns a copy.

    Raises:
        InputError: negative margins, or anisotropic margins on an oblique grid.

    Example:
        >>> box = np.zeros((9, 9, 9), np.uint8); box[4, 4, 4] = 1
        >>> int(expand(Volume(box, (1.0, 1.0, 2.0)), (2.0, 2.0, 2.0)).array.sum())  # 2 mm ball on 1×1×2 mm
        15
    """
    margin = np.asarray(parse_margin(margin_mm), float)
    inside = np.asarray(mask.array) != 0
    if not inside.any() or not margin.any():
        return mask.with_array(inside.astype(np.uint8))
    sampling = _scaled_sampling(mask, margin)
    reach = _reach_voxels(mask, margin)
    lo = np.maximum(np.argwhere(inside).min(axis=0) - reach, 0)
    hi = np.minimum(np.argwhere(inside).max(axis=0) + reach + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~inside[box], sampling=sampling)
    out = np.zeros(mask.shape, np.uint8)
    out[box] = distance <= 1.0 + 1e-9
    return mask.with_array(out)


def _world_axis_of(mask: Volume) -> np.ndarray:
    """For each array axis, the world axis (0 = x/LR, 1 = y/AP, 2 = z/SI) it runs along."""
    return np.argmax(np.abs(mask.direction), axis=0)


def _scaled_sampling(mask: Volume, margin: np.ndarray) -> tuple[float, float, float]:
    if is_oblique(mask.direction):
        if np.ptp(margin) > 1e-9:
            raise InputError(
                f"anisotropic margin {tuple(margin)} mm on an oblique grid ({mask!r}): the patient's axes "
                "are not grid axes, so the expansion would not be exact; resample to an axis-aligned grid "
                "or use an isotropic margin"
            )
        return tuple(float(s / margin[0]) for s in mask.spacing_mm)  # type: ignore[return-value]
    per_axis = margin[_world_axis_of(mask)]
    return tuple(float(s / m) if m > 0 else _NO_MARGIN for s, m in zip(mask.spacing_mm, per_axis))  # type: ignore[return-value]


def _reach_voxels(mask: Volume, margin: np.ndarray) -> np.ndarray:
    """Whole voxels the expansion can reach along each array axis (a voxel exactly m away is in)."""
    per_axis = margin[_world_axis_of(mask)] if not is_oblique(mask.direction) else np.full(3, margin.max())
    return np.floor(per_axis / np.asarray(mask.spacing_mm) + 1e-6).astype(int)


def clipped_at_edge(mask: Volume, margin_mm: tuple[float, float, float]) -> bool:
    """True when the expansion of ``mask`` would reach beyond its grid (the PTV is cut off there)."""
    inside = np.asarray(mask.array) != 0
    if not inside.any():
        return False
    reach = _reach_voxels(mask, np.asarray(parse_margin(margin_mm), float))
    where = np.argwhere(inside)
    return bool(np.any(where.min(axis=0) - reach < 0) or np.any(where.max(axis=0) + reach >= mask.shape))


@dataclass(frozen=True)
class OverlapRow:
    """How much of an organ at risk lies inside the expanded structure."""

    structure: str
    oar_cc: float
    overlap_cc: float

    @property
    def percent(self) -> float:
        """Percent of the OAR inside; NaN for an empty OAR."""
        return 100.0 * self.overlap_cc / self.oar_cc if self.oar_cc > 0 else float("nan")


def overlap_table(expanded: Volume, oars: Mapping[str, Volume]) -> list[OverlapRow]:
    """cc and % of each OAR inside ``expanded`` (all on one grid), in the order given.

    Example:
        >>> a = Volume(np.ones((2, 2, 2), np.uint8), (10.0, 10.0, 10.0))
        >>> half = a.with_array(np.pad(np.ones((1, 2, 2), np.uint8), ((0, 1), (0, 0), (0, 0))))
        >>> row = overlap_table(half, {"Bladder": a})[0]
        >>> row.overlap_cc, row.percent
        (4.0, 50.0)
    """
    inside = np.asarray(expanded.array) != 0
    rows = []
    for name, oar in oars.items():
        if not expanded.same_grid(oar):
            raise InputError(f"{name} is not on the grid of the expanded structure ({'; '.join(expanded.grid_differences(oar))})")
        organ = np.asarray(oar.array) != 0
        vcc = expanded.voxel_volume_cc
        rows.append(OverlapRow(name, float(organ.sum()) * vcc, float((organ & inside).sum()) * vcc))
    return rows


@dataclass(frozen=True)
class MarginResult:
    """What :func:`margin_case` wrote and measured."""

    source: str
    target: str
    margin_mm: tuple[float, float, float]
    subtracted: tuple[str, ...]
    source_cc: float
    volume_cc: float
    clipped: bool
    overlaps: tuple[OverlapRow, ...]
    path: Path
    table_path: Path


_TARGET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}$")


def margin_case(
    case_dir: str | os.PathLike,
    *,
    source: str,
    target: str,
    margin_mm: tuple[float, float, float] | str,
    subtract: Sequence[str] = (),
    who: str,
    when: _dt.datetime | None = None,
) -> MarginResult:
    """Expand ``source`` of a case folder into ``CASE_DIR/planning/<target>.nii.gz``.

    Also writes ``planning/<target>_overlap.csv`` (the OAR overlap table) and appends the action to
    the case's ``compose_log.jsonl``. ``planning/`` is not read by the cohort loader, so planning
    volumes never become training labels; ``cervicontour rtstruct export`` picks them up.

    Args:
        case_dir: case folder in the cohort layout.
        source: structure to expand (vocabulary name or synonym).
        target: output name, ≤ 16 characters (TG-263), e.g. ``PTVp``.
        margin_mm: ``(LR, AP, SI)`` mm or ``"10,10,5"``.
        subtract: structures removed from the result (e.g. ``["Bladder"]``).
        who: the person asking (logged).

    Raises:
        InputError: missing structures, a bad target name, or see :func:`expand`.
    """
    from cervicontour.io import read_nifti, write_nifti
    from cervicontour.contours.compose import LOG_FILE, case_structure_paths

    case_dir = Path(case_dir)
    margin = parse_margin(margin_mm)
    if not _TARGET_NAME.match(target):
        raise InputError(f"target name {target!r}: expected a TG-263 style name of at most 16 letters, digits or _, e.g. PTVp")
    available = case_structure_paths(case_dir)
    source = canonical_name(source)
    subtract = tuple(canonical_name(s) for s in subtract)
    for name in (source, *subtract):
        if name not in available:
            raise InputError(f"{case_dir}: no {name} mask (has: {', '.join(available) or 'none'})")
    ctv = read_nifti(available[source])
    expanded = expand(ctv, margin)
    inside = expanded.array.astype(bool)
    for name in subtract:
        other = read_nifti(available[name])
        if not ctv.same_grid(other):
            raise InputError(f"{name} is not on the grid of {source} ({'; '.join(ctv.grid_differences(other))})")
        inside &= other.array == 0
    expanded = ctv.with_array(inside.astype(np.uint8))
    oar_names = [n for n in available if STRUCTURES[n].role is Role.OAR] + [n for n in PELVIC_OARS if n in available]
    overlaps = overlap_table(expanded, {n: read_nifti(available[n]) for n in oar_names})

    planning = case_dir / "planning"
    path = write_nifti(expanded, planning / f"{target}.nii.gz")
    table_path = planning / f"{target}_overlap.csv"
    with table_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["structure", "structure_cc", f"inside_{target}_cc", f"inside_{target}_percent"])
        for row in overlaps:
            writer.writerow([row.structure, f"{row.oar_cc:.3f}", f"{row.overlap_cc:.3f}", f"{row.percent:.1f}"])
    vcc = ctv.voxel_volume_cc
    result = MarginResult(source, target, margin, subtract, float(np.count_nonzero(ctv.array)) * vcc,
                          float(inside.sum()) * vcc, clipped_at_edge(ctv, margin), tuple(overlaps), path, table_path)
    when = when or _dt.datetime.now(_dt.timezone.utc)
    record = {
        "action": "margin", "who": who, "when": when.isoformat(), "source": source, "target": target,
        "margin_mm": dict(zip(AXES, margin)), "subtracted": list(subtract), "source_cc": result.source_cc,
        "volume_cc": result.volume_cc, "clipped_at_image_edge": result.clipped,
        "path": str(path.relative_to(case_dir)),
    }
    with (case_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return result
