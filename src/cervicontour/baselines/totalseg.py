"""TotalSegmentator baseline: zero-shot Bladder and a guideline (rule-based) CTVn.

Labels come from TotalSegmentator (Wasserthal et al. 2023, v2 ``total`` task): run through its
Python API when it and its weights are installed, else read from an existing output — a
multi-label file or a per-class folder (``<class>.nii.gz``). The phantom's own anatomy labels
can stand in for them (:func:`labels_from_phantom`, an "oracle TotalSegmentator").

From the labels:

* **Bladder** = ``urinary_bladder`` as predicted (zero-shot, no post-processing).
* **CTVn** (Taylor et al. 2005, IJROBP 63:1604): the iliac arteries and veins (+ aorta and IVC up
  to the superior border of a chosen vertebra when ``para_aortic``) expanded by 7 mm with the
  exact world-mm margin of :func:`cervicontour.contours.margin.expand`, plus the presacral
  strip, minus bone (hips, sacrum, vertebrae, femora) and muscle (iliopsoas, glutei,
  autochthon); with ``para_aortic`` everything above that vertebra's superior border is cut
  off; the vessels themselves are always inside.
* **Presacral strip** (:func:`presacral_strip`): the voxels up to ``depth_mm`` (10 mm) anterior
  of the anterior surface of the sacrum at the S1–S2 levels, measured along the patient's AP
  axis between voxel centres. S1–S2 = the axial slices from the top of the sacral bone
  (``sacrum ∪ vertebrae_S1``) down to one sacral segment (1/5 of the sacral bone's supero-inferior
  extent) below the lowest ``vertebrae_S1`` slice; without a ``vertebrae_S1`` label, the top 2/5
  of the sacral extent (the sacrum has five fused segments). The strip spans the sacrum's full
  left-right width there. Computed on the grid re-indexed to LPS (axis permutations and flips
  only), so it is the same world-space set whatever the storage orientation.

Label sources live in :mod:`.totalseg_labels` (re-exported here).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.baselines.totalseg_labels import (
    BONES,
    ILIAC,
    LEVELS,
    MUSCLES,
    NEEDED,
    PARA_AORTIC,
    PHANTOM_TO_TOTALSEG,
    SACRAL,
    TOTAL_V2,
    TotalSegLabels,
    labels_from_folder,
    labels_from_multilabel,
    labels_from_phantom,
    load_labels,
    phantom_to_totalseg,
    run_totalsegmentator,
    totalsegmentator_status,
    world_coordinate,
)
from cervicontour.errors import InputError
from cervicontour.rules.findings import Finding, Severity
from cervicontour.volume import (
    Volume,
    array_from_lps,
    array_to_lps,
    is_oblique,
    lps_axes,
)

__all__ = [
    "PHANTOM_TO_TOTALSEG",
    "TOTAL_V2",
    "BaselineResult",
    "TotalSegLabels",
    "guideline_ctvn",
    "labels_from_folder",
    "labels_from_multilabel",
    "labels_from_phantom",
    "load_labels",
    "phantom_to_totalseg",
    "predict_cohort",
    "presacral_strip",
    "run_baseline",
    "run_totalsegmentator",
    "totalsegmentator_status",
    "write_result",
]

MARGIN_MM = 7.0
PRESACRAL_MM = 10.0
REFERENCE = "Taylor A et al. Int J Radiat Oncol Biol Phys 2005;63(5):1604-12"
REPORT_FILE = "totalseg_baseline.json"


@dataclass(frozen=True)
class BaselineResult:
    """Bladder and CTVn on the reference grid, the rule's parts, and the report (JSON-ready)."""

    bladder: Volume
    ctvn: Volume
    vessels: np.ndarray
    strip: np.ndarray
    findings: tuple[Finding, ...]
    report: dict = field(default_factory=dict)


# -------------------------------------------------------------------------------------- the rule
def presacral_strip(labels: TotalSegLabels, *, depth_mm: float = PRESACRAL_MM) -> tuple[np.ndarray, dict]:
    """The presacral strip (see the module docstring) and how it was placed.

    Returns:
        ``(mask, info)``: boolean array on the labels' grid (bone not removed yet; empty when no
        sacral label exists) and ``{"levels", "slices", "superior_inferior_mm", "depth_mm"}``.
    """
    ref = labels.reference
    empty = np.zeros(ref.shape, bool)
    sacral = labels.masks.get("sacrum", empty) | labels.masks.get("vertebrae_S1", empty)
    info: dict = {"depth_mm": depth_mm, "levels": None}
    if not sacral.any():
        return empty, info
    try:
        order, _ = lps_axes(ref.direction)
    except ValueError:
        raise InputError("cannot map the grid's axes onto the patient's LR/AP/SI axes; resample the CT axially") from None

    def to_lps(a: np.ndarray) -> np.ndarray:
        return array_to_lps(a, ref.direction)

    def from_lps(a: np.ndarray) -> np.ndarray:
        return array_from_lps(a, ref.direction)

    bone, s1 = to_lps(sacral), to_lps(labels.masks.get("vertebrae_S1", empty))
    k_sacral = np.flatnonzero(bone.any(axis=(0, 1)))
    top = int(k_sacral.max())
    fifth = int(np.ceil((top - int(k_sacral.min()) + 1) / 5))  # slices of one of the five sacral segments
    if s1.any():
        lo = int(np.flatnonzero(s1.any(axis=(0, 1))).min()) - fifth
        info["levels"] = "S1-S2: vertebrae_S1 and one sacral segment (1/5 of the sacral extent) below it"
    else:
        lo = top - 2 * fifth + 1
        info["levels"] = "S1-S2: top 2/5 of the sacral extent (no vertebrae_S1 label)"
    lo = max(lo, 0)
    slab = np.zeros_like(bone)
    slab[:, :, lo : top + 1] = bone[:, :, lo : top + 1]
    has = slab.any(axis=1)  # (LR, SI) columns that meet the sacrum
    first = np.argmax(slab, axis=1)  # index of the most anterior sacral voxel (axis 1 runs to P)
    reach = int(np.floor(depth_mm / ref.spacing_mm[order[1]] + 1e-6))
    j = np.arange(slab.shape[1])[None, :, None]
    strip = from_lps(has[:, None, :] & (j < first[:, None, :]) & (j >= first[:, None, :] - reach))
    z = np.broadcast_to(world_coordinate(ref, 2), ref.shape)[from_lps(slab)]
    info["slices"] = int(top - lo + 1)
    info["superior_inferior_mm"] = [round(float(z.min()), 2), round(float(z.max()), 2)]
    return strip, info


def _finding(check: str, structure: str | None, severity: Severity, expected: str, actual: str, hint: str,
             value: float | None = None, unit: str = "") -> Finding:
    return Finding(check, None, structure, severity, expected, actual, hint, value, unit)


def guideline_ctvn(
    labels: TotalSegLabels,
    *,
    margin_mm: float = MARGIN_MM,
    para_aortic: bool = False,
    para_aortic_top: str = "L2",
    presacral_mm: float = PRESACRAL_MM,
) -> BaselineResult:
    """Bladder and the guideline CTVn from TotalSegmentator labels (rule in the module docstring).

    Args:
        labels: TotalSegmentator classes on the output grid.
        margin_mm: isotropic vessel margin (7 mm per Taylor et al. 2005).
        para_aortic: include aorta and IVC up to the superior border of ``para_aortic_top``.
        para_aortic_top: vertebra, one of :data:`LEVELS` (``"L2"`` = up to the L1/L2 interspace).
        presacral_mm: depth of the presacral strip.

    Returns:
        A :class:`BaselineResult` (uint8 volumes on ``labels.reference``'s grid; Bladder empty with
        a warning when ``urinary_bladder`` is absent). ``report`` holds volumes, classes and rule.

    Raises:
        InputError: no iliac vessel label, an unknown level, or (with ``para_aortic``) no label
            for that vertebra.

    Example:
        >>> ct = read_nifti("ct.nii.gz")                                   # doctest: +SKIP
        >>> result = guideline_ctvn(labels_from_multilabel("seg.nii.gz", ct))   # doctest: +SKIP
        >>> result.report["volumes_cc"]["CTVn"]                            # doctest: +SKIP
    """
    from cervicontour.contours.margin import clipped_at_edge, expand

    ref, m = labels.reference, labels.masks
    level = para_aortic_top.upper().removeprefix("VERTEBRAE_")
    if level not in LEVELS:
        raise InputError(f"para-aortic top {para_aortic_top!r}: expected one of {', '.join(LEVELS)}")
    found = [c for c in ILIAC if c in m]
    if not found:
        raise InputError(f"labels from {labels.path or labels.source}: expected TotalSegmentator iliac vessels "
                         f"({', '.join(ILIAC)}), found none (classes present: {', '.join(sorted(m)) or 'none'}); "
                         "the scan may not cover the pelvis, or the labels are not from the v2 'total' task")
    findings = list(labels.notes)
    for group, names, effect in (("iliac vessels", ILIAC, "their nodal region is missing from the CTVn"),
                                 ("bones", BONES[:3] + BONES[-2:], "the CTVn may extend into bone"),
                                 ("muscles", MUSCLES, "the CTVn may extend into muscle"),
                                 ("sacrum", SACRAL, "no presacral strip")):
        missing = [c for c in names if c not in m]
        if missing:
            findings.append(_finding("totalseg.class_missing", "CTVn", Severity.WARNING, f"{group}: {', '.join(names)}",
                                     f"missing {', '.join(missing)}", f"{effect}; check the labels cover the pelvis"))
    empty = np.zeros(ref.shape, bool)
    vessels = np.logical_or.reduce([m[c] for c in found])
    top_mm = None
    if para_aortic:
        vertebra = f"vertebrae_{level}"
        if vertebra not in m:
            have = [v.removeprefix("vertebrae_") for v in BONES if v.startswith("vertebrae_") and v in m]
            raise InputError(f"--para-aortic-top {level}: no {vertebra} label to find its superior border "
                             f"(vertebrae labelled: {', '.join(have) or 'none'}); choose one of those")
        top_mm = float(np.broadcast_to(world_coordinate(ref, 2), ref.shape)[m[vertebra]].max())
        below = world_coordinate(ref, 2) <= top_mm + 1e-3
        pa = [c for c in PARA_AORTIC if c in m]
        if len(pa) < 2:
            findings.append(_finding("totalseg.class_missing", "CTVn", Severity.WARNING, "aorta and inferior_vena_cava",
                                     f"found {', '.join(pa) or 'neither'}", "the para-aortic region is incomplete"))
        vessels = vessels | (np.logical_or.reduce([m[c] for c in pa]) & below if pa else empty)
    vessel_volume = ref.with_array(vessels.astype(np.uint8))
    expanded = expand(vessel_volume, (margin_mm,) * 3).array.astype(bool)
    strip, strip_info = presacral_strip(labels, depth_mm=presacral_mm)
    exclude = np.logical_or.reduce([m.get(c, empty) for c in (*BONES, *MUSCLES)])
    ctvn = (expanded | strip) & ~exclude
    if para_aortic:
        ctvn &= below
    ctvn |= vessels
    strip &= ~exclude
    vcc = ref.voxel_volume_cc
    if clipped_at_edge(vessel_volume, (margin_mm,) * 3):
        findings.append(_finding("totalseg.edge", "CTVn", Severity.WARNING, "the 7 mm expansion inside the scan",
                                 "the expansion reaches the edge of the image", "the CTVn is cut off there; scan longer"))
    overlap = float((vessels & exclude).sum()) * vcc
    if overlap > 0:
        findings.append(_finding("totalseg.vessel_in_bone", "CTVn", Severity.INFO, "vessel labels outside bone and muscle",
                                 f"{overlap:.2f} cc of vessel label overlaps bone/muscle labels",
                                 "kept inside the CTVn (vessels always are)", overlap, "cc"))
    if is_oblique(ref.direction):
        findings.append(_finding("totalseg.oblique", "CTVn", Severity.INFO, "an axis-aligned grid",
                                 f"oblique grid {ref!r}", "the presacral strip runs along the grid axis nearest AP"))
    bladder = m.get("urinary_bladder", empty)
    if not bladder.any():
        findings.append(_finding("totalseg.class_missing", "Bladder", Severity.WARNING, "urinary_bladder",
                                 "missing", "Bladder is written empty; check the scan covers the bladder"))
    report = {
        "labels": {"source": labels.source, "path": labels.path, "label_scheme": "TotalSegmentator v2 'total'",
                   "classes_found": sorted(c for c in NEEDED if c in m),
                   "classes_missing": sorted(c for c in NEEDED if c not in m)},
        "rule": {"reference": REFERENCE, "margin_mm": margin_mm, "vessels": found + (
                     [c for c in PARA_AORTIC if c in m] if para_aortic else []),
                 "para_aortic": para_aortic, "para_aortic_top": level if para_aortic else None,
                 "para_aortic_top_z_mm": top_mm, "presacral": strip_info,
                 "subtracted": [c for c in (*BONES, *MUSCLES) if c in m]},
        "volumes_cc": {"Bladder": float(bladder.sum()) * vcc, "CTVn": float(ctvn.sum()) * vcc,
                       "vessels": float(vessels.sum()) * vcc, "presacral_strip": float(strip.sum()) * vcc},
        "findings": [f.to_dict() for f in findings],
    }
    return BaselineResult(ref.with_array(bladder.astype(np.uint8)), ref.with_array(ctvn.astype(np.uint8)),
                          vessels, strip, tuple(findings), report)


# --------------------------------------------------------------------------------- case / cohort
def write_result(out_dir: str | os.PathLike, patient_id: str, result: BaselineResult, *, meta: dict | None = None) -> Path:
    """Write ``OUT/<pid>/structures/{Bladder,CTVn}.nii.gz`` and ``OUT/<pid>/totalseg_baseline.json``."""
    from cervicontour.cohort import write_case
    from cervicontour.io.atomic import write_text_atomic

    folder = write_case(out_dir, patient_id, None, {"Bladder": result.bladder, "CTVn": result.ctvn})
    ref = result.ctvn
    grid = {"shape": list(ref.shape), "spacing_mm": list(ref.spacing_mm), "origin_mm": list(ref.origin_mm),
            "orientation": ref.orientation}
    findings = [f.with_patient(patient_id).to_dict() for f in result.findings]
    report = {"patient_id": patient_id, **(meta or {}), "grid": grid, **result.report, "findings": findings}
    write_text_atomic(folder / REPORT_FILE, json.dumps(report, indent=2, default=float) + "\n")
    return folder


def run_baseline(
    ct: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    ts_output: str | os.PathLike | None = None,
    patient_id: str | None = None,
    para_aortic: bool = False,
    para_aortic_top: str = "L2",
    fast: bool = True,
) -> tuple[Path, BaselineResult]:
    """The whole baseline for one CT: labels (given, or TotalSegmentator run), rule, outputs.

    Args:
        ct: CT NIfTI file (any orientation); outputs are on its exact grid.
        out_dir: cohort-layout output root.
        ts_output: TotalSegmentator multi-label file or per-class folder; ``None`` runs
            TotalSegmentator (into ``OUT/<pid>/totalsegmentator/``) when it and its weights are installed.
        patient_id: output folder name (default: the CT file name without ``.nii.gz``).

    Returns:
        ``(OUT/<pid>, result)``; the folder holds ``structures/{Bladder,CTVn}.nii.gz`` on the CT's
        exact grid and ``totalseg_baseline.json`` (volumes in cc, classes found/missing, rule,
        findings, seconds).

    Raises:
        InputError: no labels given and TotalSegmentator unavailable, or see :func:`guideline_ctvn`.

    Example:
        >>> run_baseline("ct.nii.gz", "out", ts_output="seg.nii.gz", para_aortic=True)  # doctest: +SKIP
    """
    from cervicontour.io import read_nifti, strip_nifti_suffix

    ct = Path(ct)
    image = read_nifti(ct)
    pid = patient_id or strip_nifti_suffix(ct.name)
    t0 = time.perf_counter()
    if ts_output is None:
        why = totalsegmentator_status(fast=fast)
        if why is not None:
            raise InputError(f"no TotalSegmentator labels for {ct}: {why}. Pass --ts-output with an existing "
                             "TotalSegmentator output instead: a multi-label file (`TotalSegmentator -i CT -o seg.nii.gz "
                             "--ml --fast`, v2 'total' task) or a per-class folder (`TotalSegmentator -i CT -o FOLDER`)")
        folder = run_totalsegmentator(ct, Path(out_dir) / pid / "totalsegmentator", fast=fast)
        labels = labels_from_folder(folder, image, source="api")
    else:
        labels = load_labels(ts_output, image)
    t1 = time.perf_counter()
    result = guideline_ctvn(labels, para_aortic=para_aortic, para_aortic_top=para_aortic_top)
    t2 = time.perf_counter()
    seconds = {"labels": round(t1 - t0, 3), "rule": round(t2 - t1, 3)}
    return write_result(out_dir, pid, result, meta={"ct": str(ct), "seconds": seconds}), result


def predict_cohort(
    test_cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    para_aortic: bool | None = False,
    para_aortic_top: str = "L4",
) -> dict[str, float]:
    """Oracle-TotalSegmentator baseline on a synthetic cohort: the rule on the phantom's own labels.

    Writes ``OUT/<pid>/structures/{Bladder,CTVn}.nii.gz`` and the JSON report per case. The Bladder
    is the phantom's own (an upper bound for TotalSegmentator's zero-shot bladder).

    Args:
        para_aortic: ``True``/``False`` for every case, or ``None``: per case, when its ground truth
            has ``LN_ParaAortic`` (oracle knowledge too).
        para_aortic_top: the phantom labels only L4 and L5, hence the default ``"L4"``.

    Returns:
        patient id → seconds (reading labels, rule, writing). Cases without phantom vessel labels
        (hold-outs) are skipped and absent.

    Example:
        >>> predict_cohort("out/test", "out/pred_totalseg", para_aortic=None)  # doctest: +SKIP
        {'SYN001': 0.44, 'SYN002': 0.39}
    """
    from cervicontour.cohort import load_cohort

    seconds: dict[str, float] = {}
    for case in load_cohort(test_cohort_dir).cases():
        names = [n for n in case.structure_names if n in PHANTOM_TO_TOTALSEG or n == "Bone_Pelvic"]
        if not any(PHANTOM_TO_TOTALSEG[n].startswith("iliac_") for n in names if n in PHANTOM_TO_TOTALSEG):
            continue
        t0 = time.perf_counter()
        labels = labels_from_phantom({n: case.load_structure(n) for n in names})
        pa = case.has("LN_ParaAortic") if para_aortic is None else para_aortic
        result = guideline_ctvn(labels, para_aortic=pa, para_aortic_top=para_aortic_top)
        write_result(out_dir, case.patient_id, result, meta={"ct": str(case.image_path)})
        seconds[case.patient_id] = time.perf_counter() - t0
    return seconds
