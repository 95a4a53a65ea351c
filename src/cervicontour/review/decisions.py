"""The review log (``OUT_DIR/<patient_id>/review.json``), composed CTVs, and the accepted set as RTSTRUCT.

``review.json`` is append-only: ``{"patient_id", "entries": [...]}``; each entry carries the
SHA-256 of the entry before it (``previous_sha256``), and :func:`append_entry` refuses to write
when the entries already on disk are not the ones it read (an edited log is reported, not
overwritten). Reading, appending and rewriting happen under a cross-process file lock
(:func:`cervicontour.io.atomic.file_lock`), so several review servers or CLI writers on one
folder never lose an entry. Composed masks go to ``review/composed/<Target>_composed_<stamp>.nii.gz`` — the
model's drafts are never replaced.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io.atomic import file_lock, file_sha256, write_text_atomic
from cervicontour.review.cases import (
    REVIEW_FOLDER,
    REVIEW_LOG,
    ct_source,
    find_mask,
    mask_files,
    stamp,
)

DECISIONS = ("accept", "reject", "needs-edit")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _entry_sha256(entry: Mapping) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_log(case: str | os.PathLike) -> list[dict]:
    """The review entries of a case, oldest first (``[]`` when it has no ``review.json``).

    Raises:
        InputError: ``review.json`` is not the log this page writes, or its hash chain is broken
            (an entry was edited or removed after it was written).
    """
    path = Path(case) / REVIEW_LOG
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        assert isinstance(entries, list)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise InputError(f"{path}: expected the review log ({{'patient_id', 'entries': [...]}}); leave it as written and move it aside to start anew") from None
    previous = None
    for number, entry in enumerate(entries):
        if entry.get("previous_sha256") != previous:
            raise InputError(f"{path}: entry {number} does not follow entry {number - 1} (previous_sha256 differs); the log was edited — restore it from a backup")
        previous = _entry_sha256(entry)
    return entries


def append_entry(case: str | os.PathLike, entry: Mapping) -> dict:
    """Append ``entry`` to the case's ``review.json`` (atomically, under the cross-process lock) and
    return it as written.

    Raises:
        InputError: the log on disk is not a valid log (see :func:`read_log`); nothing is written.
    """
    case = Path(case)
    path = case / REVIEW_LOG
    with file_lock(path):
        entries = read_log(case)
        written = {**entry, "previous_sha256": _entry_sha256(entries[-1]) if entries else None}
        write_text_atomic(path, json.dumps({"patient_id": case.name, "entries": [*entries, written]}, indent=2, ensure_ascii=False) + "\n")
    return written


def _reviewer(reviewer, role: str) -> str:
    name = reviewer.strip() if isinstance(reviewer, str) else ""
    if not name:
        raise InputError(f"no reviewer name; expected the name of the clinician {role}")
    return name


def _shape(value) -> str:
    """What arrived, for an error message (type and a short excerpt)."""
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _provenance(case: Path) -> dict:
    from cervicontour.export.provenance import read_prediction_record

    info = read_prediction_record(case)
    if info is None:
        return {"model": {"name": None, "version": None, "config_sha256": None}, "input_sha256": None}
    return {
        "model": {"name": info.model.name or None, "version": info.model.version or None, "config_sha256": info.model.config_sha256 or None},
        "input_sha256": info.input.sha256 or None,
    }


def record_decisions(case: str | os.PathLike, reviewer: str, decisions: Mapping[str, Mapping], *, when: _dt.datetime | None = None) -> dict:
    """Log one review: per mask ``{"decision": accept|reject|needs-edit, "comment": str}``.

    Args:
        case: the case folder.
        reviewer: who decides (required, non-blank).
        decisions: mask id (path relative to the case, as the page lists it) → decision.

    Returns:
        The entry written: timestamp, reviewer, model name/version/config hash, and per mask its
        decision, comment, and the SHA-256 of the file reviewed.

    Raises:
        InputError: blank reviewer, no decisions, an unknown mask id or decision.
    """
    case = Path(case)
    if not case.is_dir():
        raise InputError(f"{case}: no such case folder; expected OUT_DIR/<patient_id> of a predict output")
    reviewer = _reviewer(reviewer, "accountable for the decision")
    if not isinstance(decisions, Mapping):
        raise InputError(f"decisions: expected an object {{mask id: {{'decision': ..., 'comment': ...}}}}, got {_shape(decisions)}")
    if not decisions:
        raise InputError("no decisions given; expected at least one structure with accept, reject or needs-edit")
    structures = {}
    for mask_id, choice in decisions.items():
        if not isinstance(choice, Mapping):
            raise InputError(f"{mask_id}: expected {{'decision': accept|reject|needs-edit, 'comment': text}}, got {_shape(choice)}")
        try:
            mask = find_mask(case, mask_id)
        except KeyError:
            raise InputError(f"{mask_id!r} is not a mask of {case.name}; expected one of {', '.join(m.id for m in mask_files(case))}") from None
        decision = str(choice.get("decision", "")).strip().lower()
        if decision not in DECISIONS:
            raise InputError(f"{mask_id}: decision {decision!r}; expected one of {', '.join(DECISIONS)}")
        structures[mask_id] = {"name": mask.name, "decision": decision, "comment": str(choice.get("comment") or ""), "sha256": file_sha256(mask.path)}
    entry = {"action": "review", "timestamp": (when or _now()).isoformat(), "reviewer": reviewer, **_provenance(case), "structures": structures}
    return append_entry(case, entry)


def compose(case: str | os.PathLike, reviewer: str, choices: Mapping[str, Sequence[str]], *, when: _dt.datetime | None = None) -> list[dict]:
    """Compose CTVn / CTVp from the chosen parts into new files and log it.

    Uses the compose logic of :mod:`cervicontour.contours.compose` (part names, union, the GTV
    always included) but writes ``review/composed/<Target>_composed_<stamp>.nii.gz``: the model's
    draft is kept as it is.

    Returns:
        Per target: ``{"target", "id", "requested", "used", "added", "volume_cc", "sha256", "parts_sha256"}``
        (``parts_sha256``: part → SHA-256 of its mask file, for every part used).

    Raises:
        InputError: blank reviewer, a bad part name, a chosen part the case has no mask of
            (:func:`~cervicontour.contours.compose.require_parts`), or a ``review.json`` that
            cannot take the entry (nothing is written then).
    """
    from cervicontour.io import write_nifti
    from cervicontour.contours.compose import (
        case_structure_paths,
        compose_parts,
        parse_parts,
        require_parts,
    )
    from cervicontour.structures import COMPOUND, canonical_name

    case = Path(case)
    reviewer = _reviewer(reviewer, "choosing the CTV components")
    if not isinstance(choices, Mapping) or not all(isinstance(p, (str, list, tuple)) for p in choices.values()):
        raise InputError(f"choices: expected an object {{'CTVn': [part, ...], 'CTVp': [part, ...]}}, got {_shape(choices)}")
    when = when or _now()
    read_log(case)  # a log that cannot take the entry is refused before any mask is written
    available = case_structure_paths(case)
    plans = {canonical_name(t): parse_parts(t, parts) for t, parts in choices.items() if parts}
    if not plans:
        raise InputError(f"no parts chosen; expected some of {'; '.join(f'{t}: ' + ', '.join(p) for t, p in COMPOUND.items())}")
    require_parts(case.name, plans, available)
    results = []
    written = stamp(when)
    for target, requested in plans.items():
        used, added, hashes, composed = compose_parts(target, requested, available)
        path = write_nifti(composed, case / REVIEW_FOLDER / "composed" / f"{target}_composed_{written}.nii.gz")
        results.append({
            "target": target, "id": path.relative_to(case).as_posix(), "requested": list(requested), "used": list(used), "added": list(added),
            "volume_cc": round(float(np.count_nonzero(composed.array)) * composed.voxel_volume_cc, 3), "sha256": file_sha256(path),
            "parts_sha256": hashes,
        })
    append_entry(case, {"action": "compose", "timestamp": when.isoformat(), "reviewer": reviewer, **_provenance(case), "compositions": results})
    return results


def accepted_set(case: str | os.PathLike) -> dict[str, str]:
    """Mask id → name of the masks whose latest decision is ``accept`` and whose file is unchanged since."""
    case = Path(case)
    latest: dict[str, dict] = {}
    for entry in read_log(case):
        if entry.get("action") == "review":
            latest.update(entry.get("structures", {}))
    accepted = {}
    for mask_id, record in latest.items():
        if record.get("decision") != "accept":
            continue
        try:
            mask = find_mask(case, mask_id)
        except KeyError:
            continue
        if file_sha256(mask.path) == record.get("sha256"):
            accepted[mask_id] = mask.name
    return accepted


def _written_order(mask_id: str) -> tuple[int, str]:
    """Sort key: the model's drafts first, then masks written here (composed, edited) by their time stamp."""
    if not mask_id.startswith(REVIEW_FOLDER + "/"):
        return (0, mask_id)
    return (1, mask_id.rsplit("_", 1)[-1])  # <Name>_<composed|edited>_<%Y%m%dT%H%M%S%fZ>.nii.gz


def export_accepted_rtstruct(case: str | os.PathLike, reviewer: str, *, when: _dt.datetime | None = None) -> dict:
    """Write the accepted set as an RTSTRUCT on the case's DICOM CT series and log it.

    The series is the DICOM input series, or for a NIfTI CT the case's ``CT/`` series
    (:func:`cervicontour.export.ct_series.case_series`: the one ``predict --rtstruct`` wrote, or
    written now), so the planning system gets the RTSTRUCT with the CT it references. A composed
    target replaces the draft of the same name when both are accepted. Written to
    ``review/RS_reviewed_<stamp>.dcm`` with ROI Generation Algorithm ``SEMIAUTOMATIC``. When several
    accepted masks carry one name, the one written last on this page (composed or edited) goes out.

    Raises:
        InputError: the case has no CT (or it changed since the prediction), blank reviewer, or
            nothing accepted.
    """
    from cervicontour.export.ct_series import case_series
    from cervicontour.export.provenance import read_prediction_record
    from cervicontour.export.rtstruct import write_rtstruct
    from cervicontour.io import read_nifti

    case = Path(case)
    reviewer = _reviewer(reviewer, "exporting the accepted set")
    source = ct_source(case)
    if source is None:
        raise InputError(f"{case.name}: no CT (no image.nii.gz, and prediction.json's input is gone); RTSTRUCT export needs the CT it references")
    accepted = accepted_set(case)
    if not accepted:
        raise InputError(f"{case.name}: no accepted structure (or the accepted files changed since); accept some first")
    chosen: dict[str, str] = {}
    for mask_id, name in sorted(accepted.items(), key=lambda item: _written_order(item[0])):  # the page's newest wins
        chosen[name] = mask_id
    when = when or _now()
    info = read_prediction_record(case)
    path = case / REVIEW_FOLDER / f"RS_reviewed_{stamp(when)}.dcm"
    series, _ = case_series(case, source)
    result = write_rtstruct(series, {name: read_nifti(case / mask_id) for name, mask_id in chosen.items()}, path,
                            generation="SEMIAUTOMATIC", model=info.model.name if info else "", model_version=info.model.version if info else "")
    record = {"action": "export-rtstruct", "timestamp": when.isoformat(), "reviewer": reviewer, **_provenance(case),
              "path": result.path.relative_to(case).as_posix(), "sha256": file_sha256(result.path),
              "structures": {name: {"id": mask_id, "sha256": file_sha256(case / mask_id)} for name, mask_id in chosen.items()}}
    append_entry(case, record)
    return {**record, "rois": [r.name for r in result.rois]}
