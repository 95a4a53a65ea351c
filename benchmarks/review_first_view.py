"""Review page: time to first view on a full-size case (512 × 512 × 200), in headless Chromium.

Makes (once) a 1-patient full-size phantom cohort and its predict output under out/review_bench,
starts the review server, opens the page in Debian's chromium (Playwright, never `playwright
install`) and reads the page's own timings (``window.review``):

  first_view_s   navigation start → the downsampled CT and every overlay drawn (double rAF)
  full_res_s     navigation start → the full-resolution volumes swapped in
  server_*_s     the server's preview builds, timed from Python on a cold cache

Usage: python benchmarks/review_first_view.py [--runs 3] [--screenshot docs/review_page.png]
Writes benchmarks/results/review_first_view.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "review_bench"
RESULTS = ROOT / "benchmarks" / "results"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def full_size_output() -> Path:
    from cervicontour.inference.cohort import predict
    from cervicontour.synth import synthesize_cohort

    out = WORK / "pred"
    if not any(out.glob("*/prediction.json")):
        cohort = synthesize_cohort(WORK / "cohort", patients=1, holdout=0, seed=7, size="full")
        predict(cohort, out, model="default", all_cases=True)
    return out


def server_cold_times(out: Path) -> dict:
    from cervicontour.review import cases

    case = out / cases.list_cases(out)[0]
    cache = cases.VolumeCache()
    t = time.perf_counter()
    ct = cases.ct_bytes(case, cache, preview=True)
    ct_s = time.perf_counter() - t
    t = time.perf_counter()
    drafts = [m for m in cases.mask_files(case) if m.kind == "draft"]
    for mask in drafts:
        cases.mask_preview_bytes(mask, cache)
    masks_s = time.perf_counter() - t
    return {"server_ct_preview_s": round(ct_s, 3), "server_mask_previews_s": round(masks_s, 3), "masks": len(drafts), "ct_preview_mb": round(len(ct) / 1e6, 1)}


def browser_run(out: Path, screenshot: Path | None, *, warm: bool) -> dict:
    from playwright.sync_api import sync_playwright

    from cervicontour.review.server import running

    with running(out, warm=warm) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.goto(url, wait_until="commit")
            page.wait_for_function("() => window.review && (window.review.firstView !== null || window.review.error)", polling=50, timeout=120_000)
            page.wait_for_function("() => window.review.fullLoaded !== null || window.review.error", polling=100, timeout=300_000)
            state = page.evaluate("() => ({firstView: window.review.firstViewSinceNavigation, fetched: window.review.previewFetchedSinceNavigation, full: window.review.fullLoadedSinceNavigation, error: window.review.error})")
            if screenshot:
                page.screenshot(path=screenshot)
        finally:
            browser.close()
    if state["error"]:
        raise RuntimeError(state["error"])
    return {"first_view_s": round(state["firstView"] / 1000, 3), "preview_parsed_s": round(state["fetched"] / 1000, 3), "full_res_s": round(state["full"] / 1000, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    out = full_size_output()
    prediction = json.loads(next(out.glob("*/prediction.json")).read_text())
    cold = server_cold_times(out)
    # each run: a fresh server. cold: nothing prepared; as served: `cervicontour review` starts building the
    # first case's previews when it starts (the browser is opened at once here, so the two still race)
    runs = [browser_run(out, None, warm=False) for _ in range(args.runs)]
    served = [browser_run(out, args.screenshot if i == args.runs - 1 else None, warm=True) for i in range(args.runs)]
    result = {"shape": prediction["input"]["shape"], "machine": platform.processor() or platform.machine(),
              "renderer": "headless chromium, --disable-gpu (SwiftShader, no GPU)", **cold, "runs_cold": runs, "runs_as_served": served,
              "first_view_s_median_cold": sorted(r["first_view_s"] for r in runs)[len(runs) // 2],
              "first_view_s_median_as_served": sorted(r["first_view_s"] for r in served)[len(served) // 2],
              "full_res_s_median": sorted(r["full_res_s"] for r in runs + served)[len(runs + served) // 2]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "review_first_view.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
