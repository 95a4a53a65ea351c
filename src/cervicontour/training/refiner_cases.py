"""The refiner's training cases: stage 1 run on labelled patients, exactly as ``predict`` feeds the
refiner, and a refiner trained from them (:func:`train_refiner_run`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.inference.case import refiner_inputs, stage_one
from cervicontour.inference.targets import reference_nodal_groups
from cervicontour.structures import COMPOUND


def refine_training_cases(model, cases, refiner, *, nodal_groups="reference", progress=None, device: str = "cpu") -> list:
    """Run ``model`` (stage 1) on labelled ``cases`` and turn each into a training case for
    ``refiner`` (:func:`cervicontour.networks.refine.refine_case`): exactly the inputs ``predict``
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
    from cervicontour.networks.refine import refine_case
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
        names, _, _, values, box = stage_one(image, model, tta=False, device=device, nodal_groups=groups)
        if not values.size:
            continue
        ct_box, coarse = refiner_inputs(image, box, names, values, refiner)
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
    """Train a second stage (:mod:`cervicontour.networks.refine`) for ``structure`` on top of the
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
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.networks.refine import new_refiner, train_refiner
    from cervicontour.io.json_object import write_json
    from cervicontour.training.run_files import RUN_FILE, read_run_record
    from cervicontour.volume import lps_axes

    model = load_model(stage1)
    model.refiner = None
    cohort = load_cohort(cohort_root)
    if (Path(stage1) / RUN_FILE).is_file():
        run = read_run_record(stage1)
        train_ids, val_ids = list(run.train_cases), list(run.val_cases)
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
