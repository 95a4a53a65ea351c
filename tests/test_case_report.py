"""The per-case QA report: content from independent computations, PNGs, and headless Chromium without errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cervicontour.io import write_nifti
from cervicontour.report.case_report import BANNER, _end_marker, write_case_report
from cervicontour.volume import Volume

SCRIPT = str(Path(sys.executable).with_name("cervicontour"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Injected into a copy of the page: collects script errors, failed resource loads, console.error
# calls and images that did not render, and writes them into the DOM that --dump-dom prints.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__problems.push(t && t !== window && (t.src || t.href) ? 'failed to load ' + (t.src || t.href) : 'script error: ' + e.message);
}, true);
(function () { var original = console.error; console.error = function () {
  window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var broken = Array.prototype.filter.call(document.images, function (i) { return !(i.complete && i.naturalWidth > 0); })
    .map(function (i) { return 'image not shown: ' + i.getAttribute('src'); });
  document.documentElement.setAttribute('data-problems', JSON.stringify(window.__problems.concat(broken)));
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                               "--virtual-time-budget=5000", *args], capture_output=True, text=True, timeout=120)


def page_problems(page: Path) -> tuple[list[str], list[str]]:
    """(problems the probe saw, console lines Chromium logged) when ``page`` is opened headless."""
    probe = page.with_name(f".probe_{page.name}")
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    try:
        run = _chromium("--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'data-problems="([^"]*)"', run.stdout)
    assert found, f"the probe did not run: {run.stderr[-2000:]}"
    import html

    problems = json.loads(html.unescape(found.group(1)))
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return problems, console


@pytest.fixture(scope="module")
def case(small_cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "SYN002"
    shutil.copytree(small_cohort / "SYN002", folder)
    return folder


@pytest.fixture(scope="module")
def report(case, small_cohort):
    return write_case_report(case, cohort=small_cohort)


def _volume_cc_with_nibabel(path: Path) -> float:
    nib = pytest.importorskip("nibabel")
    image = nib.load(str(path))
    return float(np.count_nonzero(np.asanyarray(image.dataobj))) * float(np.prod(image.header.get_zooms()[:3])) / 1000


def test_report_has_banner_provenance_volumes_and_overlays(case, report):
    text = report.read_text(encoding="utf-8")
    assert BANNER in text and "class='banner'" in text
    assert "Not a model prediction" in text
    assert hashlib.sha256((case / "image.nii.gz").read_bytes()).hexdigest() in text
    for name in ("Bladder", "CTVp", "LN_Pelvic"):  # volumes as nibabel counts them
        cc = _volume_cc_with_nibabel(next(case.glob(f"structures/**/{name}.nii.gz")))
        assert re.search(rf"<td>{name}( <span[^<]*</span>)?</td><td class='num'>{cc:.2f}</td>", text), name
    assert "cohort min · median · max (n)" in text and "(4)" in text  # the 4 other labelled patients
    pngs = re.findall(r"<img src='([^']+)'", text)
    assert "centroid_CTVp.png" in pngs and "superior_CTVn.png" in pngs and "inferior_CTVp.png" in pngs
    for png in pngs:
        assert (report.parent / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rule_findings_and_prediction_fields_are_shown(case, tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(case, folder, ignore=shutil.ignore_patterns("report"))
    # Make Anorectum a copy of the Bladder: the rules forbid them sharing voxels.
    shutil.copyfile(folder / "structures" / "Bladder.nii.gz", folder / "structures" / "Anorectum.nii.gz")
    record = {
        "patient_id": "SYN002",
        "input": {"path": "", "sha256": "feedc0ffee" * 4},
        "model": {"name": "cervix-unet", "version": "0.3.1", "config_sha256": "abc123def456"},
        "structures": {"CTVn": {"volume_cc": 1.0, "uncertainty": 0.4123, "review_closely": True,
                                "reasons": ["uncertainty 0.41 > 0.3"]},
                       "Bladder": {"volume_cc": 1.0, "uncertainty": 0.05, "review_closely": False, "reasons": []}},
        "rule_changes": [{"rule": "overlap", "structure": "Anorectum", "voxels": 12, "volume_cc": 0.1,
                          "detail": "12 voxels went to Bladder (higher probability)", "other": "Bladder"}],
        "created": "2025-01-02T03:04:05",
        "out_of_scope": ["no uterus-like CTVp (CTVp 3.0 cc, expected at least 20 cc)"],
    }
    (folder / "image.nii.gz").rename(folder / "ct_input.nii.gz")  # a predict output has no image.nii.gz:
    record["input"]["path"] = str(folder / "ct_input.nii.gz")  # the report reads the recorded input
    (folder / "prediction.json").write_text(json.dumps(record))
    text = write_case_report(folder, out_dir=tmp_path / "out").read_text(encoding="utf-8")
    assert "Not a model prediction" not in text
    for value in ("cervix-unet", "0.3.1", "abc123def456", "feedc0ffee" * 4, "2025-01-02T03:04:05"):
        assert value in text
    assert "CTVn: review closely — uncertainty 0.41 &gt; 0.3" in text
    assert "12 voxels went to Bladder" in text and "<td class='num'>0.41</td>" in text
    assert "rules.overlap" in text and ("Anorectum/Bladder" in text or "Bladder/Anorectum" in text)
    assert "no cohort given" in text
    assert "Outside what this model was made for" in text and "no uterus-like CTVp (CTVp 3.0 cc" in text


def test_compose_and_margin_history_appear(case, tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(case, folder, ignore=shutil.ignore_patterns("report"))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    run = subprocess.run([SCRIPT, "compose", str(folder), "--ctvn", "LN_Pelvic,LN_CommonIliac,GTVn",
                          "--who", "dr.report"], capture_output=True, text=True, timeout=120)
    # this phantom patient has no nodal GTV (no GTVn file): a choice the case cannot honour
    assert run.returncode == 2 and "CTVn part GTVn not in this case" in " ".join(run.stderr.split()), run.stderr
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    run = subprocess.run([SCRIPT, "compose", str(folder), "--ctvn", "LN_Pelvic,LN_CommonIliac",
                          "--who", "dr.report"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([SCRIPT, "margin", str(folder), "--from", "CTVp", "--to", "PTVp", "--mm", "10,10,5",
                          "--subtract", "Anorectum", "--who", "dr.report"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "PTVp" in run.stdout and "Bladder" in run.stdout
    run = subprocess.run([SCRIPT, "report", str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    text = (folder / "report" / "index.html").read_text(encoding="utf-8")
    assert "dr.report" in text and "CTVn = LN_Pelvic ∪ LN_CommonIliac (" in text
    assert "PTVp = CTVp + (left-right 10 mm, antero-posterior 10 mm, supero-inferior 5 mm) minus Anorectum" in text
    assert "planning/PTVp_overlap.csv" in text


def test_volume_status_uses_the_validate_outlier_criterion():
    from cervicontour.report.case_report import VolumeRow

    cohort = (90.0, 100.0, 110.0, 5)  # min, median, max, n
    assert VolumeRow("Bladder", 400.0, cohort, None, cohort_z=10.0).status.startswith("cohort outlier (×4.00")
    assert VolumeRow("Bladder", 250.0, cohort, None, cohort_z=10.0).status == "ok"  # ×2.5: under the ×3 floor
    assert VolumeRow("Bladder", 400.0, cohort, None, cohort_z=2.0).status == "ok"  # z under 3.5
    assert VolumeRow("Bladder", 400.0, (90.0, 100.0, 110.0, 2), None, cohort_z=10.0).status == "ok"  # n < 3
    assert VolumeRow("Bladder", 2.0, None, (5.0, 1500.0)).status == "outside plausible range"


def test_end_marker_is_at_the_superior_end_whatever_the_storage_order():
    # slices stored inferior-first would be LPS; here axis 2 runs inferior (z decreases with k)
    direction = np.diag([1.0, 1.0, -1.0]) @ np.diag([1.0, -1.0, 1.0])  # axis 1 anterior, axis 2 inferior
    array = np.zeros((12, 12, 12), np.uint8)
    array[3:8, 4:9, 2:10] = 1
    mask = Volume(array, (1.0, 1.0, 2.0), (0.0, 0.0, 100.0), direction)
    _, top = _end_marker(mask, superior=True)
    _, bottom = _end_marker(mask, superior=False)
    assert top[2] == pytest.approx(100.0 - 2 * 2.0)  # k = 2 is the most superior slice
    assert bottom[2] == pytest.approx(100.0 - 9 * 2.0)
    assert top[0] == pytest.approx(5.0) and top[1] == pytest.approx(-6.0)  # the slab's centre voxel (i 5, j 6)


def test_report_refuses_a_folder_without_image_or_structures(tmp_path):
    from cervicontour.errors import InputError

    with pytest.raises(InputError, match="no image.nii.gz"):
        write_case_report(tmp_path)
    write_nifti(Volume(np.zeros((2, 2, 2), np.int16), (1, 1, 1)), tmp_path / "image.nii.gz")
    with pytest.raises(InputError, match="no structure masks"):
        write_case_report(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium)")
def test_probe_catches_a_broken_page(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><title>x</title></head><body><img src='missing.png'>"
                   "<script>console.error('deliberate')</script></body></html>")
    problems, console = page_problems(bad)
    assert "console.error: deliberate" in problems and "image not shown: missing.png" in problems
    assert any("deliberate" in line for line in console)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium)")
def test_report_opens_in_headless_chromium_without_console_errors(report, tmp_path):
    problems, console = page_problems(report)
    assert problems == [] and console == []
    shot = tmp_path / "case_report.png"
    run = _chromium("--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", report.as_uri())
    assert run.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(shot) as picture:
        assert picture.size == (1280, 1600)
        top = np.asarray(picture.convert("RGB"))[5:40, 600:680].reshape(-1, 3).mean(axis=0)
    assert top[0] > 150 and top[1] < 60 and top[2] < 80  # the red draft banner is at the top of the page


def test_overlay_styles_pair_a_reference_and_a_prediction_of_one_structure():
    from cervicontour.report.preview import COLOURS, _styles

    style = _styles(["Bladder (reference)", "Bladder (ours)", "CTVn", "Femur_Head_L"])
    assert style["Bladder (reference)"] == (COLOURS["Bladder"], "solid")
    assert style["Bladder (ours)"] == (COLOURS["Bladder"], "dashed")  # same structure, second mask: dashed
    assert style["CTVn"] == (COLOURS["CTVn"], "solid")
    assert style["Femur_Head_L"] == ("white", "solid")  # no colour of its own
