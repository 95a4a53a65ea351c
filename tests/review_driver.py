"""Drive the review page in headless Chromium to compose a CTV from chosen parts, and check the result.

Shared by ``tests/test_review_browser.py`` and ``benchmarks/review_parts_browser.py``:

* :func:`compose_in_page` opens the page on one case (Playwright for Python driving Debian's
  ``chromium``, never ``playwright install``), ticks the chosen parts in the "CTV components"
  panel, composes, accepts the composed masks, saves the decisions, exports the accepted set when
  the page offers it (RTSTRUCT, on a case predicted from a DICOM series) and takes a screenshot.
* The checks read the files the page wrote without cervicontour's own readers: masks with nibabel
  (the package reads NIfTI with SimpleITK), the log as plain JSON, hashes with hashlib, the
  RTSTRUCT with pydicom.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Gross disease is composed into its CTV whenever the case has its mask, chosen or not (the
#: documented rule of compose, restated here so the expected union does not come from the code under test).
GROSS = {"CTVn": "GTVn", "CTVp": "GTVp"}
#: The page has drawn what it loaded (or has no CT to draw), or has failed.
_SETTLED = ("() => window.review && window.review.caseId === {case} && window.review.summary && window.review.summary.patient_id === {case}"
            " && (window.review.fullLoaded !== null || !window.review.summary.ct) || !!(window.review && window.review.error)")


def skip_reason() -> str | None:
    """Why the page cannot be driven here (Chromium, Playwright or the built viewer missing), else None."""
    from cervicontour.review.server import NIIVUE_JS

    if not CHROMIUM.exists():
        return f"{CHROMIUM} not installed (apt-get install chromium; .ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) not installed: pip install playwright (the dev extra); never `playwright install`"
    if not NIIVUE_JS.is_file():
        return f"the viewer is not built ({NIIVUE_JS} missing): run `make install` (needs npm)"
    return None


class PageError(RuntimeError):
    """The page refused or could not do a step; the message is what its status line said."""


@dataclass
class PageRun:
    """What :func:`compose_in_page` did on the page.

    Attributes:
        offered: target → the parts whose boxes the page enabled (the case has their masks).
        composed: target → id (path relative to the case) of the mask the page composed.
        statuses: the status line after each step (compose, save, export).
        exported: whether the page offered an export (RTSTRUCT) and it was written.
        page_errors: uncaught JavaScript errors.
        foreign_requests: requests to anywhere but the local server (expected none).
    """

    offered: dict[str, list[str]]
    composed: dict[str, str]
    statuses: list[str] = field(default_factory=list)
    exported: bool = False
    page_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)


def compose_in_page(out_dir: str | Path, patient_id: str, choices: Mapping[str, Sequence[str]], *, reviewer: str,
                    screenshot: str | Path, export: bool = True, timeout_s: float = 120) -> PageRun:
    """Compose each target of ``choices`` from its parts on the review page, accept it, save, export.

    Serves ``out_dir`` (:func:`cervicontour.review.server.running`) for the run only.

    Args:
        out_dir: a predict output folder (it is written to: review.json, review/).
        patient_id: the case to open.
        choices: target (``CTVn``/``CTVp``) → the parts to tick.
        reviewer: the name typed in the page's Reviewer field.
        screenshot: where the PNG of the whole page goes (after the last step).
        export: click "Export accepted set as RTSTRUCT" when the page shows it (DICOM cases only).

    Raises:
        PageError: a chosen part the page does not offer, or a step the page refused (its status).
    """
    from playwright.sync_api import sync_playwright

    from cervicontour.review.server import running

    timeout_ms = timeout_s * 1000
    with running(out_dir) as url, sync_playwright() as playwright:
        origin = url.split("/?")[0]
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            run = PageRun({}, {})
            page.on("pageerror", lambda e: run.page_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(origin + "/") else run.foreign_requests.append(r.url))
            page.goto(url)
            page.wait_for_function("() => window.review && (window.review.summary || window.review.error)", polling=100, timeout=timeout_ms)
            if page.evaluate("() => window.review.caseId") != patient_id:
                page.select_option("#case", patient_id)
            _settle(page, patient_id, timeout_ms)
            for target, name, enabled in page.eval_on_selector_all("#compose input[data-target]", "els => els.map(e => [e.dataset.target, e.value, !e.disabled])"):
                if enabled:
                    run.offered.setdefault(target, []).append(name)
            page.fill("#reviewer", reviewer)
            for target, parts in choices.items():
                for part in parts:
                    if part not in run.offered.get(target, []):
                        raise PageError(f"{patient_id}: the page does not offer {part} for {target} (offered: {run.offered}); the case has no mask of it")
                    page.check(f"#compose input[data-target='{target}'][value='{part}']")
            before = set(_row_ids(page))
            page.click("#compose-go")
            run.statuses.append(_status_after(page, ("composed", "not composed"), timeout_ms))
            for mask_id in _row_ids(page):
                target = mask_id.rsplit("/", 1)[-1].split("_composed_")[0]
                if mask_id not in before and mask_id.startswith("review/composed/") and target in choices:
                    run.composed[target] = mask_id
                    page.locator(f"#structures tbody tr[data-mask='{mask_id}'] select.decision").select_option("accept")
            if sorted(run.composed) != sorted(choices):
                raise PageError(f"{patient_id}: the page lists composed masks for {sorted(run.composed)}, expected {sorted(choices)}")
            page.click("#save")
            run.statuses.append(_status_after(page, ("saved", "not saved"), timeout_ms))
            if export and page.locator("#rtstruct").is_visible():
                page.click("#rtstruct")
                run.statuses.append(_status_after(page, ("RTSTRUCT written", "not exported"), timeout_ms))
                run.exported = True
            _settle(page, patient_id, timeout_ms)
            page.screenshot(path=str(screenshot), full_page=True)
            return run
        finally:
            browser.close()


def _settle(page, patient_id: str, timeout_ms: float) -> None:
    page.wait_for_function(_SETTLED.format(case=json.dumps(patient_id)), polling=100, timeout=timeout_ms)
    error = page.evaluate("() => window.review.error")
    if error:
        raise PageError(f"{patient_id}: the page failed: {error}")


def _row_ids(page) -> list[str]:
    return page.eval_on_selector_all("#structures tbody tr", "rows => rows.map(r => r.dataset.mask)")


def _status_after(page, outcomes: tuple[str, str], timeout_ms: float) -> str:
    """The status line once it starts with the success or the failure text; a failure raises."""
    done, failed = outcomes
    page.wait_for_function(f"() => ['{done}', '{failed}'].some(t => document.getElementById('status').textContent.startsWith(t))",
                           polling=100, timeout=timeout_ms)
    text = page.inner_text("#status")
    if text.startswith(failed):
        raise PageError(text)
    return text


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def part_file(case: Path, part: str) -> Path | None:
    """The case's mask file of ``part`` (``structures/sub/`` first, then ``structures/``), or None."""
    for folder in (case / "structures" / "sub", case / "structures"):
        if (folder / f"{part}.nii.gz").is_file():
            return folder / f"{part}.nii.gz"
    return None


def expected_parts(case: Path, target: str, chosen: Sequence[str]) -> list[str]:
    """The parts the composed ``target`` must be the union of: the chosen ones and, when the case
    has its mask, the target's gross disease (:data:`GROSS`)."""
    gross = GROSS[target]
    return [*chosen, *([gross] if gross not in chosen and part_file(case, gross) is not None else [])]


def _mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel

    image = nibabel.load(str(path))
    return np.asarray(image.dataobj) != 0, image.affine


def union_check(case: Path, composed_id: str, parts: Sequence[str]) -> dict:
    """The composed mask against the voxel union of ``parts``' masks, all read with nibabel.

    Returns:
        ``{"parts", "part_voxels", "composed_voxels", "union_voxels", "same_grid", "equals_union"}``;
        ``equals_union`` is voxel-exact (and false when a part is on another grid).
    """
    composed, affine = _mask(case / composed_id)
    union = np.zeros_like(composed)
    part_voxels, same_grid = {}, True
    for part in parts:
        path = part_file(case, part)
        if path is None:
            raise FileNotFoundError(f"{case.name}: no mask file of {part} in structures/sub or structures")
        mask, part_affine = _mask(path)
        same_grid = same_grid and mask.shape == composed.shape and np.allclose(part_affine, affine, atol=1e-4)
        if mask.shape == composed.shape:
            union |= mask
        part_voxels[part] = int(mask.sum())
    return {"parts": list(parts), "part_voxels": part_voxels, "composed_voxels": int(composed.sum()), "union_voxels": int(union.sum()),
            "same_grid": bool(same_grid), "equals_union": bool(same_grid and np.array_equal(composed, union))}


def log_entries(case: Path) -> list[dict]:
    """The entries of the case's ``review.json``, as plain JSON."""
    return json.loads((case / "review.json").read_text(encoding="utf-8"))["entries"]


def composition_logged(case: Path, composed_id: str) -> tuple[dict, dict]:
    """``(entry, composition)``: the compose entry of ``review.json`` that wrote ``composed_id``.

    Raises:
        LookupError: no compose entry names it.
    """
    for entry in log_entries(case):
        for composition in entry.get("compositions", []) if entry.get("action") == "compose" else []:
            if composition.get("id") == composed_id:
                return entry, composition
    raise LookupError(f"{case / 'review.json'}: no compose entry wrote {composed_id}")


def hashes_check(case: Path, composition: Mapping) -> dict:
    """Whether the logged hashes are those of the files: each part's and the composed mask's."""
    parts = {p: file_sha256(part_file(case, p)) for p in composition.get("used", [])}
    return {"parts_sha256_match": composition.get("parts_sha256") == parts, "composed_sha256_match": composition.get("sha256") == file_sha256(case / composition["id"])}


def exported(case: Path) -> dict | None:
    """The latest ``export-rtstruct`` entry of the log with the ROI names pydicom reads from its file,
    or None when the case has none."""
    entries = [e for e in log_entries(case) if e.get("action") == "export-rtstruct"]
    if not entries:
        return None
    import pydicom

    entry = entries[-1]
    ds = pydicom.dcmread(case / entry["path"])
    contours = {c.ReferencedROINumber: len(getattr(c, "ContourSequence", [])) for c in ds.ROIContourSequence}
    rois = {roi.ROIName: contours.get(roi.ROINumber, 0) for roi in ds.StructureSetROISequence}
    return {"kind": "rtstruct", "path": entry["path"], "exists": (case / entry["path"]).is_file(), "rois": list(rois), "contours": rois, "entry": entry}
