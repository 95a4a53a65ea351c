"""Clinical choices that change a structure on purpose: a CTVn extended to the para-aortic nodes.

Including the para-aortic nodes is the clinician's decision for each patient; that patient's CTVn
reaches further up than the others' (its centroid, volume and superior end move with it). Such a
CTVn is compared with the other para-aortic patients' only, and the choice is reported as one info
finding, ``cohort.clinical_choice``, instead of ``cohort.centroid`` and ``cohort.volume`` warnings.

A patient's CTVn includes the para-aortic nodes when

* the note says so (as :func:`~cervicontour.validate.notes.para_aortic_included` reads it: "para-aortic nodes included");
* the patient has an ``LN_ParaAortic`` contour (a cohort with the CTVn's parts under ``structures/sub/``);
* or, from the five compound masks alone, the CTVn grows further up than the other patients' do:
  its superior end is a superior outlier (the cohort-outlier rule: robust z against the patients
  not known to include the nodes, beyond ``outlier_z`` and more than ``centroid_floor_mm`` away)
  while its inferior end is not, and it has no empty slice on the way (a contiguous extension, as
  the para-aortic field is, not a stray piece drawn elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cervicontour.rules import Finding, Severity
from cervicontour.validate.case import CaseFeatures
from cervicontour.validate.notes import NoteContext
from cervicontour.validate.options import ValidateOptions

#: The structure a para-aortic extension changes.
EXTENDED = "CTVn"


def para_aortic_patients(
    features: list[CaseFeatures], options: ValidateOptions, notes: Mapping[str, NoteContext] | None = None
) -> dict[str, str]:
    """Patient → how we know their CTVn includes the para-aortic nodes (in words), for every such patient.

    Example:
        >>> from cervicontour.validate.notes import read_note
        >>> para_aortic_patients([CaseFeatures("p1")], ValidateOptions(), {"p1": read_note("para-aortic nodes included")})
        {'p1': 'note'}
    """
    from cervicontour.validate.robust import robust_z

    notes = notes or {}
    found: dict[str, str] = {}
    declined = set()  # the note says no para-aortic nodes: the geometry cannot say otherwise
    for f in features:
        ctx = notes.get(f.patient_id)
        if ctx is not None and "LN_ParaAortic" in ctx.absent:
            declined.add(f.patient_id)
        elif ctx is not None and "LN_ParaAortic" in ctx.mentioned:
            found[f.patient_id] = "note"
        elif "LN_ParaAortic" in f.volumes_cc:
            found[f.patient_id] = "LN_ParaAortic contour"
    ends = {f.patient_id: f.extents_mm[EXTENDED] for f in features if EXTENDED in f.extents_mm}
    gaps = {f.patient_id: f.gaps_mm.get(EXTENDED, 0.0) for f in features}
    reference = {p: e for p, e in ends.items() if p not in found}
    for pid, (low, high) in ends.items():
        if pid in found or pid in declined or gaps[pid] > 0:
            continue
        others = [e for p, e in reference.items() if p != pid]
        if len(others) < options.min_others:
            continue
        z_top, top = robust_z(high, np.array([e[1] for e in others]))
        z_bottom, bottom = robust_z(low, np.array([e[0] for e in others]))
        higher = z_top > options.outlier_z and high - top > options.centroid_floor_mm
        same_start = abs(z_bottom) <= options.outlier_z or abs(low - bottom) <= options.centroid_floor_mm
        if higher and same_start:
            found[pid] = (f"geometry: {EXTENDED} reaches {high:+.0f} mm vs the others' median {top:+.0f} mm "
                          f"({high - top:+.0f} mm further up, from the same inferior end)")  # fmt: skip
    return found


def clinical_choice_finding(chosen: Mapping[str, str], features: list[CaseFeatures], options: ValidateOptions) -> list[Finding]:
    """The ``cohort.clinical_choice`` info finding naming the para-aortic patients (none when there are none)."""
    if not chosen:
        return []
    patients = sum(1 for f in features if EXTENDED in f.volumes_cc or f.patient_id in chosen)
    listed = "; ".join(f"{pid} ({how})" for pid, how in sorted(chosen.items()))
    if len(chosen) - 1 < options.min_others:
        compared = f"not compared (fewer than {options.min_others} other such patients)"
    else:
        compared = "compared with each other's only"
    inferred = [pid for pid, how in chosen.items() if how.startswith("geometry")]
    hint = f"a clinical choice, not a contouring error: for cohort.centroid and cohort.volume these {EXTENDED}s are {compared}"
    if inferred:
        hint += (f"; {', '.join(sorted(inferred))} found from the geometry alone: say 'para-aortic nodes included' "
                 f"in notes.csv if so, otherwise the {EXTENDED} extends too far up")  # fmt: skip
    return [
        Finding(
            "cohort.clinical_choice", None, EXTENDED, Severity.INFO,
            f"one nodal field for all {patients} patients, or each patient's choice recorded",
            f"{EXTENDED} includes the para-aortic nodes for {len(chosen)} of {patients} patients: {listed}",
            hint, value=len(chosen), unit="patients",
        )
    ]
