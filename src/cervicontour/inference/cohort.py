"""``predict`` over files: a NIfTI file, a DICOM series folder or a cohort, written in the cohort
layout ``OUT/<patient_id>/structures/<Name>.nii.gz`` plus ``OUT/<patient_id>/prediction.json``
(each case through :func:`~cervicontour.inference.case.predict_case`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.inference.case import active_refiner, predict_case
from cervicontour.inference.targets import reference_nodal_groups
from cervicontour.volume import image_sha256


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
    of the composed mask as written; :func:`cervicontour.contours.compose.log_predicted_choice`).

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
    from cervicontour.export.provenance import PREDICTION_FILE, InputInfo, ModelInfo, PredictionRecord
    from cervicontour.io.atomic import check_writable, staged_folder
    from cervicontour.io.gate import require_ct
    from cervicontour.networks.bundle import load_model
    from cervicontour.io.json_object import write_json
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
            record = PredictionRecord(
                patient_id=case.patient_id,
                input=InputInfo(str(case.source), image_sha256(image), tuple(image.shape), tuple(image.spacing_mm), image.orientation),
                model=ModelInfo(loaded.name, loaded.version, loaded.config_sha256, str(loaded.path), tuple(loaded.structures),
                                tuple(r.structure for r in [active_refiner(loaded)] if r is not None),
                                {"structures": list(loaded.fallback_structures), "name": loaded.fallback.name, "version": loaded.fallback.version} if loaded.fallback is not None else None),
                settings={"tta": tta, "device": device, "probabilities_saved": save_probabilities, "probabilities_unit": "percent (uint8)"},
                structures=result.structures,
                composed=result.composed,
                partitions=result.partitions,
                review_closely=tuple(n for n, r in result.structures.items() if r["review_closely"]),
                out_of_scope=tuple(out_of_scope(image, result.masks, forced=forced, structures=result.structures)),
                rule_changes=tuple(asdict(c) for c in result.changes),
                timings_s=timings,
                created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )  # fmt: skip
            write_json(folder / PREDICTION_FILE, record.to_dict())
            if result.composed:  # the choice of parts, logged as `compose` logs a clinician's
                from cervicontour.contours.compose import log_predicted_choice
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
    from cervicontour.contours.compose import LOG_FILE, only_predict_records

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


