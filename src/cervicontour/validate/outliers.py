"""Cohort outliers: a patient whose scan or structures differ from everyone else's.

Each value is compared with the *other* patients (leave-one-out), so one odd patient cannot hide
itself by inflating the spread: robust z = 0.6745 · (x − median) / MAD (Iglewicz & Hoaglin's
modified z-score). A value is an outlier when |z| exceeds ``outlier_z`` *and* it is further from
the median than a floor (a fraction, a factor or mm), so that a cohort whose values happen to be
nearly identical does not flag trivial differences. The finding shows the cohort median.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from cervicontour.rules import Finding, Severity
from cervicontour.structures import STRUCTURES, Role
from cervicontour.validate.case import CaseFeatures
from cervicontour.validate.robust import robust_z
from cervicontour.validate.choices import EXTENDED, clinical_choice_finding, para_aortic_patients
from cervicontour.validate.notes import NoteContext
from cervicontour.validate.options import ValidateOptions

AXES = ("left-right", "anterior-posterior", "inferior-superior")


def cohort_outliers(
    features: list[CaseFeatures], options: ValidateOptions, notes: Mapping[str, NoteContext] | None = None
) -> list[Finding]:
    """``cohort.spacing``, ``cohort.extent``, ``cohort.fov``, ``cohort.volume``, ``cohort.centroid`` warnings,
    and the ``cohort.clinical_choice`` info finding.

    Volumes and centroids are compared for the structures the model and the rules use (roles
    OAR, target and sub-target); anatomy labels are cut by the scan range, so theirs say little.
    A patient whose note explains a feature ("extra slices", "small parametrium") is still
    compared, but is left out of everyone else's reference. A CTVn that includes the para-aortic
    nodes (:mod:`cervicontour.validate.choices`) is compared with the other such CTVns only, the
    others with each other.
    """
    notes = notes or {}
    chosen = para_aortic_patients(features, options, notes)
    strata = {EXTENDED: {f.patient_id: f.patient_id in chosen for f in features}}
    out: list[Finding] = []
    out += _image(features, options, notes)
    out += _volumes(features, options, notes, strata)
    out += _centroids(features, options, notes, strata)
    out += clinical_choice_finding(chosen, features, options)
    return out


def _compare(
    values: dict[str, float],
    floor: Callable[[float], float],
    options: ValidateOptions,
    atypical: set[str] = frozenset(),  # type: ignore[assignment]
    stratum: Mapping[str, object] | None = None,
) -> dict[str, tuple[float, float, int]]:
    """patient → (z, median of the others, number of others) for the outliers among ``values``.

    ``atypical`` patients are compared but never part of the reference; with ``stratum`` (patient →
    group) a patient is compared with its own group only.
    """
    out = {}
    group = stratum or {}
    for pid, value in values.items():
        others = np.array([v for p, v in values.items() if p != pid and p not in atypical
                           and group.get(p) == group.get(pid)], dtype=float)  # fmt: skip
        if others.size < options.min_others:
            continue
        z, median = robust_z(value, others)
        if abs(z) > options.outlier_z and abs(value - median) > floor(median):
            out[pid] = (z, median, others.size)
    return out


def _compared(name: str) -> bool:
    return STRUCTURES[name].role is not Role.ANATOMY if name in STRUCTURES else False


def _z(z: float) -> str:
    return "∞" if math.isinf(z) else f"{z:+.1f}"


def _image(features: list[CaseFeatures], options: ValidateOptions, notes) -> list[Finding]:
    out = []
    by_pid = {f.patient_id: f for f in features if f.image}
    long_scans = {p for p, n in notes.items() if n.extent}
    rule = f"robust z beyond {options.outlier_z:g}"
    spacing = {p: f.image["slice_spacing_mm"] for p, f in by_pid.items()}
    for pid, (z, med, n) in _compare(spacing, lambda m: options.spacing_floor * abs(m), options).items():
        out.append(
            Finding(
                "cohort.spacing", pid, None, Severity.WARNING,
                f"slice spacing near the cohort median {med:.2f} mm ({n} other patients; outlier: {rule} "
                f"and over {options.spacing_floor:.0%} away)",
                f"{spacing[pid]:.2f} mm (robust z {_z(z)})",
                "fine if intended; mixed slice spacings change what the model sees: consider resampling",
                value=z, unit="z",
            )
        )
    length = {p: f.image["scan_length_mm"] for p, f in by_pid.items()}
    for pid, (z, med, n) in _compare(length, lambda m: options.extent_floor * abs(m), options, long_scans).items():
        f = by_pid[pid].image
        out.append(
            Finding(
                "cohort.extent", pid, None, Severity.WARNING,
                f"scan length near the cohort median {med:.0f} mm ({n} other patients; outlier: {rule} "
                f"and over {options.extent_floor:.0%} away)",
                f"{f['n_slices']:.0f} slices × {f['slice_spacing_mm']:.2f} mm = {length[pid]:.0f} mm (robust z {_z(z)})",
                "extra or missing slices: check the scan range, or say so in notes.csv ('extra slices')",
                value=z, unit="z",
            )
        )
    fov = {p: f.image["fov_mm"] for p, f in by_pid.items()}
    for pid, (z, med, n) in _compare(fov, lambda m: options.fov_floor * abs(m), options).items():
        out.append(
            Finding(
                "cohort.fov", pid, None, Severity.WARNING,
                f"in-plane field of view near the cohort median {med:.0f} mm ({n} other patients; outlier: "
                f"{rule} and over {options.fov_floor:.0%} away)",
                f"{fov[pid]:.0f} mm (robust z {_z(z)})",
                "check the reconstruction field of view; a cropped FOV can cut off the body outline",
                value=z, unit="z",
            )
        )
    return out


def _volumes(features: list[CaseFeatures], options: ValidateOptions, notes, strata) -> list[Finding]:
    out = []
    names = sorted({n for f in features for n in f.volumes_cc if _compared(n)})
    floor = math.log(options.volume_floor_factor)
    by_pid = {f.patient_id: f for f in features}
    for name in names:
        volumes = {f.patient_id: f.volumes_cc[name] for f in features if name in f.volumes_cc}
        logs = {p: math.log(v) for p, v in volumes.items() if v > 0}
        noted = {p for p, c in notes.items() if name in c.mentioned}
        for pid, (z, med, n) in _compare(logs, lambda m: floor, options, noted, strata.get(name)).items():
            median_cc = math.exp(med)
            factor = volumes[pid] / median_cc
            out.append(
                Finding(
                    "cohort.volume", pid, name, Severity.WARNING,
                    f"{name} volume near the cohort median {median_cc:.1f} cc ({n} other patients; outlier: "
                    f"robust z of log-volume beyond {options.outlier_z:g} and over ×{options.volume_floor_factor:g} away)",
                    f"{volumes[pid]:.1f} cc, ×{factor:.2f} the median (robust z {_z(z)})",
                    f"check that {name} is complete and is really {name}; say why in notes.csv if it is",
                    value=z, unit="z",
                    where_mm=by_pid[pid].centroids_mm.get(name),
                )
            )
    return out


def _centroids(features: list[CaseFeatures], options: ValidateOptions, notes, strata) -> list[Finding]:
    out = []
    names = sorted({n for f in features for n in f.offsets_mm if _compared(n)})
    by_pid = {f.patient_id: f for f in features}
    for name in names:
        offsets = {f.patient_id: f.offsets_mm[name] for f in features if name in f.offsets_mm}
        noted = {p for p, c in notes.items() if name in c.mentioned}
        flagged: dict[str, list[str]] = {}
        worst: dict[str, float] = {}
        for axis in range(3):
            values = {p: o[axis] for p, o in offsets.items()}
            for pid, (z, med, n) in _compare(values, lambda m: options.centroid_floor_mm, options, noted, strata.get(name)).items():
                flagged.setdefault(pid, []).append(
                    f"{AXES[axis]} offset {values[pid]:+.0f} mm vs cohort median {med:+.0f} mm of {n} others "
                    f"({values[pid] - med:+.0f} mm, robust z {_z(z)})"
                )
                worst[pid] = max(worst.get(pid, 0.0), abs(z))
        for pid, parts in flagged.items():
            out.append(
                Finding(
                    "cohort.centroid", pid, name, Severity.WARNING,
                    f"{name}'s centroid, relative to the median centroid of the patient's primary structures "
                    "(mm; + is patient left, posterior, superior), "
                    f"near the cohort median (outlier: robust z beyond {options.outlier_z:g} and over "
                    f"{options.centroid_floor_mm:g} mm away)",
                    "; ".join(parts),
                    f"check that {name} is drawn where it belongs (a swapped or shifted contour does this)",
                    value=worst[pid], unit="z",
                    where_mm=by_pid[pid].centroids_mm.get(name),
                )
            )
    return out
