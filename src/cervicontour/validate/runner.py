"""`validate_cohort`: every check on every patient, then the cohort comparisons and the notes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cervicontour.cohort import Case, load_cohort
from cervicontour.rules import Finding, Rules, Severity, count_by_severity, load_rules, sort_findings
from cervicontour.validate import deid
from cervicontour.validate.case import CaseFeatures, CaseReport, inspect_case
from cervicontour.validate.notes import apply_notes, read_note
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.outliers import cohort_outliers


@dataclass(frozen=True)
class ValidationResult:
    """What :func:`validate_cohort` found.

    Attributes:
        root: the cohort folder.
        findings: sorted: cohort-wide first, then by patient, worst first.
        notes: ``patient_id → note`` from ``notes.csv``.
        patients: every patient id, in cohort order.
        rules_source: the rules file used, and ``rules_sha256`` its hash.
        seconds: wall time of the run.
    """

    root: Path
    findings: tuple[Finding, ...]
    notes: Mapping[str, str] = field(default_factory=dict)
    patients: tuple[str, ...] = ()
    rules_source: str = ""
    rules_sha256: str = ""
    seconds: float = 0.0
    options: ValidateOptions | None = None

    @property
    def counts(self) -> dict[str, int]:
        return count_by_severity(self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and info allowed)."""
        return not self.errors

    def for_patient(self, patient_id: str | None) -> list[Finding]:
        return [f for f in self.findings if f.patient_id == patient_id]

    def meta(self) -> dict:
        """What produced these findings, for the JSON output (cohort, rules file and hash, options)."""
        return {
            "cohort": str(self.root),
            "patients": len(self.patients),
            "rules": self.rules_source,
            "rules_sha256": self.rules_sha256,
            "options": asdict(self.options) if self.options is not None else {},
            "seconds": round(self.seconds, 2),
        }


def validate_cohort(
    root: str | os.PathLike,
    *,
    rules: Rules | str | os.PathLike | None = None,
    options: ValidateOptions | None = None,
    on_case: Callable[[str], None] | None = None,
) -> ValidationResult:
    """Check a cohort folder; never modifies it.

    Args:
        root: cohort folder (canonical, synonym or nnU-Net raw layout).
        rules: a :class:`Rules`, a path to a rules TOML, or ``None`` for the clinicians' default.
        options: tolerances and thresholds (default :class:`ValidateOptions`).
        on_case: called with each patient id when its checks are done (progress bars).

    Returns:
        A :class:`ValidationResult`; ``result.ok`` is False when any error was found.

    Raises:
        InputError: the folder is not a cohort, or the rules file is unusable (exit code 2).

    Example:
        >>> result = validate_cohort("out/cohort")          # doctest: +SKIP
        >>> result.counts                                    # doctest: +SKIP
        {'error': 0, 'warning': 1, 'info': 3}
    """
    start = time.perf_counter()
    root = Path(root)
    options = options or ValidateOptions()
    rules = rules if isinstance(rules, Rules) else load_rules(rules)
    cohort = load_cohort(root)
    cases = cohort.cases()
    notes = {c.patient_id: c.note for c in cases}

    reports = _inspect_all(cases, root, rules, options, on_case)
    findings: list[Finding] = []
    for report in reports:
        findings += report.findings
    contexts = {pid: read_note(text) for pid, text in notes.items() if text}
    findings += cohort_outliers([r.features for r in reports], options, contexts)
    for case in cases:
        findings += deid.check_note(case.note, patient_id=case.patient_id)
    findings = apply_notes(findings, notes)
    return ValidationResult(
        root,
        tuple(sort_findings(findings)),
        notes,
        tuple(c.patient_id for c in cases),
        rules.source,
        rules.sha256,
        time.perf_counter() - start,
        options,
    )


def _inspect_all(cases: list[Case], root: Path, rules: Rules, options: ValidateOptions, on_case) -> list[CaseReport]:
    workers = options.workers
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(cases) >= 8 else 1
    if workers <= 1:
        out = []
        for case in cases:
            out.append(_inspect_one(case, root, rules, options))
            if on_case:
                on_case(case.patient_id)
        return out
    # Threads, not processes: reading and decompressing (SimpleITK) and most numpy work release
    # the GIL, and a library must not require callers to guard `if __name__ == "__main__"`.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_inspect_one, case, root, rules, options) for case in cases]
        out = []
        for case, future in zip(cases, futures):
            out.append(future.result())
            if on_case:
                on_case(case.patient_id)
        return out


def _inspect_one(case: Case, root: Path, rules: Rules, options: ValidateOptions) -> CaseReport:
    """One patient; an unexpected failure becomes that patient's finding, not the cohort's end."""
    try:
        return inspect_case(case, root=root, rules=rules, options=options)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - one odd patient must not stop the QA of a hundred
        finding = Finding(
            "validate.crashed", case.patient_id, None, Severity.ERROR,
            "every check of this patient to run", f"{type(exc).__name__}: {exc}",
            "this patient's files confused cervicontour: check them by hand and report the message as a bug",
        )
        return CaseReport(case.patient_id, [finding], CaseFeatures(case.patient_id))
