"""The review page in a real browser: Playwright for Python driving the system's Chromium (headless).

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

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _skip_reason() -> str | None:
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


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


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
