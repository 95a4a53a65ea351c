"""Every command over the bad-input corpus (tests/bad_inputs.py): exit 2, a message and no traceback,
nothing written, the input's bytes unchanged.

Runs the real CLI in-process (typer's CliRunner); the input gate refuses before the model loads,
so the whole corpus takes seconds.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import PHI_NAME, BadInput, build_corpus, copy_input, good_ct
from typer.testing import CliRunner

from cervicontour.cli import app
from cervicontour.io import write_nifti
from cervicontour.volume import Volume

runner = CliRunner()


def _hashes(root: Path) -> dict[str, str]:
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[BadInput]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A reference cohort: P1 with a good CT, a Bladder and two nodal sub-structures."""
    root = tmp_path_factory.mktemp("good") / "cohort"
    ct = Volume(good_ct(), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    write_nifti(ct, root / "P1" / "image.nii.gz")
    mask = np.zeros(ct.shape, np.uint8)
    mask[15:25, 15:25, 3:8] = 1
    write_nifti(ct.with_array(mask), root / "P1" / "structures" / "Bladder.nii.gz")
    for name in ("LN_Pelvic", "LN_CommonIliac"):
        write_nifti(ct.with_array(mask), root / "P1" / "structures" / "sub" / f"{name}.nii.gz")
    try:  # masks on the grid of the corpus' DICOM series (same geometry), for rtstruct export
        from bad_inputs import _series

        from cervicontour.io.dicom import read_dicom_series

        series = read_dicom_series(_series(root.parent / "series", (good_ct().astype(np.int32) + 1024).astype(np.uint16)))
        write_nifti(series.with_array(mask), root.parent / "dicom_case" / "structures" / "Bladder.nii.gz")
    except ImportError:
        pass
    return root


def _refused(args: list[str], names: tuple[str, ...] = ()) -> str | None:
    """None when the command exits 2 with a message naming one of ``names`` (the input at fault)
    and no traceback; else what went wrong."""
    result = runner.invoke(app, args)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"exit {result.exit_code}: {type(result.exception).__name__}: {result.exception}"
    if result.exit_code != 2:
        return f"exit {result.exit_code}: {text.strip()[-300:]}"
    if "Traceback" in text or "error:" not in text:
        return f"no clear message: {text.strip()[-300:]}"
    if PHI_NAME.split("^")[0] in text or "SECRET" in text:
        return f"the message repeats PHI: {text.strip()[-300:]}"
    if names and not any(n in text for n in names):
        return f"the message names none of {names}: {text.strip()[-300:]}"
    return None


def _command(command: str, item: BadInput, work: Path, good: Path) -> tuple[list[str], Path, list[Path], tuple[str, ...]]:
    """``(args, the copy of the input to keep unchanged, paths that must not appear, names the message must mention one of)``."""
    out = work / "out"
    if command == "predict":
        src = copy_input(item, work / ("input_ct" + ("" if item.path.is_dir() else "".join(item.path.suffixes))))
        return ["predict", str(src), "--out", str(out)], src, [out], ("input_ct",)
    if command in ("info", "preview", "clean"):
        cohort = Path(shutil.copytree(good, work / "cohort"))
        copy_input(item, cohort / "P1" / "image.nii.gz")
        extra = {"info": [], "preview": ["--out", str(out)], "clean": [str(out)]}[command]
        return [command, str(cohort), *extra], cohort, [out], ("P1/image.nii.gz",)
    if command == "report":
        case = Path(shutil.copytree(good / "P1", work / "P1"))
        copy_input(item, case / "image.nii.gz")
        return ["report", str(case), "--out", str(out)], case, [out], ("image.nii.gz",)
    if command == "margin":
        case = Path(shutil.copytree(good / "P1", work / "P1"))
        copy_input(item, case / "structures" / "Bladder.nii.gz")
        return ["margin", str(case), "--from", "Bladder", "--to", "PTV_B", "--mm", "5", "--who", "test"], case, [], ("Bladder.nii.gz",)
    if command == "evaluate":
        pred = work / "pred"
        copy_input(item, pred / "P1" / "structures" / "Bladder.nii.gz")
        return ["evaluate", "--pred", str(pred), "--ref", str(good), "--out", str(out / "m.csv")], pred, [out], ("Bladder.nii.gz",)
    if command == "compose":
        case = Path(shutil.copytree(good / "P1", work / "P1"))
        copy_input(item, case / "structures" / "sub" / "LN_Pelvic.nii.gz")
        return ["compose", str(case), "--ctvn", "LN_Pelvic,LN_CommonIliac", "--who", "test"], case, [], ("LN_Pelvic.nii.gz",)
    if command == "rtstruct-export":
        src = copy_input(item, work / "input_series")
        masks = good.parent / "dicom_case"
        return ["rtstruct", "export", "--series", str(src), "--masks", str(masks), "--out", str(out / "RS.dcm")], src, [out], ("input_series",)
    if command == "rtstruct-import":
        src = copy_input(item, work / "input_rs.dcm")
        return (["rtstruct", "import", "--series", str(item.series), "--rtstruct", str(src), "--out", str(out / "P1")], src, [out],
                ("input_rs.dcm", "ROI 'Bladder'"))
    raise AssertionError(command)


def test_the_corpus_has_at_least_60_inputs(corpus):
    assert len(corpus) >= 60, len(corpus)
    assert len({c.name for c in corpus}) == len(corpus)


@pytest.mark.parametrize("command", ["predict", "info", "preview", "report", "margin", "evaluate", "compose", "rtstruct-export", "rtstruct-import"])
def test_every_command_refuses_every_bad_input_cleanly(corpus, good, tmp_path, command):
    items = [c for c in corpus if command in c.commands]
    assert items
    failures = []
    for n, item in enumerate(items):
        work = tmp_path / f"{n:02d}"
        args, kept, absent, names = _command(command, item, work, good)
        before = _hashes(kept)
        problem = _refused(args, names)
        if problem is None and _hashes(kept) != before:
            problem = "the input changed"
        if problem is None and any(p.exists() for p in absent):
            problem = f"output left behind: {[str(p) for p in absent if p.exists()]}"
        if problem is None:
            leftovers = [p.name for p in work.rglob(".*") if p.name.startswith(".")]
            problem = f"temporary files left: {leftovers}" if leftovers else None
        if problem:
            failures.append(f"{item.name}: {problem}")
    assert not failures, f"{len(failures)} of {len(items)} inputs not refused cleanly by {command}:\n" + "\n".join(failures)


@pytest.mark.parametrize("command", ["validate", "clean"])
def test_validate_and_clean_report_unreadable_files_as_findings(corpus, good, tmp_path, command):
    """validate and clean report (exit 1, a findings table, no traceback) instead of refusing; inputs unchanged."""
    items = [c for c in corpus if "info" in c.commands]
    failures = []
    for n, item in enumerate(items):
        work = tmp_path / f"{n:02d}"
        args, cohort, _, _ = _command("clean" if command == "clean" else "info", item, work, good)
        args[0] = command
        before = _hashes(cohort)
        result = runner.invoke(app, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            failures.append(f"{item.name}: {type(result.exception).__name__}: {result.exception}")
        elif result.exit_code != 1 or "Traceback" in result.output or "error" not in result.output:
            failures.append(f"{item.name}: exit {result.exit_code}: {result.output.strip()[-200:]}")
        elif _hashes(cohort) != before:
            failures.append(f"{item.name}: the input changed")
    assert not failures, "\n".join(failures)


def test_output_paths_that_are_files_are_refused(good, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "sub"):
        assert _refused(["predict", str(good / "P1" / "image.nii.gz"), "--out", str(out)]) is None
        assert _refused(["evaluate", "--pred", str(good), "--ref", str(good), "--out", str(out / "m.csv")]) is None
    assert blocker.read_text() == "keep me"


def test_cohort_predict_is_all_or_nothing(good, tmp_path):
    """A cohort whose second patient is unusable: exit 2 and no output, though the first succeeded."""
    pytest.importorskip("torch")
    cohort = Path(shutil.copytree(good, tmp_path / "cohort"))
    shutil.copytree(good / "P1", cohort / "P2")
    (cohort / "P2" / "image.nii.gz").write_bytes(b"")
    out = tmp_path / "pred"
    assert _refused(["predict", str(cohort), "--out", str(out), "--all"]) is None
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_a_huge_header_is_refused_fast_and_small(corpus):
    """A ~70-byte .nii.gz declaring 30000³ int16 voxels: refused before anything is allocated."""
    from cervicontour.errors import InputError
    from cervicontour.io import read_nifti

    (item,) = [c for c in corpus if c.name == "huge_dims_gz"]
    assert item.path.stat().st_size < 100
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(InputError, match="30000×30000×30000"):
        read_nifti(item.path)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2**20 and seconds < 1.0, (peak, seconds)


def test_the_good_inputs_pass_the_same_commands(corpus, good, tmp_path):
    """Controls: the unbroken inputs the corpus items are made from go through (so a refusal above is the item's)."""
    pytest.importorskip("pydicom")
    series = good.parent / "series"
    item = next(c for c in corpus if c.kind == "rtstruct")
    rs = item.path.parent / "good.dcm"
    case = Path(shutil.copytree(good / "P1", tmp_path / "P1"))
    runs = {
        "info": ["info", str(good)],
        "evaluate": ["evaluate", "--pred", str(good), "--ref", str(good), "--out", str(tmp_path / "m.csv")],
        "compose": ["compose", str(case), "--ctvn", "LN_Pelvic,LN_CommonIliac", "--who", "test"],
        "margin": ["margin", str(case), "--from", "Bladder", "--to", "PTV_B", "--mm", "5", "--who", "test"],
        "rtstruct-export": ["rtstruct", "export", "--series", str(series), "--masks", str(good.parent / "dicom_case"), "--out", str(tmp_path / "RS.dcm")],
        "rtstruct-import": ["rtstruct", "import", "--series", str(item.series), "--rtstruct", str(rs), "--out", str(tmp_path / "imported" / "P1")],
    }
    for name, args in runs.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (name, result.output[-500:])


def test_force_predicts_a_ct_labelled_otherwise_and_flags_it(corpus, tmp_path):
    """--force: the MR-labelled series (CT numbers inside) is predicted, exit 0, and flagged out of scope."""
    pytest.importorskip("torch")
    import json

    (item,) = [c for c in corpus if c.name == "dicom_mr_modality"]
    out = tmp_path / "o"
    assert _refused(["predict", str(item.path), "--out", str(out)], ("dicom_mr_modality",)) is None
    result = runner.invoke(app, ["predict", str(item.path), "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output[-800:]
    record = json.loads((out / "SYNTH01" / "prediction.json").read_text())  # named by the series' PatientID
    assert record["out_of_scope"][0].startswith("input gate overridden with --force: expected a CT series (DICOM Modality CT), got Modality MR")


def test_nothing_is_made_before_the_first_case_is_ready(corpus, tmp_path):
    """--out inside the (bad) input folder: the refusal speaks of the input, and no staging folder ever appears in it."""
    (item,) = [c for c in corpus if c.name == "dicom_missing_slice"]
    series = copy_input(item, tmp_path / "series")
    before = sorted(p.name for p in series.iterdir())
    assert _refused(["predict", str(series), "--out", str(series / "pred")], ("missing slice",)) is None
    assert sorted(p.name for p in series.iterdir()) == before


def test_predict_never_replaces_a_review_or_its_input(good, tmp_path):
    """A case folder with a clinician's review log, or holding the input, is not replaced (nothing lost)."""
    out = tmp_path / "pred"
    (out / "P1" / "structures").mkdir(parents=True)
    (out / "P1" / "review.json").write_text('{"patient_id": "P1", "entries": []}')
    assert _refused(["predict", str(good), "--out", str(out), "--all"], ("review.json",)) is None
    assert (out / "P1" / "review.json").is_file()
    cohort = Path(shutil.copytree(good, tmp_path / "cohort"))
    assert _refused(["predict", str(cohort), "--out", str(cohort), "--all"], ("holds the input",)) is None
    assert _hashes(cohort) == _hashes(good)
