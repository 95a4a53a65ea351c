"""Inference pipeline: CT in, reviewed-ready draft contours out, on the CT's exact grid.

``predict_case`` reads like the data-flow diagram::

    io → preprocess (reorient, crop, resample, normalise) → model (sliding window, TTA)
       → preprocess⁻¹ (back onto the input grid) → [refiner: second stage near the input's resolution]
       → rules.enforce (postprocess) → masks + record

``predict`` runs it over a NIfTI file, a DICOM series folder or a cohort and writes the cohort
layout ``OUT/<patient_id>/structures/<Name>.nii.gz`` plus ``OUT/<patient_id>/prediction.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND
from cervicontour.volume import Volume, image_sha256

#: Sliding-window overlap at inference (training validation uses 0.5): 0.3 needs ~40 % fewer windows
#: on a full-size CT, for the 15 s predict budget on this CPU.
PREDICT_OVERLAP = 0.3
# "Review closely" flags (per-structure calibrated thresholds): cervicontour.postprocess.flags


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
        partitions: compound target → the parts its mask is split into (:func:`parts_partition`):
            the composed ones, and the CTVp's parts for a model that predicts them.
    """

    masks: dict[str, Volume]
    changes: list
    structures: dict[str, dict]
    timings_s: dict[str, float]
    probabilities: dict[str, Volume] = field(default_factory=dict)
    composed: dict[str, list[str]] = field(default_factory=dict)
    partitions: dict[str, list[str]] = field(default_factory=dict)


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

    A model with a refiner (:mod:`cervicontour.model.refine`) replaces that structure's
    probabilities by the refined ones before the rules; the per-structure uncertainty stays the
    working-grid one.

    Returns:
        :class:`CasePrediction`. A structure the model finds nowhere gets an all-zero mask and
        is flagged for close review.
    """
    from cervicontour.rules import enforce

    plan, clock = model.plan, _Clock()
    names, working, composed, values, box = _stage1(image, model, tta=tta, device=device, nodal_groups=nodal_groups, clock=clock)
    box_grid = _box_volume(image, box)
    # 3b. second stage (when the model has one): refine one structure near the input's resolution
    refiner = active_refiner(model)
    if refiner is not None and values.size:
        from cervicontour.model.refine import refine

        ct_box, coarse = _refiner_inputs(image, box, names, values, refiner)
        values[names.index(refiner.structure)] = refine(refiner, ct_box, coarse, plan.normalization, device=device, mirror_axes=(0,) if tta else ())
        clock.lap("refine")
    probabilities = {name: box_grid.with_array(values[c]) for c, name in enumerate(names)}
    # 4. postprocess: the clinicians' rules, with every change reported (on the composed targets;
    #    the parts follow their target below)
    partitions = parts_partition(names, composed)
    parts = (set(COMPOUND["CTVn"]) & set(names) if composed else set()) | {p for ps in partitions.values() for p in ps}
    ruled = {n: v for n, v in probabilities.items() if n not in parts}
    enforced = enforce(ruled, rules=rules) if values.size else None
    clock.lap("rules")
    # 5. assemble full-grid masks and the per-structure record; each compound is split into its
    #    parts by the rule fit's targets use (every part inside it, their union it)
    from cervicontour.postprocess.parts import partition_compound

    split = {}
    if enforced is not None:
        for target, members in partitions.items():
            split.update(partition_compound(enforced.masks[target].array > 0, {p: values[names.index(p)] for p in members}, image.spacing_mm))
    masks, records = {}, {}
    for c, name in enumerate(names):
        full = np.zeros(image.shape, np.uint8, order="F")  # x fastest, as ITK writes it: no transposing copy
        if enforced is not None:
            if name in enforced.masks:
                full[box] = enforced.masks[name].array
            else:  # a part: split from its target when the target includes it, else its own threshold
                full[box] = split[name] if name in split else values[c] >= 0.5
        masks[name] = image.with_array(full, structure=name)
        before = int(np.count_nonzero(values[c] >= 0.5)) if values.size else 0
        if name in split:  # a part's voxels go to siblings or follow its compound's rules: the compound's flag says so
            before = int(full.sum())
        records[name] = _structure_record(working[c], int(full.sum()), before, image.voxel_volume_cc, name=name)
    kept = {}
    if keep_probabilities:
        for c, name in enumerate(names):
            full = np.zeros(image.shape, np.float32, order="F")
            if values.size:
                full[box] = values[c]
            kept[name] = image.with_array(full, structure=name)
    clock.lap("assemble")
    return CasePrediction(masks, list(enforced.changes) if enforced else [], records, clock.laps, kept, composed, partitions)


def parts_partition(names: Sequence[str], composed: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Compound target → the predicted parts its mask is split into: the nodal groups a CTVn was
    composed of (``composed``), and the parts of a compound the model predicts itself (the CTVp
    with Cervix, GTVp, Uterus, Vagina; a CTVn with the groups it is made of by default,
    :data:`~cervicontour.structures.DEFAULT_NODAL_GROUPS`: the para-aortic group is the per-patient
    extension, drafted on its own as beside a CTVn composed without it). The split
    (:func:`cervicontour.postprocess.parts.partition_compound`) puts every part inside the
    compound and makes their union the compound.

    Example:
        >>> parts_partition(("CTVp", "Cervix", "Uterus", "LN_Pelvic", "CTVn"), {"CTVn": ["LN_Pelvic"]})
        {'CTVn': ['LN_Pelvic'], 'CTVp': ['Cervix', 'Uterus']}
        >>> parts_partition(("CTVn", "LN_Pelvic", "LN_ParaAortic"), {})
        {'CTVn': ['LN_Pelvic']}

    A predicted compound with gross disease but no anatomical part (CTVp and GTVp only) is not
    split: the GTV alone cannot tile it; it keeps its own threshold.

        >>> parts_partition(("CTVp", "GTVp"), {})
        {}
    """
    from cervicontour.structures import DEFAULT_NODAL_GROUPS, GROSS_DISEASE

    out = {t: list(ps) for t, ps in composed.items()}
    for target, parts in COMPOUND.items():
        present = [p for p in parts if p in names and (target != "CTVn" or p in DEFAULT_NODAL_GROUPS)]
        if target in names and target not in out and any(p not in GROSS_DISEASE for p in present):
            out[target] = present
    return out


def _stage1(image: Volume, model, *, tta: bool, device: str, nodal_groups, clock: "_Clock | None" = None):
    """Steps 1-3 of :func:`predict_case`: the model's probabilities on the working grid (with
    CTVn composed from the nodal groups) and mapped back onto the input grid.

    Returns:
        ``(names, working, composed, values, box)``: output names, ``(C, *working)``
        probabilities, the composition record, ``(C, *box)`` input-grid probabilities over the
        input-array box ``box`` (under the working voxels where any channel reaches 0.5, grown by
        one working voxel: a refiner can grow a structure by about that much).
    """
    from cervicontour.preprocess import prepare_image

    plan, clock = model.plan, clock or _Clock()
    # 1. preprocess: LPS, body crop, working spacing, CT normalisation
    prepared = prepare_image(image, plan)
    clock.lap("preprocess")
    # 2. model: per-structure sigmoid probabilities on the working grid
    working = working_probabilities(image, model, tta=tta, device=device, prepared=prepared)
    names, working, composed = _compose_targets(tuple(plan.structures), working, nodal_groups)
    clock.lap("model")
    # 3. back onto the input grid (the box around everything the model found: a refiner works inside
    #    it, the same box in training, refine_training_cases, as here)
    values, box = prepared.back_to_input(working)
    clock.lap("resample_back")
    return names, working, composed, values, box


def working_probabilities(image: Volume, model, *, tta: bool, device: str, prepared=None, needed=None, parts_box: bool = True) -> np.ndarray:
    """``model``'s per-channel sigmoid probabilities on its working grid, ``(C, *working)``.

    The channels of its ``fallback_structures`` (a compound: all its parts; the structures a fit's
    selection kept from its zero-shot init) come from its fallback, predicted on the same working
    grid with its own normalisation, and so on down the chain (a model fitted from the shipped
    default falls back on the default, which falls back on its previous network for the five
    structures). A network is run only when a ``needed`` channel (default: all) is its own; the
    channels nobody needs are 0. ``prepared``: ``model``'s
    :func:`~cervicontour.preprocess.prepare_image` of ``image``, when the caller has it; it is
    handed down the chain to every model whose plan prepares the image the same way.

    A network run only for parts of a compound its fallback predicts (the shipped default's CTVp
    parts network) covers the box around that compound, at least one patch (:func:`parts_region`),
    not the whole grid: the parts only split their compound, and on a full-size CT that is one
    window instead of four (``parts_box=False``: the whole grid, for fit's targets, where the
    hospital's compound may reach beyond the predicted one). Measured against the windows over the whole grid
    (benchmarks/predict_speed.py --accuracy): 6 full-size phantoms Cervix Dice +0.012, Vagina
    +0.016, Uterus +0.001, GTVp -0.001; the 10 small test phantoms (seed 3003, grids barely larger
    than a patch) Cervix +0.004, Vagina +0.004, GTVp +0.004, Uterus +0.001. A box without the
    one-patch minimum (a fifth of the cost) lost Vagina 0.027 on the small phantoms. One pass over a
    whole working grid (the five-structure network, the refiner's region) was faster still but cost
    Anorectum 0.011-0.023, LN_ParaAortic 0.02-0.04 Dice: stage 1 and the refiner keep their windows.
    """
    from cervicontour.model import infer
    from cervicontour.preprocess import prepare_image

    names = list(model.plan.structures)
    needed = set(names) if needed is None else set(needed)
    taken = {name: channel for name, channel in fallback_channels(model).items() if name in needed}
    own = needed & set(names) - set(taken)
    if prepared is None and (own or not taken or same_preparation(model.plan, model.fallback.plan)):
        prepared = prepare_image(image, model.plan)
    theirs = None
    if taken:
        shared = prepared if same_preparation(model.plan, model.fallback.plan) else None
        theirs = working_probabilities(image, model.fallback, tta=tta, device=device, needed=set(taken), prepared=shared, parts_box=parts_box)
    if theirs is not None and not own:
        working = np.zeros((len(names), *theirs.shape[1:]), theirs.dtype)
    else:
        pad_value = float(model.plan.normalization.apply(np.array([-1024.0]))[0])
        box = parts_region(own, taken, theirs, model.plan.patch_size, model.plan.spacing_mm) if parts_box and theirs is not None else None

        def run(array):
            return infer.predict_probabilities(model.network, array, model.plan.patch_size, pad_value=pad_value, overlap=PREDICT_OVERLAP, device=device, mirror_axes=(0,) if tta else ())
        if box is None:
            working = run(prepared.image)
        else:
            working = np.zeros((len(names), *prepared.image.shape), np.float32)
            working[(slice(None), *box)] = run(prepared.image[box])
        if theirs is not None and theirs.shape[1:] != working.shape[1:]:
            raise InputError(f"the fallback model's working grid {theirs.shape[1:]} differs from the model's {working.shape[1:]}")
    for name, channel in taken.items():
        working[names.index(name)] = theirs[channel]
    return working


#: How far beyond its compound (≥ 0.5 in the fallback) a parts-only network is run: the rules and
#: the refiner move a compound's surface by a few millimetres; the rest is the network's context
#: (accuracy against the whole-grid windows: benchmarks/predict_speed.py --accuracy).
PARTS_MARGIN_MM = 30.0


def parts_region(own: set[str], taken: Mapping[str, int], theirs: np.ndarray, patch_size, spacing_mm) -> tuple[slice, ...] | None:
    """The working-grid box a network must cover when every channel it runs for (``own``) is a
    part of a CTVp its fallback predicts (``taken``: name → channel of ``theirs``): the
    compounds' voxels ≥ 0.5 grown by :data:`PARTS_MARGIN_MM`, then to at least one patch (centred,
    slid inside the grid), so the network sees the context it sees in its windows. ``None`` (the
    whole grid) when a channel is not such a part (nodal groups are not: they compose a CTVn or,
    para-aortic, extend beyond it) or the fallback finds no CTVp.

    Example:
        >>> theirs = np.zeros((1, 100, 100, 100), np.float32); theirs[0, 40:50, 40:50, 90:95] = 1
        >>> parts_region({"Cervix", "Uterus"}, {"CTVp": 0}, theirs, (32, 48, 32), (2.0, 2.0, 3.0))
        (slice(25, 65, None), slice(21, 69, None), slice(68, 100, None))
        >>> parts_region({"Cervix", "Bladder"}, {"CTVp": 0}, theirs, (32, 48, 32), (2.0, 2.0, 3.0)) is None
        True

    A grid no larger than the patch is covered whole (the small phantoms: the same prediction as
    without the box).
    """
    compounds = set()
    for name in own:
        compound = next((c for c, parts in COMPOUND.items() if name in parts and c in taken), None)
        if compound is None or compound == "CTVn":  # nodal groups may compose a CTVn or extend beyond it
            return None
        compounds.add(compound)
    hot = np.zeros(theirs.shape[1:], bool)
    for compound in compounds:
        hot |= theirs[taken[compound]] >= 0.5
    if not hot.any():
        return None
    shape = np.asarray(hot.shape)
    where = np.argwhere(hot)
    margin = np.ceil(PARTS_MARGIN_MM / np.asarray(spacing_mm, float)).astype(int)
    lo, hi = where.min(0) - margin, where.max(0) + 1 + margin
    short = np.maximum(np.minimum(np.asarray(patch_size), shape) - (hi - lo), 0)
    lo, hi = lo - short // 2, hi + short - short // 2
    shift = np.maximum(-lo, 0) - np.maximum(hi - shape, 0)  # slide back inside the grid
    lo, hi = np.maximum(lo + shift, 0), np.minimum(hi + shift, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def same_preparation(plan, other) -> bool:
    """Whether two plans put an image on the same working grid with the same normalisation."""
    keys = ("spacing_mm", "normalization", "body_threshold_hu", "margin_mm")
    return all(getattr(plan, k) == getattr(other, k) for k in keys)


def fallback_channels(model) -> dict[str, int]:
    """``{output name: the fallback's channel}`` for every channel ``model`` takes from its fallback."""
    if model.fallback is None:
        return {}
    names, theirs = set(model.plan.structures), list(model.fallback.plan.structures)
    return {name: theirs.index(name) for structure in model.fallback_structures
            for name in (structure, *COMPOUND.get(structure, ())) if name in names and name in theirs}  # fmt: skip


def active_refiner(model):
    """The refiner ``predict`` applies: the fallback's when its structure is one the fallback predicts."""
    fallback = model.fallback
    theirs = active_refiner(fallback) if fallback is not None else None  # down the chain
    if theirs is not None and theirs.structure in model.fallback_structures:
        return theirs
    if model.refiner is not None and model.refiner.structure in model.fallback_structures:
        return None  # the fallback predicts that structure, without a second stage
    return model.refiner


def _refiner_inputs(image: Volume, box, names, values: np.ndarray, refiner) -> tuple[Volume, dict[str, np.ndarray]]:
    """What a refiner reads from stage 1: the CT over the box (HU, the box's geometry) and the
    coarse maps it names (the same in ``predict`` and in training)."""
    ct_box = _box_volume(image, box).with_array(np.asarray(image.array[box], np.float32))
    return ct_box, {n: values[names.index(n)] for n in refiner.inputs}


def _compose_targets(structures: tuple[str, ...], working: np.ndarray, nodal_groups: Sequence[str] | None):
    """Add CTVn = voxel-wise max of the chosen nodal-group probabilities when the model predicts
    the groups but not CTVn itself (max of probabilities = union of the thresholded masks). A model
    that predicts CTVn itself and the groups keeps its own CTVn unless groups are chosen; a choice
    replaces it by the union of the chosen groups."""
    from cervicontour.postprocess.compose import parse_parts
    from cervicontour.structures import DEFAULT_NODAL_GROUPS, GROSS_DISEASE

    predicted = [n for n in structures if n in COMPOUND["CTVn"]]
    if not predicted or ("CTVn" in structures and nodal_groups is None):
        if nodal_groups is not None:
            raise InputError(
                f"this model predicts {'CTVn as one structure' if 'CTVn' in structures else 'no CTVn'} and none of its nodal groups "
                f"({', '.join(COMPOUND['CTVn'])}), so it cannot compose a CTVn from the chosen groups ({', '.join(nodal_groups)}); "
                "drop --nodal-groups/--para-aortic, or use a model that predicts the groups (the default model, or `cervicontour fit --init default`)"
            )
        return structures, working, {}
    chosen = parse_parts("CTVn", DEFAULT_NODAL_GROUPS if nodal_groups is None else nodal_groups)
    use = [n for n in chosen if n in predicted]
    # a choice the model cannot honour is an error, never silently narrowed (gross disease excepted:
    # a model without a GTVn channel predicts "no pathological node", which the choice allows)
    missing = [n for n in chosen if n not in predicted and n not in GROSS_DISEASE]
    if missing or not use:
        missing = missing or chosen
        raise InputError(
            f"this model does not predict the nodal group{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it predicts {', '.join(predicted)}), so it cannot compose the chosen CTVn ({', '.join(chosen)}); "
            "choose among the groups it predicts with --nodal-groups"
        )
    ctvn = np.max(working[[structures.index(n) for n in use]], axis=0)
    if "CTVn" in structures:  # the chosen groups replace the model's own CTVn
        working = working.copy()
        working[structures.index("CTVn")] = ctvn
        return structures, working, {"CTVn": use}
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


def _structure_record(p: np.ndarray, voxels: int, voxels_before_rules: int, voxel_cc: float, *, name: str | None = None) -> dict:
    """Volume, uncertainty (mean binary entropy, bits, of the working-grid voxels with p > 0.05) and
    the "review closely" flag against ``name``'s calibrated threshold: :mod:`cervicontour.postprocess.flags`."""
    from cervicontour.postprocess.flags import structure_record

    return structure_record(p, voxels, voxels_before_rules, voxel_cc, name=name)


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


def find_inputs(path: str | os.PathLike, *, all_cases: bool = False, patient_id: str | None = None) -> list[InputCase]:
    """What to predict: a NIfTI file, a DICOM series folder, or a cohort folder.

    For a cohort, the hold-out (unlabelled) patients when it has any, else every patient;
    ``all_cases=True`` takes every patient. Case names: a cohort's patient ids; a NIfTI file's
    :func:`~cervicontour.cohort.case_id` (``ct_0042.nii.gz`` → ``ct_0042``, ``P01/image.nii.gz`` →
    ``P01``); a DICOM series' PatientID (characters other than letters, digits, ``_-.`` become
    ``_``; the folder's name when it has none). ``patient_id`` names a single case instead.

    Raises:
        InputError: no such input; ``patient_id`` for several cases or not usable as a folder name.
    """
    from cervicontour.cohort import case_id
    from cervicontour.export.rtstruct_import import safe_stem
    from cervicontour.io import is_nifti, read_volume

    path = Path(path)
    if patient_id is not None and safe_stem(patient_id) != patient_id:
        raise InputError(f"patient id {patient_id!r}: it names the case's output folder; expected letters, digits, '_', '-' or '.' "
                         f"(at most 64), e.g. {safe_stem(patient_id)!r}")
    if path.is_file():
        if not is_nifti(path):
            raise InputError(f"{path}: expected a NIfTI CT (.nii/.nii.gz), a DICOM series folder or a cohort folder")
        return [InputCase(patient_id or case_id(path), path, lambda: read_volume(path))]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    if not any(p.is_dir() for p in path.iterdir()):  # a DICOM series folder
        from cervicontour.io.dicom import read_patient_id

        named = read_patient_id(path)
        return [InputCase(patient_id or (safe_stem(named) if named else path.name), path, lambda: read_volume(path))]
    from cervicontour.cohort import load_cohort

    cohort = load_cohort(path)
    cases = cohort.cases() if all_cases or not cohort.holdout() else cohort.holdout()
    cases = [c for c in cases if c.image_path is not None]
    if not cases:
        raise InputError(f"{path}: no patient with an image to predict")
    if patient_id is not None and len(cases) > 1:
        raise InputError(f"{path}: {len(cases)} cases to predict, but --patient-id names one; drop it (each case keeps its cohort id) "
                         "or predict the one case's image")
    return [InputCase(patient_id or c.patient_id, Path(c.image_path), c.load_image, tuple(c.structure_names)) for c in cases]


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
    force: bool = False,
    who: str | None = None,
    on_case=None,
    patient_id: str | None = None,
) -> list[Path]:
    """Predict every input case and write the cohort layout plus ``prediction.json`` per case.

    Each case is named as :func:`find_inputs` says (``patient_id`` names a single case).

    ``nodal_groups``: see :func:`predict_case`; ``"reference"`` composes each labelled cohort
    case's CTVn from the groups its reference contours include (to evaluate a model against the
    clinicians' per-patient choice of nodal fields). The parts each composed target was made of
    are a choice, logged like ``compose``'s in the case's ``compose_log.jsonl`` (action
    ``"predict"``: ``who``, when, the parts asked for and used, the SHA-256 of every part mask and
    of the composed mask as written; :func:`cervicontour.postprocess.compose.log_predicted_choice`).

    Every image passes the input gate (:func:`cervicontour.io.gate.require_ct`) first; ``force``
    lets its plausibility checks pass (they become out-of-scope reasons in the record), and
    :func:`cervicontour.validate.scope.out_of_scope` adds the anatomy the model was not made for.
    All or nothing: the cases are written to a staging folder beside ``out`` and moved into
    ``out`` once every case has succeeded; a failure leaves ``out`` as it was.

    Returns:
        the ``prediction.json`` paths, one per case.

    Raises:
        InputError: an image the gate refuses, an unusable model or input path; nothing is written.
    """
    from cervicontour.cohort import write_case
    from cervicontour.export.provenance import PREDICTION_SCHEMA
    from cervicontour.io.atomic import check_writable, staged_folder
    from cervicontour.io.gate import require_ct
    from cervicontour.model import load_model
    from cervicontour.model.run_files import write_json
    from cervicontour.validate.scope import out_of_scope

    cases = find_inputs(input_path, all_cases=all_cases, patient_id=patient_id)
    check_writable(out, folder=True)
    _check_replaceable(Path(out), cases)
    loaded, load_s = None, 0.0  # the model is loaded once the first image has passed the gate
    out = Path(out)
    written = []
    with contextlib.ExitStack() as stack:
        stage = None  # made once the first case is ready to be written: nothing is touched before
        for case in cases:
            t_case = time.perf_counter()
            image = case.load()
            forced = require_ct(image, source=case.source, force=force)
            read_s = time.perf_counter() - t_case
            if loaded is None:  # once the first image has passed the gate
                t0 = time.perf_counter()
                loaded = load_model(model, device=device)
                load_s = time.perf_counter() - t0
                t_case += load_s
            groups = reference_nodal_groups(case.source, case.structures) if nodal_groups == "reference" else nodal_groups
            result = predict_case(image, loaded, rules=rules, tta=tta, device=device, keep_probabilities=save_probabilities, nodal_groups=groups)
            t_write = time.perf_counter()
            stage = stage or stack.enter_context(staged_folder(out))
            folder = write_case(stage, case.patient_id, None, result.masks)
            if save_probabilities:
                from cervicontour.io import write_nifti

                for name, prob in result.probabilities.items():
                    percent = np.rint(np.clip(prob.array, 0, 1) * 100).astype(np.uint8)
                    write_nifti(prob.with_array(percent), folder / "probabilities" / f"{name}.nii.gz")
            timings = {"model_load": round(load_s, 3), "read": round(read_s, 3), **result.timings_s, "write": round(time.perf_counter() - t_write, 3)}
            timings["total_case"] = round(time.perf_counter() - t_case, 3)
            record = {
                "schema": PREDICTION_SCHEMA,
                "patient_id": case.patient_id,
                "input": {"path": str(case.source), "sha256": image_sha256(image), "shape": list(image.shape), "spacing_mm": list(image.spacing_mm), "orientation": image.orientation},
                "model": {"name": loaded.name, "version": loaded.version, "config_sha256": loaded.config_sha256, "path": str(loaded.path), "structures": list(loaded.structures),
                          "refined": [r.structure for r in [active_refiner(loaded)] if r is not None],
                          "fallback": {"structures": list(loaded.fallback_structures), "name": loaded.fallback.name, "version": loaded.fallback.version} if loaded.fallback is not None else None},
                "settings": {"tta": tta, "device": device, "probabilities_saved": save_probabilities, "probabilities_unit": "percent (uint8)"},
                "structures": result.structures,
                "composed": result.composed,
                "partitions": result.partitions,
                "review_closely": [n for n, r in result.structures.items() if r["review_closely"]],
                "out_of_scope": out_of_scope(image, result.masks, forced=forced, structures=result.structures),
                "rule_changes": [asdict(c) for c in result.changes],
                "timings_s": timings,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "disclaimer": "draft contours for clinician review; not for clinical use without review",
            }
            write_json(folder / "prediction.json", record)
            if result.composed:  # the choice of parts, logged as `compose` logs a clinician's
                from cervicontour.postprocess.compose import log_predicted_choice
                from cervicontour.structures import DEFAULT_NODAL_GROUPS

                chosen_by = "reference" if nodal_groups == "reference" else "default" if groups is None else "option"
                log_predicted_choice(folder, result.composed, requested=DEFAULT_NODAL_GROUPS if groups is None else groups, chosen_by=chosen_by, who=who)
            written.append(out / case.patient_id / "prediction.json")
            if on_case:
                on_case(case.patient_id)
    return written


#: What ``predict`` writes in a case folder: a case folder holding anything else is not replaced.
PREDICT_WRITES = frozenset({"structures", "probabilities", "prediction.json", "RS.dcm", "CT", "report"})


def _check_replaceable(out: Path, cases: Sequence[InputCase]) -> None:
    """Refuse, before any work, an ``out`` whose case folders hold the input or files predict did
    not write (a clinician's review log, composed masks): replacing them would lose them. A
    ``compose_log.jsonl`` holding only predict's own records is predict's."""
    from cervicontour.postprocess.compose import LOG_FILE, only_predict_records

    for case in cases:
        folder = out / case.patient_id
        if not folder.is_dir():
            continue
        if case.source.resolve().is_relative_to(folder.resolve()):
            raise InputError(f"{folder}: holds the input {case.source}; expected --out outside the input — choose another folder")
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in PREDICT_WRITES and not (p.name == LOG_FILE and only_predict_records(folder)))
        if foreign:
            raise InputError(f"{folder}: holds {', '.join(foreign[:5])}, which predict did not write (a review log, composed masks?); "
                             "predicting again would replace the folder and lose them — choose another --out, or move them aside")


def refine_training_cases(model, cases, refiner, *, nodal_groups="reference", progress=None, device: str = "cpu") -> list:
    """Run ``model`` (stage 1) on labelled ``cases`` and turn each into a training case for
    ``refiner`` (:func:`cervicontour.model.refine.refine_case`): exactly the inputs ``predict``
    gives the refiner, with the reference mask of ``refiner.structure`` as the label.

    Args:
        model: the stage-1 model (its own refiner, if any, is not used).
        cases: :class:`cervicontour.cohort.Case` objects with the refined structure.
        nodal_groups: ``"reference"`` composes each case's CTVn from its reference's nodal
            groups (as the evaluation does), ``"notes"`` from the groups the case's note records
            (:func:`cervicontour.validate.notes.nodal_groups_for`: a cohort with compound masks
            only), or a fixed list, or None for the default.
        progress: called with each case's patient id.
    """
    from cervicontour.model.refine import refine_case
    from cervicontour.validate.notes import nodal_groups_for

    out = []
    for case in cases:
        if nodal_groups == "reference":
            groups = reference_nodal_groups(case.patient_id, case.structure_names)
        else:
            groups = nodal_groups_for(case.note) if nodal_groups == "notes" else nodal_groups
        if not set(model.plan.structures) & set(COMPOUND["CTVn"]):
            groups = None  # a model that predicts CTVn itself has no groups to compose
        image = case.load_image()
        names, _, _, values, box = _stage1(image, model, tta=False, device=device, nodal_groups=groups)
        if not values.size:
            continue
        ct_box, coarse = _refiner_inputs(image, box, names, values, refiner)
        reference = case.load_structure(refiner.structure).array[box]
        out.append(refine_case(refiner, ct_box, coarse, reference, model.plan.normalization, case.patient_id))
        if progress is not None:
            progress(case.patient_id)
    return out


def train_refiner_run(
    stage1,
    cohort_root,
    out,
    *,
    structure: str = "CTVn",
    context: Sequence[str] = ("CTVp", "Anorectum", "Bladder"),
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    validation_patients: int = 8,
    on_case=None,
    on_step=None,
) -> dict:
    """Train a second stage (:mod:`cervicontour.model.refine`) for ``structure`` on top of the
    model ``stage1`` and write ``OUT/model.pt`` (stage 1 + refiner, float32) and ``OUT/refiner.json``.

    The split: a ``stage1`` run folder's own training/validation patients (its ``run.json``), so
    the refiner never trains on the patients that chose stage 1; otherwise the labelled patients
    with ``structure``, the last ``validation_patients`` (at most a fifth) of a seeded shuffle for
    validation.
    CTVn is composed per patient from the reference's nodal groups when every patient has them.

    Returns:
        the training record (also in ``refiner.json``).
    """
    from cervicontour.cohort import load_cohort
    from cervicontour.model import load_model, save_model
    from cervicontour.model.refine import new_refiner, train_refiner
    from cervicontour.model.run_files import write_json
    from cervicontour.volume import lps_axes

    model = load_model(stage1)
    model.refiner = None
    cohort = load_cohort(cohort_root)
    run_json = Path(stage1) / "run.json"
    if run_json.is_file():
        run = json.loads(run_json.read_text())
        train_ids, val_ids = list(run["train_cases"]), list(run["val_cases"])
    else:
        ids = [c.patient_id for c in cohort.labelled() if c.has(structure) or (structure == "CTVn" and any(n in COMPOUND["CTVn"] for n in c.structure_names))]
        ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
        n_val = min(validation_patients, len(ids) // 5)  # at most a fifth: a small cohort keeps most to train on
        train_ids, val_ids = ids[: len(ids) - n_val], ids[len(ids) - n_val :]
    if not train_ids:
        raise InputError(f"{cohort_root}: no labelled patient with {structure} to train a refiner on")
    spacings = []
    for pid in train_ids:
        image = cohort[pid].load_image()
        order, _ = lps_axes(image.direction)
        spacings.append([image.spacing_mm[a] for a in order])
    spacings = np.asarray(spacings)
    refiner = new_refiner(structure, tuple(context), spacings.min(0), spacings.max(0), seed=seed)
    nodal = "reference" if all(any(n in COMPOUND["CTVn"] for n in cohort[p].structure_names) for p in train_ids + val_ids) else None
    train_cases = refine_training_cases(model, [cohort[p] for p in train_ids], refiner, nodal_groups=nodal, progress=on_case)
    val_cases = refine_training_cases(model, [cohort[p] for p in val_ids], refiner, nodal_groups=nodal, progress=on_case)
    if not train_cases:
        raise InputError(f"the stage-1 model finds no {structure} (probability ≥ {refiner.region_threshold}) in any of the {len(train_ids)} training patients; train it first")
    record = train_refiner(refiner, train_cases, val_cases, steps=steps, minutes=minutes, seed=seed, progress=on_step)
    record.update(stage1=str(stage1), cohort=str(cohort_root), structure=structure, context=list(context), nodal_groups=nodal or "default")
    refiner.meta = {k: v for k, v in record.items() if k != "curve"}
    out = Path(out)
    save_model(out / "model.pt", model.network, model.plan, model.arch, name=model.name, version=model.version, config_sha256=model.config_sha256,
               meta={**model.meta, "refiner": refiner.meta}, refiner=refiner)  # fmt: skip
    write_json(out / "refiner.json", record)
    return record
