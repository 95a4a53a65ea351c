"""What each output channel of a fitted model trains on, when the cohort has compound masks only.

A hospital labels the five compound structures (Bladder, Anorectum, CTVn, CTVp, Parametrium); a
transfer source such as the shipped default model predicts some of them under other names or as
parts (the CTVn as its nodal groups ``GTVn``, ``LN_CommonIliac``, ``LN_Pelvic``, ``LN_ParaAortic``).
:func:`channel_plan` matches the source's channels to the cohort *by structure name* and says, per
channel, where its training target comes from:

* ``label``: the cohort has this structure: its own mask.
* ``parts``: a part of a compound the cohort has (a nodal group of the CTVn; Cervix, GTVp, Uterus,
  Vagina of the CTVp): the cohort's compound mask *partitioned* among the parts by the source's
  own part probabilities (:func:`cervicontour.contours.parts.partition_compound`, the rule
  ``predict`` splits a predicted compound by). The parts' union is exactly the clinicians'
  compound, so the fitted model learns the hospital's CTVn and CTVp while keeping the split the
  clinician chooses from. A compound the source also predicts itself (the CTVp) trains on the
  cohort's mask (``label``) beside its parts.
  The para-aortic group is a per-patient choice: its target exists only for patients whose note
  says the nodes were included (``"para-aortic nodes included"``); for the others it is unknown
  (left out of the loss), never "empty".
* ``distilled``: neither: the source's own thresholded prediction, so the channel is held to
  what the source did instead of training on nothing.
* ``new``: a cohort structure the source lacks (a new head row, initialised at the prior).

:func:`write_targets` writes the result as a cohort folder (images hard-linked, never copied or
modified) that the trainer reads like any other.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.io.atomic import staged_folder
from cervicontour.contours.parts import partition_compound
from cervicontour.structures import COMPOUND, GROSS_DISEASE
from cervicontour.validate.notes import nodal_groups_for, para_aortic_included

#: per-patient record of what its targets are, inside the patient's target folder
TARGETS_RECORD = "targets.json"


@dataclass(frozen=True)
class ChannelPlan:
    """``structures``: the fitted model's channels, in order; ``source[name]``: where each one's
    training target comes from (``label``, ``parts``, ``distilled``, ``new``)."""

    structures: tuple[str, ...]
    source: Mapping[str, str]

    def to_dict(self) -> dict:
        return {"structures": list(self.structures), "targets": dict(self.source)}


def channel_plan(source_structures: Sequence[str] | None, cohort_structures: Sequence[str]) -> ChannelPlan:
    """Match the source's channels to the cohort's structures by name.

    Args:
        source_structures: the init model's channels (None: from scratch).
        cohort_structures: the structures the cohort's training patients are labelled with.

    Returns:
        :class:`ChannelPlan`: the source's channels first (in its order), then the cohort's
        structures the source neither predicts nor composes from parts.

    Example:
        >>> p = channel_plan(("Bladder", "LN_Pelvic", "Kidney_L"), ("Bladder", "CTVn"))
        >>> p.structures, dict(p.source)
        (('Bladder', 'LN_Pelvic', 'Kidney_L'), {'Bladder': 'label', 'LN_Pelvic': 'parts', 'Kidney_L': 'distilled'})
    """
    cohort = list(dict.fromkeys(cohort_structures))
    if not source_structures:
        return ChannelPlan(tuple(cohort), {n: "new" for n in cohort})
    plan: dict[str, str] = {}
    for name in source_structures:
        compound = next((c for c, parts in COMPOUND.items() if name in parts), None)
        if name in cohort:
            plan[name] = "label"
        elif compound is not None and compound in cohort:
            plan[name] = "parts"
        else:
            plan[name] = "distilled"
    composed = {c for c, parts in COMPOUND.items() if any(plan.get(p) == "parts" for p in parts)}
    for name in cohort:
        if name not in plan and name not in composed:
            plan[name] = "new"
    return ChannelPlan(tuple(plan), plan)


def source_probabilities(model, image, *, floor: float = 0.01) -> dict[str, np.ndarray]:
    """The source model's stage-1 probability per channel on ``image``'s grid (float32 arrays),
    computed wherever any channel reaches ``floor`` (0 elsewhere): a part's *relative*
    probability matters where it is below 0.5, which ``predict`` does not map back.

    A source with a fallback (the shipped default: its nodal groups come from its previous network)
    gives the channels of its ``fallback_structures`` from that fallback, as ``predict`` does."""
    from cervicontour.inference.case import working_probabilities
    from cervicontour.preprocess import prepare_image

    prepared = prepare_image(image, model.plan)
    working = working_probabilities(image, model, tta=False, device="cpu", prepared=prepared, parts_box=False)  # the label may reach beyond the predicted CTVp
    values, box = prepared.back_to_input(working, threshold_region=floor)
    out = {}
    for c, name in enumerate(model.plan.structures):
        full = np.zeros(image.shape, np.float32)
        if values.size:
            full[box] = values[c]
        out[name] = full
    return out


def write_targets(
    cases,
    model,
    channels: ChannelPlan,
    out: str | os.PathLike,
    *,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Write the training targets of ``cases`` as a cohort folder ``out`` (see the module docstring).

    Each patient is written to a temporary folder and renamed into place, so a run killed here and
    resumed redoes only the patient it was writing. Images are hard links (a copy only where the
    file system refuses a link); the sources are never modified.

    Returns:
        patient id → ``{"para_aortic": bool, "parts_voxels": {part: n}, "distilled": [names]}``.
    """
    from cervicontour.cohort import write_case, write_notes
    from cervicontour.io import is_nifti, strip_nifti_suffix

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, dict] = {}
    needs_source = any(v in ("parts", "distilled") for v in channels.source.values())
    for case in cases:
        folder = out / case.patient_id
        info: dict = {"para_aortic": para_aortic_included(case.note), "parts_voxels": {}, "distilled": []}
        record[case.patient_id] = info
        if folder.is_dir():  # written before a kill: its record is inside it
            record[case.patient_id] = json.loads((folder / TARGETS_RECORD).read_text())
            if on_case:
                on_case(case.patient_id)
            continue
        image = case.load_image()
        probabilities = source_probabilities(model, image) if needs_source and model is not None else {}
        masks = {}
        for name, how in channels.source.items():
            if how in ("label", "new") and case.has(name):
                masks[name] = case.load_structure(name)
            elif how == "distilled" and name in probabilities:
                masks[name] = image.with_array(probabilities[name] >= 0.5, structure=name)
                info["distilled"].append(name)
        for compound, parts in COMPOUND.items():
            chosen = [p for p in parts if channels.source.get(p) == "parts"]
            if not chosen or not case.has(compound):
                continue
            if compound == "CTVn" and not info["para_aortic"]:
                chosen = [p for p in chosen if p != "LN_ParaAortic"]
            split = partition_compound(case.load_structure(compound).array, {p: probabilities[p] for p in chosen}, image.spacing_mm)
            for part, mask in split.items():
                info["parts_voxels"][part] = int(mask.sum())
                # an anatomical part's split is known even when empty (the parts split a labelled compound):
                # an empty one trains as "none here", never as unknown; gross disease is written only
                # where the source finds some (no file: left out of that patient's loss, as before)
                if mask.any() or part not in GROSS_DISEASE:
                    masks[part] = image.with_array(mask, structure=part)
        source_file = Path(case.image_path)
        linkable = source_file.is_file() and is_nifti(source_file)
        with staged_folder(out) as staging:  # the case folder appears whole, its record inside, or not at all
            write_case(staging, case.patient_id, None if linkable else image, masks)
            if linkable:
                _link(source_file, staging / case.patient_id / ("image" + source_file.name[len(strip_nifti_suffix(source_file.name)):]))
            (staging / case.patient_id / TARGETS_RECORD).write_text(json.dumps(info))
        if on_case:
            on_case(case.patient_id)
    write_notes(out, {c.patient_id: c.note for c in cases})
    return record


def _link(src: Path, dst: Path) -> None:
    """A hard link to ``src`` (the same bytes, nothing copied); a copy where links are refused."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


__all__ = ["ChannelPlan", "channel_plan", "nodal_groups_for", "para_aortic_included", "partition_compound", "write_targets"]
