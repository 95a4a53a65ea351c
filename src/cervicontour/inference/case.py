"""One CT in, draft contours out, on the CT's exact grid: :func:`predict_case`.

It reads like the data-flow diagram::

    io → preprocess (reorient, crop, resample, normalise) → networks (sliding window, TTA)
       → preprocess⁻¹ (back onto the input grid) → [refiner: second stage near the input's resolution]
       → rules.enforce → masks + record

Files in, files out (a NIfTI file, a DICOM series, a cohort): :mod:`.cohort`. Composing the
compound targets from predicted parts: :mod:`.targets`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cervicontour.contours.flags import structure_record
from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND
from cervicontour.inference.targets import compose_targets, parts_partition
from cervicontour.volume import Volume

#: Sliding-window overlap at inference (training validation uses 0.5): 0.3 needs ~40 % fewer windows
#: on a full-size CT, for the 15 s predict budget on this CPU.
PREDICT_OVERLAP = 0.3
# "Review closely" flags (per-structure calibrated thresholds): cervicontour.contours.flags


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
        model: a :class:`cervicontour.networks.bundle.Model` (see :func:`cervicontour.networks.bundle.load_model`).
        rules: clinicians' rules for :func:`~cervicontour.rules.enforce` (default: packaged).
        tta: also predict the left-right mirrored image and average (2× the model time).
        keep_probabilities: also return the probability maps on the input grid.
        nodal_groups: for a model that predicts the CTVn parts (``LN_*``, ``GTVn``) instead of
            CTVn: the parts this patient's CTVn is made of (default
            :data:`~cervicontour.structures.DEFAULT_NODAL_GROUPS`; add ``LN_ParaAortic`` when the
            clinician extends the field). Including para-aortic nodes is a clinical decision the
            CT does not show, so the model predicts every group and the choice composes CTVn.

    A model with a refiner (:mod:`cervicontour.networks.refine`) replaces that structure's
    probabilities by the refined ones before the rules; the per-structure uncertainty stays the
    working-grid one.

    Returns:
        :class:`CasePrediction`. A structure the model finds nowhere gets an all-zero mask and
        is flagged for close review.
    """
    from cervicontour.rules import enforce

    plan, clock = model.plan, _Clock()
    names, working, composed, values, box = stage_one(image, model, tta=tta, device=device, nodal_groups=nodal_groups, clock=clock)
    box_grid = _box_volume(image, box)
    # 3b. second stage (when the model has one): refine one structure near the input's resolution
    refiner = active_refiner(model)
    if refiner is not None and values.size:
        from cervicontour.networks.refine import refine

        ct_box, coarse = refiner_inputs(image, box, names, values, refiner)
        values[names.index(refiner.structure)] = refine(refiner, ct_box, coarse, plan.normalization, device=device, mirror_axes=(0,) if tta else ())
        clock.lap("refine")
    probabilities = {name: box_grid.with_array(values[c]) for c, name in enumerate(names)}
    # 4. the clinicians' rules, with every change reported (on the composed targets;
    #    the parts follow their target below)
    partitions = parts_partition(names, composed)
    parts = (set(COMPOUND["CTVn"]) & set(names) if composed else set()) | {p for ps in partitions.values() for p in ps}
    ruled = {n: v for n, v in probabilities.items() if n not in parts}
    enforced = enforce(ruled, rules=rules) if values.size else None
    clock.lap("rules")
    # 5. assemble full-grid masks and the per-structure record; each compound is split into its
    #    parts by the rule fit's targets use (every part inside it, their union it)
    from cervicontour.contours.parts import partition_compound

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
        voxels = int(np.count_nonzero(full[box])) if enforced is not None else 0  # nothing outside the box
        if name in split:  # a part's voxels go to siblings or follow its compound's rules: the compound's flag says so
            before = voxels
        records[name] = structure_record(working[c], voxels, before, image.voxel_volume_cc, name=name)
    kept = {}
    if keep_probabilities:
        for c, name in enumerate(names):
            full = np.zeros(image.shape, np.float32, order="F")
            if values.size:
                full[box] = values[c]
            kept[name] = image.with_array(full, structure=name)
    clock.lap("assemble")
    return CasePrediction(masks, list(enforced.changes) if enforced else [], records, clock.laps, kept, composed, partitions)


def stage_one(image: Volume, model, *, tta: bool, device: str, nodal_groups, clock: "_Clock | None" = None):
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
    names, working, composed = compose_targets(tuple(plan.structures), working, nodal_groups)
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
    from cervicontour.networks import infer
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


def refiner_inputs(image: Volume, box, names, values: np.ndarray, refiner) -> tuple[Volume, dict[str, np.ndarray]]:
    """What a refiner reads from stage 1: the CT over the box (HU, the box's geometry) and the
    coarse maps it names (the same in ``predict`` and in training)."""
    ct_box = _box_volume(image, box).with_array(np.asarray(image.array[box], np.float32))
    return ct_box, {n: values[names.index(n)] for n in refiner.inputs}


def _box_volume(image: Volume, box: tuple[slice, ...]) -> Volume:
    start = np.asarray([s.start or 0 for s in box])
    shape = tuple(max((s.stop or 0) - (s.start or 0), 0) for s in box)
    origin = image.index_to_world(start)
    return Volume(np.zeros(shape, np.uint8), image.spacing_mm, tuple(origin), image.direction)


class _Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.t, 3)
        self.t = now


