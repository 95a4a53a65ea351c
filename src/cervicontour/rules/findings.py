"""`Finding`: one problem found in the data, as data — never printed text.

Defined here, in the lowest module that produces findings (the rules engine), and re-exported by
:mod:`cervicontour.validate`. The CLI, the HTML report and the review page only render findings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

from cervicontour.io.atomic import write_text_atomic


class Severity(str, Enum):
    """How bad a finding is. ``error`` makes ``cervicontour validate`` exit with code 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for error, 1 for warning, 2 for info (sort key: worst first)."""
        return ("error", "warning", "info").index(self.value)


@dataclass(frozen=True)
class Finding:
    """One check that did not pass.

    Attributes:
        check: dotted check id, e.g. ``"grid.mismatch"``, ``"rules.overlap"``, ``"deid.header"``.
        patient_id: the patient, or ``None`` for a cohort-wide finding.
        structure: canonical structure name; two names joined by ``"/"`` for a pair
            (``"CTVn/CTVp"``); ``None`` when the finding is about the image or the patient.
        severity: error, warning or info.
        expected: what the check expected, in words and numbers with units.
        actual: what it found.
        hint: what to do about it.
        value: the key measured number (e.g. the overlap in cc, a robust z-score), for sorting
            and tests; ``None`` if the check measures nothing.
        unit: unit of ``value`` (``"cc"``, ``"mm"``, ``"z"``, ``"voxels"``, ``""``).
        where_mm: an LPS point (mm) where the problem is, for thumbnails; ``None`` if not located.
        file: the file the finding is about, relative to the cohort root when possible.

    Example:
        >>> f = Finding("mask.empty", "p01", "CTVn", Severity.ERROR, "at least one voxel",
        ...             "0 voxels", "redraw CTVn or delete the file")
        >>> f.is_error
        True
    """

    check: str
    patient_id: str | None
    structure: str | None
    severity: Severity
    expected: str
    actual: str
    hint: str
    value: float | None = None
    unit: str = ""
    where_mm: tuple[float, float, float] | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))
        if self.where_mm is not None:
            object.__setattr__(self, "where_mm", tuple(round(float(v), 3) for v in self.where_mm))
        if self.value is not None:
            object.__setattr__(self, "value", float(self.value))

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """``(check, patient_id, structure)``: what a finding is about, without its numbers."""
        return (self.check, self.patient_id, self.structure)

    def with_patient(self, patient_id: str | None) -> "Finding":
        return replace(self, patient_id=patient_id)

    def downgraded(self, severity: Severity, reason: str) -> "Finding":
        """A copy with a lower severity and the reason appended to the hint."""
        return replace(self, severity=Severity(severity), hint=f"{self.hint} ({reason})".strip())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["where_mm"] = list(self.where_mm) if self.where_mm is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Finding":
        where = data.get("where_mm")
        return cls(**{**data, "where_mm": tuple(where) if where is not None else None})


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Cohort-wide first, then by patient, severity (worst first), check and structure."""
    return sorted(
        findings,
        key=lambda f: (
            f.patient_id is not None,
            f.patient_id or "",
            f.severity.rank,
            f.check,
            f.structure or "",
        ),
    )


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    """``{"error": n, "warning": n, "info": n}``."""
    counts = {s.value: 0 for s in Severity}
    for f in findings:
        counts[f.severity.value] += 1
    return counts


def write_findings_json(findings: Iterable[Finding], path: str | os.PathLike, *, meta: dict | None = None) -> Path:
    """Write findings as JSON ``{"meta": {...}, "counts": {...}, "findings": [...]}`` (atomically).

    Args:
        meta: what produced them (cohort, rules file and SHA-256, options), stored as given.
    """
    findings = list(findings)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta or {}, "counts": count_by_severity(findings), "findings": [f.to_dict() for f in findings]}
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
    return path


def read_findings_json(path: str | os.PathLike) -> list[Finding]:
    """Read what :func:`write_findings_json` wrote."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Finding.from_dict(d) for d in payload["findings"]]
