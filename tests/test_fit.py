"""`cervicontour fit` on a five-label cohort: transfer by name, part targets, never below zero-shot,
resume after SIGKILL, and the validation gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_helpers import TINY, halve

torch = pytest.importorskip("torch")

FIVE = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
#: a fit small enough for the test suite: 3 + 3 steps whatever the budget says, 2 validation patients
TINY_FIT = {"budget_minutes": 30.0, "max_stage1_steps": 3, "max_refiner_steps": 3, "folds": 3, "threads": 1}


@pytest.fixture(scope="module")
def nodal_cohort(tmp_path_factory) -> Path:
    """6 phantom patients (seed 11, halved) with the five compound masks *and* their parts (nodal
    groups, CTVp parts): what the source model trains on."""
    from cervicontour.cohort import load_cohort, write_case, write_notes
    from cervicontour.structures import DEFAULT_OUTPUTS
    from cervicontour.synth import synthesize_cohort

    full = synthesize_cohort(tmp_path_factory.mktemp("nodal_src") / "c", patients=6, seed=11, size="small")
    out = tmp_path_factory.mktemp("nodal") / "c"
    loaded = load_cohort(full)
    for case in loaded.cases():
        keep = set(FIVE) | set(DEFAULT_OUTPUTS)
        write_case(out, case.patient_id, halve(case.load_image()), {n: halve(case.load_structure(n)) for n in case.structure_names if n in keep})
    write_notes(out, {c.patient_id: c.note for c in loaded.cases()})
    return out


@pytest.fixture(scope="module")
def five_label_cohort(nodal_cohort, tmp_path_factory) -> Path:
    """The same patients as the hospital has them: the five compound masks only (no structures/sub/)."""
    import shutil

    out = tmp_path_factory.mktemp("five") / "c"
    shutil.copytree(nodal_cohort, out)
    for sub in out.glob("*/structures/sub"):
        shutil.rmtree(sub)
    return out


@pytest.fixture(scope="module")
def source_model(nodal_cohort, tmp_path_factory) -> Path:
    """A tiny stand-in for the default model: the twelve default channels (nodal groups, no CTVn;
    CTVp and its parts) and an (untrained) CTVn refiner inside model.pt."""
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.training.train import train
    from cervicontour.networks.refine import new_refiner
    from cervicontour.structures import DEFAULT_OUTPUTS

    run = tmp_path_factory.mktemp("source") / "run"
    train(nodal_cohort, run, TINY.replace(steps=2, structures=DEFAULT_OUTPUTS))
    model = load_model(run)
    with torch.no_grad():  # a 2-step model stays near the 2 % prior everywhere: lift one nodal group so that a
        for lifted in ("LN_Pelvic", "CTVp", "Uterus"):  # CTVn exists for the refiner stage; a CTVp to split into parts
            model.network.decoder.seg_layers[-1].bias[list(DEFAULT_OUTPUTS).index(lifted)] = 0.5
    refiner = new_refiner("CTVn", ("CTVp", "Anorectum", "Bladder"), (6.0, 6.0, 8.0), (9.0, 9.0, 12.0), patch_size=(16, 16, 8))
    return save_model(run / "with_refiner.pt", model.network, model.plan, model.arch, name="tiny-source", version="0", config_sha256=model.config_sha256,
                      meta=model.meta, refiner=refiner)  # fmt: skip


def _fit(cohort, out, source, **overrides):
    from cervicontour.training import FitConfig, fit

    return fit(cohort, out, init=str(source), config=FitConfig(**{**TINY_FIT, **overrides}))


@pytest.fixture(scope="module")
def fitted(five_label_cohort, source_model, tmp_path_factory):
    return _fit(five_label_cohort, tmp_path_factory.mktemp("fit") / "model", source_model)


def test_head_rows_are_kept_by_structure_name(source_model):
    """Every channel the source and the target share keeps its head row, whatever its position;
    a channel the source lacks starts at the prior."""
    import math

    from cervicontour.networks.bundle import load_model
    from cervicontour.networks.network import build_network
    from cervicontour.training.transfer import head_row_map, init_new_head_rows, load_into, open_source

    source = open_source(source_model)
    theirs = load_model(source_model).network.decoder.seg_layers[-1]
    structures = ("LN_Pelvic", "CTVn", "Bladder")  # reordered, with one new channel
    network = build_network(source.arch, 1, len(structures))
    report = load_into(network, source, structures=structures)
    rows = head_row_map(source, structures)
    init_new_head_rows(network, rows, 0.02)
    head = network.decoder.seg_layers[-1]
    order = list(source.plan.structures)
    assert torch.equal(head.weight[0], theirs.weight[order.index("LN_Pelvic")])
    assert torch.equal(head.weight[2], theirs.weight[order.index("Bladder")])
    assert float(head.bias[2].detach()) == float(theirs.bias[order.index("Bladder")].detach())
    assert float(head.bias[1].detach()) == pytest.approx(math.log(0.02 / 0.98))
    reshaped = {r[0]: r[3] for r in report.reshaped}
    assert "LN_Pelvic←LN_Pelvic" in reshaped["decoder.seg_layers.{}.weight".format(len(network.decoder.seg_layers) - 1)]
    assert "new: CTVn" in reshaped["decoder.seg_layers.{}.bias".format(len(network.decoder.seg_layers) - 1)]


def test_partition_is_exact_and_follows_the_most_probable_part():
    from cervicontour.training.targets import partition_compound

    compound = np.zeros((10, 3, 3), bool)
    compound[1:9] = True
    a = np.zeros((10, 3, 3), np.float32)
    b = np.zeros((10, 3, 3), np.float32)
    a[:4], b[4:6] = 0.9, 0.8  # voxels 6..8: no part is confident -> nearest confident voxel (b at 5)
    parts = partition_compound(compound, {"A": a, "B": b}, (1.0, 1.0, 1.0))
    assert np.array_equal(parts["A"] | parts["B"], compound) and not (parts["A"] & parts["B"]).any()
    assert parts["A"][1:4].all() and not parts["A"][4:].any()
    assert parts["B"][4:9].all()
    # gross disease lies on the anatomy: GTVp takes the voxels where it is >= 0.5, overlapping the anatomical part
    g = np.zeros((10, 3, 3), np.float32)
    g[2:5] = 0.7
    g[0] = 0.9  # outside the compound: never taken
    parts = partition_compound(compound, {"A": a, "B": b, "GTVp": g}, (1.0, 1.0, 1.0))
    assert np.array_equal(parts["GTVp"], compound & (g >= 0.5)) and parts["GTVp"][2:5].all() and not parts["GTVp"][0].any()
    assert parts["A"][1:4].all() and parts["B"][4:9].all() and not (parts["A"] & parts["B"]).any()
    # where the tumour is and no anatomical part reaches 0.5 it is tumour only (grown beyond the organ)
    g[6:8] = 0.6  # b there: 0 (voxels 6..8 took b from the nearest confident voxel)
    parts = partition_compound(compound, {"A": a, "B": b, "GTVp": g}, (1.0, 1.0, 1.0))
    assert parts["GTVp"][6:8].all() and not parts["B"][6:8].any() and parts["B"][8].all()
    assert np.array_equal(parts["A"] | parts["B"] | parts["GTVp"], compound) and not (parts["A"] & parts["B"]).any()
    assert parts["A"][2:4].all() and parts["GTVp"][2:4].all()  # A is 0.9 there: the tumour lies on A
    assert parts["B"][4].all() and parts["GTVp"][4].all()  # B 0.8 >= 0.5 under a 0.7 tumour: on B


def test_fit_five_labels_end_to_end(fitted, five_label_cohort):
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import load_model
    from cervicontour.structures import COMPOUND
    from cervicontour.training import read_fit_record
    from cervicontour.validate.notes import para_aortic_included

    out = fitted.model_dir
    record = read_fit_record(out)
    assert [s for s in record.stages if record.done(s)] == ["gate", "plan", "targets", "zeroshot", "stage1", "refiner", "select", "export"]
    assert record.stages["refiner"]["steps_done"] == 3  # the refiner stage ran (its start: the init's refiner)
    targets = record.stages["plan"]["channels"]["targets"]
    assert {n: targets[n] for n in ("Bladder", "CTVp", "LN_Pelvic", "LN_ParaAortic", "GTVn")} == {
        "Bladder": "label", "CTVp": "label", "LN_Pelvic": "parts", "LN_ParaAortic": "parts", "GTVn": "parts"}
    assert {n: targets[n] for n in COMPOUND["CTVp"]} == dict.fromkeys(COMPOUND["CTVp"], "parts")
    # the part targets split each patient's compound CTVn and CTVp exactly (the anatomical parts
    # without overlap, gross disease on them); para-aortic only where the note says so
    derived = load_cohort(out / "work" / "targets")
    for case in load_cohort(five_label_cohort).cases():
        for compound, parts in COMPOUND.items():
            whole = case.load_structure(compound).array > 0
            union, anatomy, total = np.zeros_like(whole), np.zeros_like(whole), 0
            for part in parts:
                if derived[case.patient_id].has(part):
                    m = derived[case.patient_id].load_structure(part).array > 0
                    assert not (m & ~whole).any(), (case.patient_id, part)
                    union |= m
                    total += int(m.sum()) if part not in ("GTVp", "GTVn") else 0
                    anatomy = anatomy | m if part not in ("GTVp", "GTVn") else anatomy
            assert np.array_equal(union, whole) and total == int(anatomy.sum()), (case.patient_id, compound)  # anatomical parts disjoint
        assert derived[case.patient_id].has("LN_ParaAortic") == para_aortic_included(case.note)
    # stage 1 ran the recorded step count; transfer kept the shared head rows
    assert record.stages["stage1"]["steps_done"] == record.stages["stage1"]["steps"] == 3
    transfer = record.stages["stage1"]["transfer"]  # the eight channels are the source's, in its order: the whole head kept
    assert transfer["counts"]["skipped"] == 0 and any(k.startswith("decoder.seg_layers.") for k in transfer["loaded"])
    # never below zero-shot: a fitted candidate replaces the init for a structure only when it is the best
    # fitted one and its paired gain over zero-shot is at least its standard error (recomputed here)
    select = record.stages["select"]
    for name, chosen in select["choice"].items():
        if chosen == "zeroshot":
            continue
        fitted_means = {c: v["dice"][name] for c, v in select["candidates"].items() if c != "zeroshot"}
        assert fitted_means[chosen] == max(fitted_means.values())
        d = np.array([select["per_case"][chosen][p][name]["dice"] - select["per_case"]["zeroshot"][p][name]["dice"] for p in select["per_case"]["zeroshot"]])
        assert d.mean() > 0 and d.mean() >= d.std(ddof=1) / np.sqrt(d.size)
    final, zero = record.stages["export"]["validation"]["dice"], record.stages["zeroshot"]["dice"]
    for name in FIVE:  # the assembled float16 model re-scored: fp16 rounding only
        assert final[name] >= zero[name] - 0.01, name
    model = load_model(out)
    frozen = set(record.stages["stage1"].get("frozen_channels", {}))  # parts no training patient had: the init's
    assert set(model.fallback_structures) == {n for n, c in select["choice"].items() if c == "zeroshot"} | frozen
    card = (out / "card.md").read_text()
    assert "Not for clinical use without review" in card and "zero-shot" in card
    assert json.loads((out / "card.json").read_text())["schema"] == "cervicontour-card/1"


def test_predict_with_a_fitted_model_composes_ctvn_from_the_chosen_groups(fitted, five_label_cohort, tmp_path):
    from cervicontour.inference.cohort import predict

    [path] = predict(five_label_cohort / "SYN001" / "image.nii.gz", tmp_path / "p", model=fitted.model_dir, nodal_groups=["LN_Pelvic", "GTVn"])
    from cervicontour.io import read_volume

    record = json.loads(path.read_text())
    assert set(record["composed"]["CTVn"]) == {"GTVn", "LN_Pelvic"}
    folder = path.parent
    mask = lambda n: read_volume(next(folder.rglob(f"{n}.nii.gz"))).array > 0  # noqa: E731
    assert np.array_equal(mask("CTVn"), mask("GTVn") | mask("LN_Pelvic"))
    # the CTVp's parts split the predicted CTVp: each inside it, their union it, voxel for voxel
    assert record["partitions"]["CTVp"] == ["Cervix", "GTVp", "Uterus", "Vagina"]
    ctvp = mask("CTVp")
    assert ctvp.any()
    union = np.zeros_like(ctvp)
    for part in record["partitions"]["CTVp"]:
        assert not (mask(part) & ~ctvp).any(), part
        union |= mask(part)
    assert np.array_equal(union, ctvp)


def test_validation_errors_stop_the_fit_and_name_the_patients(five_label_cohort, source_model, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from cervicontour.cli import app

    broken = tmp_path / "broken"
    shutil.copytree(five_label_cohort, broken)
    bladder = broken / "SYN002" / "structures" / "Bladder.nii.gz"
    bladder.write_bytes(bladder.read_bytes()[:200])  # truncated file
    result = CliRunner().invoke(app, ["fit", str(broken), "--out", str(tmp_path / "m"), "--init", str(source_model)])
    assert result.exit_code == 2
    assert "SYN002" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_a_non_empty_out_without_resume_is_refused(five_label_cohort, source_model, tmp_path):
    from cervicontour.errors import InputError

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("keep")
    with pytest.raises(InputError, match="--resume"):
        _fit(five_label_cohort, tmp_path / "m", source_model)
    with pytest.raises(InputError, match="nothing to resume"):
        from cervicontour.training import FitConfig, fit

        fit(five_label_cohort, tmp_path / "m2", init=str(source_model), config=FitConfig(**TINY_FIT), resume=True)


def _weights(model_dir: Path) -> str:
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import weights_sha256

    model = load_model(model_dir)
    parts = [weights_sha256(model.network)]
    if model.refiner is not None:
        parts.append(weights_sha256(model.refiner.network))
    return "/".join(parts)


KILL_POINTS = [("targets", 2), ("zeroshot", 1), ("refiner", 2), ("select: stage1", 1), ("export: final model", 1)]


@pytest.mark.parametrize("stage, at", [("stage1", 2), *(pytest.param(s, a, marks=pytest.mark.slow) for s, a in KILL_POINTS)])
def test_sigkill_then_resume_ends_with_the_same_model(fitted, five_label_cohort, source_model, tmp_path, stage, at):
    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from cervicontour.training import FitConfig, fit
        def bomb(stage, done, total, text):
            if stage == {stage!r} and done >= {at}:
                os.kill(os.getpid(), signal.SIGKILL)
        fit({str(five_label_cohort)!r}, {str(out)!r}, init={str(source_model)!r}, config=FitConfig(**{TINY_FIT!r}), on_event=bomb)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "model.pt").exists()
    from cervicontour.training import FitConfig, fit

    fit(five_label_cohort, out, config=FitConfig(**TINY_FIT), resume=True)
    assert _weights(out) == _weights(fitted.model_dir)


def test_one_version_number():
    import tomllib

    import cervicontour
    from cervicontour.training.train import MODEL_VERSION

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["version"] == cervicontour.__version__ == MODEL_VERSION


def test_train_on_five_labels_keeps_the_shared_head_rows_and_refuses_channels_without_labels(five_label_cohort, source_model, tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.training.train import train
    from cervicontour.structures import NODAL_OUTPUTS

    with pytest.raises(InputError, match="LN_CommonIliac.*cervicontour fit"):
        train(five_label_cohort, tmp_path / "nodal", TINY.replace(steps=1, structures=NODAL_OUTPUTS), init=source_model)
    result = train(five_label_cohort, tmp_path / "five", TINY.replace(steps=1, structures=FIVE), init=source_model)
    hows = {r[3] for r in result.transfer["reshaped"] if r[0].startswith("decoder.seg_layers.")}  # one row map for every head tensor
    assert len(hows) == 1
    how = hows.pop()
    for name in ("Bladder", "Anorectum", "CTVp", "Parametrium"):
        assert f"{name}←{name}" in how
    assert how.endswith("new: CTVn")


def test_prediction_record_carries_its_schema_and_a_foreign_one_is_refused(fitted, five_label_cohort, tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.export.provenance import PREDICTION_SCHEMA, read_prediction_record
    from cervicontour.inference.cohort import predict
    from cervicontour.io import read_volume
    from cervicontour.volume import image_sha256

    [path] = predict(five_label_cohort / "SYN002" / "image.nii.gz", tmp_path / "p", model=fitted.model_dir)
    data = json.loads(path.read_text())
    record = read_prediction_record(path.parent)
    assert data["schema"] == record.schema == PREDICTION_SCHEMA == "cervicontour-prediction/1"
    assert record.to_dict() == data  # the typed record is the file, field for field
    image = read_volume(five_label_cohort / "SYN002" / "image.nii.gz")
    assert record.input.sha256 == image_sha256(image) and record.input.shape == image.shape  # an independent read of the input
    assert record.patient_id == "SYN002" and record.model.path == str(fitted.model_dir / "model.pt")
    del data["schema"]  # a record written before the schema field: still read
    path.write_text(json.dumps(data))
    assert read_prediction_record(path.parent).to_dict() == {**data, "schema": PREDICTION_SCHEMA}
    for foreign in ({**data, "schema": "cervicontour-prediction/2"}, {**data, "surprise": 1}, {**data, "model": {"name": "x", "weights": 1}},
                    {**data, "input": "ct.nii.gz"}):  # fmt: skip
        path.write_text(json.dumps(foreign))
        with pytest.raises(InputError, match="schema|not in a|must be an object"):
            read_prediction_record(path.parent)


def test_a_nodal_choice_a_five_label_model_cannot_honour_is_an_error(five_label_cohort, tmp_path):
    from typer.testing import CliRunner

    from cervicontour.cli import app
    from cervicontour.training.train import train

    train(five_label_cohort, tmp_path / "five", TINY.replace(steps=1, structures=FIVE))
    image = five_label_cohort / "SYN001" / "image.nii.gz"
    for option in (["--para-aortic"], ["--nodal-groups", "LN_Pelvic,GTVn"]):
        result = CliRunner().invoke(app, ["predict", str(image), "--out", str(tmp_path / "p"), "--model", str(tmp_path / "five"), *option])
        assert result.exit_code == 2, result.output
        assert "cannot compose a CTVn" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "p").exists()
    result = CliRunner().invoke(app, ["predict", str(image), "--out", str(tmp_path / "p"), "--model", str(tmp_path / "five")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("init", ["astra", "missing-model.pt", "nnunet:no-such-folder"])
def test_an_unusable_init_is_refused_before_anything_is_written(five_label_cohort, tmp_path, init):
    from cervicontour.errors import InputError

    with pytest.raises(InputError, match="--init|no such model|missing-model"):
        _fit(five_label_cohort, tmp_path / "m", tmp_path / init if init.endswith(".pt") else init)
    assert not (tmp_path / "m").exists()


def test_the_part_targets_of_an_init_with_a_fallback_come_from_the_network_it_predicts_them_with():
    """The shipped default predicts the nodal groups with its fallback network (its main one, the
    CTVp-parts fine-tune, lost Dice on them): the CTVn of each patient is split by the fallback's
    groups, as the init predicts them, never by the main network's. Hand-made networks: the main
    one puts LN_Pelvic on the 200 HU block and LN_CommonIliac on the 400 HU one, the fallback the
    other way round; a part the fallback does not carry (Cervix) stays the main network's."""
    from cervicontour.networks.bundle import Model
    from cervicontour.contours.parts import partition_compound
    from cervicontour.preprocess import Normalization, Plan
    from cervicontour.training.targets import source_probabilities
    from cervicontour.volume import Volume

    def band(x, hu):
        return ((x - hu / 100).abs() < 0.5).float() * 40 - 20

    class Main(torch.nn.Module):  # LN_Pelvic, LN_CommonIliac, Cervix
        def forward(self, x):
            return torch.cat([band(x, 200), band(x, 400), band(x, 600)], dim=1)

    class Old(torch.nn.Module):  # LN_Pelvic, LN_CommonIliac
        def forward(self, x):
            return torch.cat([band(x, 400), band(x, 200)], dim=1)

    norm = Normalization(-1000.0, 1000.0, 0.0, 100.0)
    old = Model(Old(), Plan(("LN_Pelvic", "LN_CommonIliac"), (2.0, 2.0, 3.0), (16, 16, 8), norm), {}, "old", "0", "-")
    init = Model(Main(), Plan(("LN_Pelvic", "LN_CommonIliac", "Cervix"), (2.0, 2.0, 3.0), (16, 16, 8), norm), {}, "init", "1", "-",
                 fallback=old, fallback_structures=("CTVn",))
    hu = np.full((24, 20, 12), -1000, np.int16)
    hu[2:22, 2:18, 1:11] = 0
    hu[4:10, 6:12, 3:8], hu[10:16, 6:12, 3:8], hu[16:20, 6:12, 3:8] = 200, 400, 600
    image = Volume(hu, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    p = source_probabilities(init, image)
    block = lambda i0, i1: (slice(i0, i1), slice(6, 12), slice(3, 8))  # noqa: E731
    assert (p["LN_Pelvic"][block(10, 16)] > 0.99).all() and (p["LN_Pelvic"][block(4, 10)] < 0.01).all()
    assert (p["LN_CommonIliac"][block(4, 10)] > 0.99).all() and (p["Cervix"][block(16, 20)] > 0.99).all()
    ctvn = np.zeros(hu.shape, bool)
    ctvn[block(4, 16)] = True
    split = partition_compound(ctvn, {n: p[n] for n in ("LN_CommonIliac", "LN_Pelvic")}, image.spacing_mm)
    assert split["LN_Pelvic"][block(10, 16)].all() and not split["LN_Pelvic"][block(4, 10)].any()


def test_a_budget_that_cannot_pay_for_the_refiner_skips_it(five_label_cohort, source_model, tmp_path):
    """A budget spent before the refiner stage (0.6 s): stage 1 runs its floor of steps, the refiner
    is skipped with the reason in fit.json and the card, and selection weighs stage 1 against zero-shot.
    Each stage counted per patient says when it starts (done 0), so its elapsed time and estimate
    count from there."""
    from cervicontour.training import FitConfig, fit, read_fit_record

    events = []
    config = FitConfig(**{**TINY_FIT, "budget_minutes": 0.01, "max_stage1_steps": None, "min_steps": 2})
    result = fit(five_label_cohort, tmp_path / "m", init=str(source_model), config=config, on_event=lambda *e: events.append(e))
    record = read_fit_record(result.model_dir)
    for stage in ("targets", "zeroshot", "select: stage1", "export: final model"):
        counted = [(done, total) for name, done, total, text in events if name == stage and text != "done"]
        assert counted[0][0] == 0 and [d for d, _ in counted[1:]] == list(range(1, counted[0][1] + 1)), (stage, counted)
    assert [e for e in events if e[0] == "refiner"] == [("refiner", 1, 1, "skipped: " + record.stages["refiner"]["skipped"])]
    assert record.stages["stage1"]["steps_done"] == 2
    refiner = record.stages["refiner"]
    assert refiner["status"] == "done" and refiner["skipped"].startswith("budget: 0 s left") and "steps" not in refiner
    assert not (result.model_dir / "work" / "refiner").exists()
    assert set(record.stages["select"]["candidates"]) == {"zeroshot", "stage1"}
    assert refiner["skipped"] in (result.model_dir / "card.md").read_text() and result.model_path.is_file()
