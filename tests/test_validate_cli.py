"""End to end: the real `cervicontour validate` / `clean` scripts on a tiny cohort, and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from box_cohort import ORIGIN, SPACING, primary_arrays
from corruptions import tree_hashes
from test_validate_cohort import write_box_cohort
from typer.testing import CliRunner

from cervicontour.cli import app
from cervicontour.io import write_nifti
from cervicontour.volume import Volume

SCRIPT = str(Path(sys.executable).with_name("cervicontour"))
runner = CliRunner()


def test_validate_then_clean_then_validate_with_the_real_script(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=3)
    ok = subprocess.run([SCRIPT, "validate", str(root)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 errors" in ok.stdout

    write_nifti(Volume(primary_arrays()["Bladder"] * np.uint8(255), SPACING, ORIGIN), root / "P01" / "structures" / "Bladder.nii.gz")
    report, findings = tmp_path / "qa.html", tmp_path / "qa.json"
    bad = subprocess.run([SCRIPT, "validate", str(root), "--json", str(findings), "--html", str(report)], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "mask.binary" in bad.stdout and "1 errors" in bad.stdout
    payload = json.loads(findings.read_text())
    assert payload["counts"] == {"error": 1, "warning": 0, "info": 0}
    assert len(payload["meta"]["rules_sha256"]) == 64 and payload["meta"]["patients"] == 3
    assert payload["findings"][0]["patient_id"] == "P01" and payload["findings"][0]["structure"] == "Bladder"
    assert "<section id='P01'>" in report.read_text()

    before = tree_hashes(root)
    cleaned = subprocess.run([SCRIPT, "clean", str(root), str(tmp_path / "out")], capture_output=True, text=True)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "binarised" in cleaned.stdout and "1 changes" in cleaned.stdout
    assert tree_hashes(root) == before
    again = subprocess.run([SCRIPT, "validate", str(tmp_path / "out")], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout


def test_exit_code_2_when_the_input_cannot_be_read(tmp_path):
    assert runner.invoke(app, ["validate", str(tmp_path / "absent")]).exit_code == 2
    root = write_box_cohort(tmp_path / "c", n=1)
    bad_rules = tmp_path / "rules.toml"
    bad_rules.write_text("[overlap]\nstructures = ['Bladdr']\n")
    result = runner.invoke(app, ["validate", str(root), "--rules", str(bad_rules)])
    assert result.exit_code == 2
    assert "Did you mean 'Bladder'" in result.output
    assert runner.invoke(app, ["clean", str(root), str(root / "inside")]).exit_code == 2


def test_clean_exits_1_when_errors_remain(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=1)
    (root / "P01" / "structures" / "CTVp.nii.gz").unlink()
    result = runner.invoke(app, ["clean", str(root), str(tmp_path / "out"), "--json", str(tmp_path / "left.json")])
    assert result.exit_code == 1
    assert json.loads((tmp_path / "left.json").read_text())["findings"][0]["check"] == "structure.missing"


def test_custom_rules_file_changes_the_verdict(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=1)
    strict = tmp_path / "strict.toml"
    strict.write_text("[[volume]]\nstructure = 'Bladder'\nmin_cc = 100\nmax_cc = 200\nseverity = 'error'\n")
    result = runner.invoke(app, ["validate", str(root), "--rules", str(strict)])
    assert result.exit_code == 1 and "rules.volume" in result.output
