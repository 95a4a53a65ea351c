"""Multi-atlas baseline: register labelled atlas CTs to a target CT, propagate, fuse.

The classic radiotherapy auto-contouring method (what platipy's atlas pipeline does), read top to
bottom like :func:`predict_case`:

1. **Rank** every atlas: centroid + rigid registration to the target on a ~4 mm working grid
   (:mod:`.atlas_register`), then the normalised cross-correlation of the two CTs in a
   soft-tissue window inside the target body. The K most similar atlases are used (ties: the
   atlas cohort's order). An atlas whose image file *is* the target's is excluded
   (leave-one-out when the atlas and test cohorts are the same folder).
2. **Register** each selected atlas: affine, then B-spline or demons (or none).
3. **Propagate** every requested structure with the composed transform onto the target's exact
   grid (linear interpolation of the 0/1 mask, threshold 0.5).
4. **Fuse** each structure on its own (they overlap): majority vote (even-K ties follow the
   most similar atlas) or STAPLE (posterior ≥ 0.5), :mod:`.atlas_fusion`.

Output per target, written all-or-nothing (a staging folder renamed into place)::

    OUT/<patient_id>/structures/<Name>.nii.gz   uint8 0/1 on the target's grid
    OUT/<patient_id>/atlas.json                 atlases ranked, similarity, registration
                                                metric values and seconds per stage

Example:
    >>> seconds = predict_cohort("atlases/", "test/", "pred/", k=5)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.baselines.atlas_fusion import FUSION, fuse
from cervicontour.baselines.atlas_register import (
    DEFORMABLE,
    WorkImage,
    align_affine,
    align_rigid,
    propagate,
    register_deformable,
    working_image,
)
from cervicontour.cohort import Case, load_cohort
from cervicontour.errors import InputError
from cervicontour.io import (
    is_nifti,
    read_volume,
    strip_nifti_suffix,
    write_nifti,
    write_text_atomic,
)
from cervicontour.io.atomic import staged_folder
from cervicontour.structures import PRIMARY, canonical_name
from cervicontour.volume import Volume

WORK_SPACING_MM = 4.0
Progress = Callable[[int, int, str], None]


class Atlas:
    """One labelled atlas case; its working-grid CT is computed once and reused for every target."""

    def __init__(self, case: Case, *, work_spacing_mm: float = WORK_SPACING_MM) -> None:
        self.case = case
        self.work_spacing_mm = work_spacing_mm
        self._work: WorkImage | None = None

    @property
    def patient_id(self) -> str:
        return self.case.patient_id

    @property
    def work(self) -> WorkImage:
        if self._work is None:
            self._work = working_image(self.case.load_image(), work_spacing_mm=self.work_spacing_mm)
        return self._work

    def same_image(self, path: Path | None) -> bool:
        """True when ``path`` is this atlas's own image file (so it must not vote for itself)."""
        return path is not None and self.case.image_path is not None and _same_file(path, self.case.image_path)


@dataclass
class AtlasPrediction:
    """Propagated masks of the K selected atlases, before fusion.

    Attributes:
        target: the target CT (its grid is the output grid).
        propagated: structure → K bool arrays ``[i, j, k]`` on the target grid, best atlas first.
        record: what goes to ``atlas.json`` (atlases, similarity, metric values, seconds).
    """

    target: Volume
    propagated: dict[str, list[np.ndarray]]
    record: dict = field(default_factory=dict)

    def fused(self, fusion: str = "majority") -> dict[str, Volume]:
        """Structure → fused uint8 mask on the target grid."""
        return {
            name: self.target.with_array(fuse(masks, fusion=fusion).astype(np.uint8), structure=name)
            for name, masks in self.propagated.items()
        }


# --------------------------------------------------------------------------- inputs
def load_atlases(
    atlas_cohort_dir: str | os.PathLike,
    structures: Sequence[str] = PRIMARY,
    *,
    work_spacing_mm: float = WORK_SPACING_MM,
) -> list[Atlas]:
    """The labelled cases of an atlas cohort that have an image and every requested structure.

    Raises:
        InputError: the folder is not a cohort, or no case qualifies.
    """
    names = [canonical_name(s) for s in structures]
    cohort = load_cohort(atlas_cohort_dir)
    atlases, skipped = [], []
    for case in cohort.labelled():
        missing = [n for n in names if not case.has(n)]
        if case.image_path is None or missing:
            skipped.append(f"{case.patient_id} (missing {', '.join(missing) or 'image'})")
            continue
        atlases.append(Atlas(case, work_spacing_mm=work_spacing_mm))
    if not atlases:
        raise InputError(
            f"{atlas_cohort_dir}: expected labelled atlas cases with an image and {', '.join(names)}; "
            f"none qualifies ({'; '.join(skipped) or 'no labelled cases'}). "
            "Pass --structures to choose a subset, or point at a labelled cohort"
        )
    return atlases


def resolve_targets(target: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(patient_id, image_path)`` for a NIfTI CT file or every patient of a cohort folder.

    A file named ``image.nii.gz`` (or ``ct``/``img``/``imaging``) takes its folder's name as
    patient id; any other file its own stem.

    Raises:
        InputError: neither a NIfTI file nor a cohort with images.
    """
    from cervicontour.cohort import IMAGE_STEMS

    path = Path(target)
    if path.is_file():
        if not is_nifti(path):
            raise InputError(f"{path}: expected a NIfTI CT (.nii or .nii.gz) or a cohort folder")
        stem = strip_nifti_suffix(path.name)
        return [(path.parent.name if stem.lower() in IMAGE_STEMS else stem, path)]
    if not path.exists():
        raise InputError(f"{path}: no such file or folder; expected a NIfTI CT or a cohort folder")
    cohort = load_cohort(path)
    targets = [(c.patient_id, c.image_path) for c in cohort.cases() if c.image_path is not None]
    if not targets:
        raise InputError(f"{path}: expected patients with an image (image.nii.gz); found none")
    return targets  # type: ignore[return-value]


def _check_k(k: int, atlases: Sequence[Atlas], image_path: Path | None, patient_id: str) -> list[Atlas]:
    usable = [a for a in atlases if not a.same_image(image_path)] if image_path else list(atlases)
    if k < 1 or k > len(usable):
        excluded = len(atlases) - len(usable)
        note = f" ({excluded} excluded: the target's own image)" if excluded else ""
        raise InputError(
            f"target {patient_id!r}: K={k} atlases requested but {len(usable)} usable atlases "
            f"available{note}; pass --k between 1 and {len(usable)}, or add labelled atlases"
        )
    return usable


def _check_options(fusion: str, deformable: str) -> None:
    if fusion not in FUSION:
        raise InputError(f"fusion must be one of {', '.join(FUSION)}; got {fusion!r}")
    if deformable not in DEFORMABLE:
        raise InputError(f"deformable must be one of {', '.join(DEFORMABLE)}; got {deformable!r}")


# --------------------------------------------------------------------------- one target
def predict_case(
    target: Volume,
    atlases: Sequence[Atlas],
    *,
    k: int = 5,
    deformable: str = "demons",
    structures: Sequence[str] = PRIMARY,
    image_path: Path | None = None,
    patient_id: str = "target",
    on_step: Callable[[str], None] | None = None,
) -> AtlasPrediction:
    """Rank, register, propagate (fusion is left to :meth:`AtlasPrediction.fused`).

    Args:
        target: the CT to contour (any orientation; outputs land on its exact grid).
        atlases: candidates (see :func:`load_atlases`).
        k: how many of the most similar atlases to register deformably and fuse.
        deformable: ``"bspline"``, ``"demons"`` or ``"none"``.
        structures: names or synonyms; each atlas must have them.
        image_path: the target's file, to exclude an atlas that is the same file.
        patient_id: for messages and the record.
        on_step: called with a short description after each registration (for progress bars).

    Raises:
        InputError: K is not in 1..usable atlases, an option is unknown, or the target has no body.
    """
    _check_options("majority", deformable)
    names = [canonical_name(s) for s in structures]
    usable = _check_k(k, atlases, image_path, patient_id)
    step = on_step or (lambda description: None)
    start = time.perf_counter()
    fixed = working_image(target, work_spacing_mm=usable[0].work_spacing_mm)

    ranking = []
    for atlas in usable:
        rigid = align_rigid(fixed, atlas.work)
        ranking.append((atlas, rigid))
        step(f"{patient_id}: rigid {atlas.patient_id}")
    order = sorted(range(len(ranking)), key=lambda i: -_finite(ranking[i][1].similarity))
    selected = [ranking[i] for i in order[:k]]
    seconds_ranking = time.perf_counter() - start

    propagated: dict[str, list[np.ndarray]] = {n: [] for n in names}
    used = []
    for rank, (atlas, rigid) in enumerate(selected, start=1):
        registration = register_deformable(
            fixed, atlas.work, align_affine(fixed, atlas.work, rigid), deformable=deformable
        )
        started = time.perf_counter()
        masks = propagate([atlas.case.load_structure(n) for n in names], registration.transform, target)
        for name, mask in zip(names, masks):
            propagated[name].append(mask)
        used.append(
            {
                "rank": rank,
                "patient_id": atlas.patient_id,
                "image": str(atlas.case.image_path),
                "similarity_ncc": _round(registration.similarity),
                "stages": registration.stages,
                "propagate_seconds": round(time.perf_counter() - started, 3),
            }
        )
        step(f"{patient_id}: {deformable} {atlas.patient_id}")

    record = {
        "patient_id": patient_id,
        "image": str(image_path) if image_path else None,
        "grid": {
            "shape": list(target.shape),
            "spacing_mm": list(target.spacing_mm),
            "origin_mm": list(target.origin_mm),
            "orientation": target.orientation,
        },
        "k": k,
        "deformable": deformable,
        "structures": names,
        "work_grid": {
            "spacing_mm": [round(s, 4) for s in fixed.image.GetSpacing()],
            "size": list(fixed.image.GetSize()),
        },
        "selection": "K highest NCC (soft-tissue window -200..400 HU, inside the target body) after rigid",
        "candidates": [
            {"patient_id": a.patient_id, "similarity_ncc": _round(r.similarity), "rigid": r.stages["rigid"]}
            for a, r in (ranking[i] for i in order)
        ],
        "excluded": [a.patient_id for a in atlases if a not in usable],
        "atlases": used,
        "seconds": {
            "ranking": round(seconds_ranking, 3),
            "total_registration_and_propagation": round(time.perf_counter() - start, 3),
        },
    }
    return AtlasPrediction(target, propagated, record)


def write_prediction(
    out_dir: str | os.PathLike, patient_id: str, prediction: AtlasPrediction, *, fusion: str = "majority"
) -> Path:
    """Write ``OUT/<pid>/structures/*.nii.gz`` and ``atlas.json`` all-or-nothing.

    Everything is written into a staging folder beside ``OUT`` (:func:`cervicontour.io.atomic.staged_folder`)
    and renamed into place; an existing ``OUT/<pid>`` is replaced only after the new one is complete.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fused = prediction.fused(fusion)
    record = {**prediction.record, "fusion": fusion}
    record["fusion_rule"] = (
        "majority: > K/2 votes; exactly K/2 (even K) follows the most similar atlas"
        if fusion == "majority"
        else "STAPLE posterior >= 0.5 (sitk.STAPLEImageFilter), each structure independently"
    )
    record["voxels"] = {name: int(mask.array.sum()) for name, mask in fused.items()}
    with staged_folder(out_dir) as stage:  # OUT/<pid> is replaced only once the new one is complete
        for name, mask in fused.items():
            write_nifti(mask, stage / patient_id / "structures" / f"{name}.nii.gz")
        write_text_atomic(stage / patient_id / "atlas.json", json.dumps(record, indent=2) + "\n")
    destination = out_dir / patient_id
    return destination


# --------------------------------------------------------------------------- cohort
def predict_cohort(
    atlas_cohort_dir: str | os.PathLike,
    test_cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    k: int = 5,
    fusion: str = "majority",
    deformable: str = "demons",
    structures: Sequence[str] = PRIMARY,
    on_progress: Progress | None = None,
) -> dict[str, float]:
    """Contour every target with the multi-atlas baseline; write ``OUT/<pid>/...`` per target.

    Args:
        atlas_cohort_dir: labelled cohort whose cases serve as atlases.
        test_cohort_dir: a cohort folder (all its patients) or one NIfTI CT.
        out_dir: output folder (created).
        k: atlases fused per target (the K most similar after rigid registration).
        fusion: ``"majority"`` or ``"staple"``.
        deformable: ``"bspline"``, ``"demons"`` or ``"none"``.
        structures: names or synonyms (default: the primary five).
        on_progress: called as ``(steps_done, steps_total, description)``; one step per
            registration (every atlas rigidly, then K deformably, per target).

    Returns:
        ``{patient_id: seconds}`` wall time per target (reading, registering, fusing, writing).

    Raises:
        InputError: unusable inputs, all checked before any registration or output: unknown
            option, K outside 1..atlases for any target, no atlas with the structures, no targets.
    """
    _check_options(fusion, deformable)
    names = [canonical_name(s) for s in structures]
    atlases = load_atlases(atlas_cohort_dir, names)
    targets = resolve_targets(test_cohort_dir)
    for patient_id, image_path in targets:
        _check_k(k, atlases, image_path, patient_id)
    steps = [len(_check_k(k, atlases, p, pid)) + k for pid, p in targets]
    total, done = sum(steps), 0
    report = on_progress or (lambda done, total, description: None)
    report(0, total, "starting")

    def step(description: str) -> None:
        nonlocal done
        done += 1
        report(done, total, description)

    seconds: dict[str, float] = {}
    for patient_id, image_path in targets:
        start = time.perf_counter()
        target = read_volume(image_path)
        prediction = predict_case(
            target,
            atlases,
            k=k,
            deformable=deformable,
            structures=names,
            image_path=image_path,
            patient_id=patient_id,
            on_step=step,
        )
        write_prediction(out_dir, patient_id, prediction, fusion=fusion)
        seconds[patient_id] = round(time.perf_counter() - start, 3)
    return seconds


# --------------------------------------------------------------------------- helpers
def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _finite(value: float) -> float:
    return value if np.isfinite(value) else -np.inf


def _round(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None
