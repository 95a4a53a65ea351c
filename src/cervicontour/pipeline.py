"""Inference pipeline: CT in, reviewed-ready draft contours out, on the CT's exact grid.

``predict_case`` reads like the data-flow diagram::

    io → preprocess (reorient, crop, resample, normalise) → model (sliding window, TTA)
       → preprocess⁻¹ (back onto the input grid) → rules.enforce (postprocess) → masks + record

``predict`` runs it over a NIfTI file, a DICOM series folder or a cohort and writes the cohort
layout ``OUT/<patient_id>/structures/<Name>.nii.gz`` plus ``OUT/<patient_id>/prediction.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND
from cervicontour.volume import Volume

#: Sliding-window overlap at inference (training validation uses 0.5): 0.3 needs ~40 % fewer windows
#: on a full-size CT, for the 15 s predict budget on this CPU.
PREDICT_OVERLAP = 0.3
#: A structure is flagged "review closely" above this uncertainty (mean binary entropy, bits).
UNCERTAINTY_FLAG = 0.25
#: ... or when the rules removed more than this fraction of its predicted voxels.
RULE_CHANGE_FLAG = 0.10


@dataclass
class CasePrediction:
    """One case's result.

    Attributes:
        masks: structure → binary uint8 Volume on the input grid.
        changes: what :func:`cervicontour.rules.enforce` changed.
        structures: structure → ``{"volume_cc", "uncertainty", "review_closely", "reasons"}``.
        timings_s: seconds per stage.
        probabilities: structure → float32 Volume on the input grid (only if asked for).
        composed: compound target → the predicted parts it was composed of (e.g. CTVn from
            the nodal groups, for a model that predicts them separately).
    """

    masks: dict[str, Volume]
    changes: list
    structures: dict[str, dict]
    timings_s: dict[str, float]
    probabilities: dict[str, Volume] = field(default_factory=dict)
    composed: dict[str, list[str]] = field(default_factory=dict)


def predict_case(
    image: Volume,
    model,
    *,
    rules=None,
    tta: bool = False,
    device: str = "cpu",
    keep_probabilities: bool = False,
    nodal_groups: Sequence[str] | None = None,
) -> CasePrediction:
    """Segment one CT with ``model``; masks come back on ``image``'s exact grid.

    Args:
        image: CT in HU, any orientation. Never modified.
        model: a :class:`cervicontour.model.Model` (see :func:`cervicontour.model.load_model`).
        rules: clinicians' rules for :func:`~cervicontour.rules.enforce` (default: packaged).
        tta: also predict the left-right mirrored image and average (2× the model time).
        keep_probabilities: also return the probability maps on the input grid.
        nodal_groups: for a model that predicts the CTVn parts (``LN_*``, ``GTVn``) instead of
            CTVn: the parts this patient's CTVn is made of (default
            :data:`~cervicontour.structures.DEFAULT_NODAL_GROUPS`; add ``LN_ParaAortic`` when the
            clinician extends the field). Including para-aortic nodes is a clinical decision the
            CT does not show, so the model predicts every group and the choice composes CTVn.

    Returns:
        :class:`CasePrediction`. A structure the model finds nowhere gets an all-zero mask and
        is flagged for close review.
    """
    from cervicontour.model.infer import predict_probabilities
    from cervicontour.preprocess import prepare_image
    from cervicontour.rules import enforce

    plan, clock = model.plan, _Clock()
    # 1. preprocess: LPS, body crop, working spacing, CT normalisation
    prepared = prepare_image(image, plan)
    clock.lap("preprocess")
    # 2. model: per-structure sigmoid probabilities on the working grid
    pad_value = float(plan.normalization.apply(np.array([-1024.0]))[0])
    working = predict_probabilities(model.network, prepared.image, plan.patch_size, pad_value=pad_value, overlap=PREDICT_OVERLAP, device=device, mirror_axes=(0,) if tta else ())
    names, working, composed = _compose_targets(tuple(plan.structures), working, nodal_groups)
    clock.lap("model")
    # 3. back onto the input grid (the box around everything the model found)
    values, box = prepared.back_to_input(working)
    box_grid = _box_volume(image, box)
    probabilities = {name: box_grid.with_array(values[c]) for c, name in enumerate(names)}
    clock.lap("resample_back")
    # 4. postprocess: the clinicians' rules, with every change reported (on the composed targets;
    #    the parts follow their target below)
    parts = set(COMPOUND["CTVn"]) & set(names) if composed else set()
    ruled = {n: v for n, v in probabilities.items() if n not in parts}
    enforced = enforce(ruled, rules=rules) if values.size else None
    clock.lap("rules")
    # 5. assemble full-grid masks and the per-structure record
    masks, records = {}, {}
    for c, name in enumerate(names):
        full = np.zeros(image.shape, np.uint8)
        if enforced is not None:
            if name in enforced.masks:
                full[box] = enforced.masks[name].array
            else:  # a part: its own threshold, inside its target when the target includes it
                part = values[c] >= 0.5
                target = next((t for t, ps in composed.items() if name in ps), None)
                if target is not None:
                    part &= enforced.masks[target].array > 0
                full[box] = part
        masks[name] = image.with_array(full, structure=name)
        before = int(np.count_nonzero(values[c] >= 0.5)) if values.size else 0
        records[name] = _structure_record(working[c], int(full.sum()), before, image.voxel_volume_cc)
    kept = {}
    if keep_probabilities:
        for c, name in enumerate(names):
            full = np.zeros(image.shape, np.float32)
            if values.size:
                full[box] = values[c]
            kept[name] = image.with_array(full, structure=name)
    clock.lap("assemble")
    return CasePrediction(masks, list(enforced.changes) if enforced else [], records, clock.laps, kept, composed)


def _compose_targets(structures: tuple[str, ...], working: np.ndarray, nodal_groups: Sequence[str] | None):
    """Add CTVn = voxel-wise max of the chosen nodal-group probabilities when the model predicts
    the groups but not CTVn itself (max of probabilities = union of the thresholded masks)."""
    from cervicontour.postprocess.compose import parse_parts
    from cervicontour.structures import DEFAULT_NODAL_GROUPS

    predicted = [n for n in structures if n in COMPOUND["CTVn"]]
    if "CTVn" in structures or not predicted:
        return structures, working, {}
    chosen = parse_parts("CTVn", DEFAULT_NODAL_GROUPS if nodal_groups is None else nodal_groups)
    use = [n for n in chosen if n in predicted]
    if not use:
        raise InputError(f"none of the nodal groups {', '.join(chosen)} is predicted by this model (it predicts {', '.join(predicted)})")
    ctvn = np.max(working[[structures.index(n) for n in use]], axis=0)
    return (*structures, "CTVn"), np.concatenate([working, ctvn[None]], axis=0), {"CTVn": use}


def reference_nodal_groups(source, structures: Sequence[str]) -> list[str]:
    """The nodal groups (``LN_*``, ``GTVn``) a labelled case's reference CTVn is made of, from the
    names of its reference structures (``source`` names the case in the error).

    Raises:
        InputError: the case has none of them.
    """
    groups = [n for n in COMPOUND["CTVn"] if n in structures]
    if not groups:
        raise InputError(f"{source}: --nodal-groups reference needs the case's reference LN_* contours; it has none")
    return groups


def _box_volume(image: Volume, box: tuple[slice, ...]) -> Volume:
    start = np.asarray([s.start or 0 for s in box])
    shape = tuple(max((s.stop or 0) - (s.start or 0), 0) for s in box)
    origin = image.index_to_world(start)
    return Volume(np.zeros(shape, np.uint8), image.spacing_mm, tuple(origin), image.direction)


def _structure_record(p: np.ndarray, voxels: int, voxels_before_rules: int, voxel_cc: float) -> dict:
    """Uncertainty = mean binary entropy (bits) of the working-grid voxels with p > 0.05."""
    region = p[p > 0.05].astype(np.float64)
    if region.size:
        q = np.clip(region, 1e-6, 1 - 1e-6)
        uncertainty = float(np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q))))
    else:
        uncertainty = 1.0
    reasons = []
    if voxels == 0:
        reasons.append("nothing predicted")
    if uncertainty > UNCERTAINTY_FLAG:
        reasons.append(f"uncertainty {uncertainty:.2f} > {UNCERTAINTY_FLAG}")
    if voxels_before_rules and (voxels_before_rules - voxels) / voxels_before_rules > RULE_CHANGE_FLAG:
        reasons.append(f"rules removed {100 * (voxels_before_rules - voxels) / voxels_before_rules:.0f}% of it")
    return {"volume_cc": round(voxels * voxel_cc, 3), "uncertainty": round(uncertainty, 4), "review_closely": bool(reasons), "reasons": reasons}


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


# ----------------------------------------------------------------------------- inputs and outputs
@dataclass(frozen=True)
class InputCase:
    patient_id: str
    source: Path
    load: object  # () -> Volume
    structures: tuple[str, ...] = ()  # the reference structures a cohort case already has


def find_inputs(path: str | os.PathLike, *, all_cases: bool = False) -> list[InputCase]:
    """What to predict: a NIfTI file, a DICOM series folder, or a cohort folder.

    For a cohort, the hold-out (unlabelled) patients when it has any, else every patient;
    ``all_cases=True`` takes every patient.
    """
    from cervicontour.io import is_nifti, read_volume, strip_nifti_suffix

    path = Path(path)
    if path.is_file():
        if not is_nifti(path):
            raise InputError(f"{path}: expected a NIfTI CT (.nii/.nii.gz), a DICOM series folder or a cohort folder")
        return [InputCase(strip_nifti_suffix(path.name), path, lambda: read_volume(path))]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    if not any(p.is_dir() for p in path.iterdir()):
        return [InputCase(path.name, path, lambda: read_volume(path))]  # a DICOM series folder
    from cervicontour.cohort import load_cohort

    cohort = load_cohort(path)
    cases = cohort.cases() if all_cases or not cohort.holdout() else cohort.holdout()
    cases = [c for c in cases if c.image_path is not None]
    if not cases:
        raise InputError(f"{path}: no patient with an image to predict")
    return [InputCase(c.patient_id, Path(c.image_path), c.load_image, tuple(c.structure_names)) for c in cases]


def image_sha256(image: Volume) -> str:
    """Hash of the voxel values and the geometry (the same CT as NIfTI or DICOM hashes alike)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image.array).tobytes())
    h.update(json.dumps([str(image.array.dtype), image.shape, [round(v, 5) for v in image.spacing_mm], [round(v, 4) for v in image.origin_mm], np.round(image.direction, 6).tolist()]).encode())
    return h.hexdigest()


def predict(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | os.PathLike = "default",
    tta: bool = False,
    device: str = "cpu",
    rules=None,
    all_cases: bool = False,
    save_probabilities: bool = False,
    nodal_groups: Sequence[str] | str | None = None,
    on_case=None,
) -> list[Path]:
    """Predict every input case and write the cohort layout plus ``prediction.json`` per case.

    ``nodal_groups``: see :func:`predict_case`; ``"reference"`` composes each labelled cohort
    case's CTVn from the groups its reference contours include (to evaluate a model against the
    clinicians' per-patient choice of nodal fields).

    Returns:
        the ``prediction.json`` paths, one per case.
    """
    from cervicontour.cohort import write_case
    from cervicontour.model import load_model
    from cervicontour.model.run_files import write_json

    t0 = time.perf_counter()
    loaded = load_model(model, device=device)
    load_s = time.perf_counter() - t0
    cases = find_inputs(input_path, all_cases=all_cases)
    out = Path(out)
    written = []
    for case in cases:
        t_case = time.perf_counter()
        image = case.load()
        read_s = time.perf_counter() - t_case
        groups = reference_nodal_groups(case.source, case.structures) if nodal_groups == "reference" else nodal_groups
        result = predict_case(image, loaded, rules=rules, tta=tta, device=device, keep_probabilities=save_probabilities, nodal_groups=groups)
        t_write = time.perf_counter()
        folder = write_case(out, case.patient_id, None, result.masks)
        if save_probabilities:
            from cervicontour.io import write_nifti

            for name, prob in result.probabilities.items():
                percent = np.rint(np.clip(prob.array, 0, 1) * 100).astype(np.uint8)
                write_nifti(prob.with_array(percent), folder / "probabilities" / f"{name}.nii.gz")
        timings = {"model_load": round(load_s, 3), "read": round(read_s, 3), **result.timings_s, "write": round(time.perf_counter() - t_write, 3)}
        timings["total_case"] = round(time.perf_counter() - t_case, 3)
        record = {
            "patient_id": case.patient_id,
            "input": {"path": str(case.source), "sha256": image_sha256(image), "shape": list(image.shape), "spacing_mm": list(image.spacing_mm), "orientation": image.orientation},
            "model": {"name": loaded.name, "version": loaded.version, "config_sha256": loaded.config_sha256, "path": str(loaded.path), "structures": list(loaded.structures)},
            "settings": {"tta": tta, "device": device, "probabilities_saved": save_probabilities, "probabilities_unit": "percent (uint8)"},
            "structures": result.structures,
            "composed": result.composed,
            "review_closely": [n for n, r in result.structures.items() if r["review_closely"]],
            "rule_changes": [asdict(c) for c in result.changes],
            "timings_s": timings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "disclaimer": "draft contours for clinician review; not for clinical use without review",
        }
        written.append(write_json(folder / "prediction.json", record))
        if on_case:
            on_case(case.patient_id)
    return written
