"""The real console script on a tiny cohort, plus exit codes for bad input."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cervicontour.cli import app
from cervicontour.cohort import load_cohort

runner = CliRunner()
SCRIPT = str(Path(sys.executable).with_name("cervicontour"))


def test_help_is_instant_and_imports_nothing_heavy():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from cervicontour.cli import app; "
        "heavy = [m for m in ('numpy', 'SimpleITK', 'torch', 'pydicom', 'scipy') if m in sys.modules]; "
        "print(heavy)")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "synth" in result.stdout
    assert time.perf_counter() - start < 20  # generous: catches an accidental torch import only


def test_synth_end_to_end_with_the_real_script(tmp_path):
    out = tmp_path / "c"
    result = subprocess.run(
        [SCRIPT, "synth", str(out), "--patients", "3", "--holdout", "1", "--seed", "7", "--size", "small",
         "--preview"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    cohort = load_cohort(out)
    assert len(cohort.labelled()) == 3 and len(cohort.holdout()) == 1
    pngs = sorted(p.name for p in (out / "preview").glob("*.png"))
    assert pngs == ["SYN001.png", "SYN002.png", "SYN003.png"]
    info = subprocess.run([SCRIPT, "info", str(out)], capture_output=True, text=True)
    assert info.returncode == 0 and "SYN004" in info.stdout and "hold-out" in info.stdout


def test_bad_input_exits_2_with_a_message_and_writes_nothing(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep")
    result = runner.invoke(app, ["synth", str(tmp_path / "full"), "--patients", "1"])
    assert result.exit_code == 2
    assert "not empty" in result.output
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["x.txt"]

    result = runner.invoke(app, ["synth", str(tmp_path / "new"), "--size", "huge"])
    assert result.exit_code == 2 and "--size" in result.output
    assert not (tmp_path / "new").exists()

    result = runner.invoke(app, ["synth", str(tmp_path / "new"), "--phantom", "3"])
    assert result.exit_code == 2 and "phantom must be one of [1, 2]" in result.output
    assert not (tmp_path / "new").exists()

    result = runner.invoke(app, ["info", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "no such folder" in result.output


def test_structures_lists_the_vocabulary():
    result = runner.invoke(app, ["structures"])
    assert result.exit_code == 0
    assert "Parametrium" in result.output and "Paravagina" in result.output


def test_preview_png_is_an_image(small_cohort, tmp_path):
    result = runner.invoke(app, ["preview", str(small_cohort), "--patient", "SYN004", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    png = tmp_path / "SYN004.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 600
    assert np.std(pixels[..., :3]) > 0.05  # not a blank canvas
