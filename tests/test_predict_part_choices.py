"""The clinician's choice of CTV parts on a cohort labelled with the five compound masks only
(phantoms with their ``structures/sub/`` deleted): predict logs the nodal groups it composed CTVn
of, compose refuses parts the model did not predict, evaluate scores parts only against a reference
that has them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from model_helpers import TINY

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> tuple[Path, Path]:
    """(with parts, five labels): 2 small phantom patients, seed 1919, and the same without structures/sub/."""
    from cervicontour.synth import synthesize_cohort

    full = synthesize_cohort(tmp_path_factory.mktemp("parts") / "full", patients=2, seed=1919, size="small")
    five = tmp_path_factory.mktemp("five") / "five"
    shutil.copytree(full, five)
    for sub in five.glob("*/structures/sub"):
        shutil.rmtree(sub)
    return full, five


@pytest.fixture(scope="module")
def nodal_model(cohorts, tmp_path_factory) -> Path:
    """A one-step TINY model with the nodal-group channels (no CTVn, no CTVp parts), its
    LN_Pelvic and LN_CommonIliac heads lifted so that both groups are drafted."""
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.training.train import train
    from cervicontour.structures import NODAL_OUTPUTS

    run = tmp_path_factory.mktemp("nodal") / "run"
    train(cohorts[0], run, TINY.replace(steps=1, structures=NODAL_OUTPUTS, unlabelled_ok=("LN_ParaAortic",)))  # no para-aortic patient here
    model = load_model(run)
    with torch.no_grad():
        for lifted in ("LN_Pelvic", "LN_CommonIliac"):
            model.network.decoder.seg_layers[-1].bias[list(NODAL_OUTPUTS).index(lifted)] = 0.5
    return save_model(run / "lifted.pt", model.network, model.plan, model.arch, name="tiny-nodal", version="0", config_sha256=model.config_sha256, meta=model.meta)


@pytest.fixture(scope="module")
def predicted(cohorts, nodal_model, tmp_path_factory) -> Path:
    from cervicontour.inference.cohort import predict

    out = tmp_path_factory.mktemp("pred") / "out"
    predict(cohorts[1], out, model=nodal_model, all_cases=True, nodal_groups=["LN_Pelvic", "LN_CommonIliac"], who="dr.five")
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mask(path: Path) -> np.ndarray:
    from cervicontour.io import read_nifti

    return read_nifti(path).array != 0


def test_predict_on_a_five_label_cohort_logs_the_choice_and_ctvn_is_the_union(cohorts, predicted):
    cases = sorted(p for p in predicted.iterdir() if p.is_dir())
    assert [c.name for c in cases] == sorted(p.name for p in cohorts[1].iterdir() if p.is_dir())
    for case in cases:
        [record] = [json.loads(line) for line in (case / "compose_log.jsonl").read_text().splitlines()]
        sub = case / "structures" / "sub"
        assert (record["action"], record["who"], record["used"]) == ("predict", "dr.five", ["LN_Pelvic", "LN_CommonIliac"])
        assert record["parts_sha256"] == {n: _sha(sub / f"{n}.nii.gz") for n in ("LN_Pelvic", "LN_CommonIliac")}
        assert record["sha256"] == _sha(case / "structures" / "CTVn.nii.gz")
        ctvn = _mask(case / "structures" / "CTVn.nii.gz")
        assert ctvn.any(), case.name
        np.testing.assert_array_equal(ctvn, _mask(sub / "LN_Pelvic.nii.gz") | _mask(sub / "LN_CommonIliac.nii.gz"))


def test_compose_refuses_the_parts_this_model_does_not_predict(predicted, tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.contours.compose import compose_case, read_log

    case = Path(shutil.copytree(next(p for p in sorted(predicted.iterdir()) if p.is_dir()), tmp_path / "case"))
    with pytest.raises(InputError, match="CTVp part Cervix not in this case .*it has no CTVp parts at all"):
        compose_case(case, {"CTVp": "Cervix"}, who="dr.c")
    assert [r["action"] for r in read_log(case)] == ["predict"]
    (result,) = compose_case(case, {"CTVn": "LN_Pelvic,LN_ParaAortic"}, who="dr.c")  # every nodal group is drafted
    assert [r["action"] for r in read_log(case)] == ["predict", "compose"] and result.used == ("LN_Pelvic", "LN_ParaAortic", "GTVn")


def test_evaluate_scores_parts_only_against_a_reference_that_has_them(cohorts, predicted):
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort

    settings = EvaluationSettings(tolerances_mm=(3.0,))
    five = evaluate_cohort(cohorts[1], predicted, settings=settings, parts=True)
    assert five.part_rows == [] and five.part_notes == [] and {r["structure"] for r in five.rows} >= {"CTVn", "CTVp"}
    full = evaluate_cohort(cohorts[0], predicted, settings=settings, parts=True)
    got = {(r["patient_id"], r["structure"]): r for r in full.part_rows}
    for case in sorted(p.name for p in predicted.iterdir() if p.is_dir()):
        for part in ("LN_Pelvic", "LN_CommonIliac"):
            ref = _mask(cohorts[0] / case / "structures" / "sub" / f"{part}.nii.gz")
            pred = _mask(predicted / case / "structures" / "sub" / f"{part}.nii.gz")
            dice = 2 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred))
            assert got[(case, part)]["dice"] == pytest.approx(dice) and got[(case, part)]["compound"] == "CTVn"
    assert {r["compound"] for r in full.part_rows} == {"CTVn"}  # the model drafts no CTVp part
    assert full.part_notes == ["CTVp parts: the prediction has none; not scored (2 patients)"]


def test_a_chosen_set_of_groups_replaces_the_ctvn_of_a_model_that_predicts_it_itself(cohorts, tmp_path):
    """A model with a CTVn channel of its own and the nodal groups: no choice keeps its CTVn (here
    its head bias is -20: nothing drafted); a choice composes CTVn from the chosen groups (the
    LN_CommonIliac head lifted: drafted), replacing its own."""
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.training.train import train
    from cervicontour.inference.cohort import predict
    from cervicontour.structures import NODAL_OUTPUTS

    structures = (*NODAL_OUTPUTS, "CTVn")
    run = tmp_path / "run"
    train(cohorts[0], run, TINY.replace(steps=1, structures=structures, unlabelled_ok=("LN_ParaAortic",)))
    model = load_model(run)
    with torch.no_grad():
        model.network.decoder.seg_layers[-1].bias[structures.index("LN_CommonIliac")] = 0.5
        model.network.decoder.seg_layers[-1].bias[structures.index("CTVn")] = -20.0  # its own CTVn: nothing
    path = save_model(run / "lifted.pt", model.network, model.plan, model.arch, name="tiny-ctvn", version="0", config_sha256=model.config_sha256, meta=model.meta)
    own, chosen = tmp_path / "own", tmp_path / "chosen"
    predict(cohorts[1], own, model=path, all_cases=True)
    predict(cohorts[1], chosen, model=path, all_cases=True, nodal_groups=["LN_CommonIliac"])
    for case in sorted(p.name for p in chosen.iterdir() if p.is_dir()):
        assert not _mask(own / case / "structures" / "CTVn.nii.gz").any(), case
        ctvn = _mask(chosen / case / "structures" / "CTVn.nii.gz")
        assert ctvn.any(), case
        np.testing.assert_array_equal(ctvn, _mask(chosen / case / "structures" / "sub" / "LN_CommonIliac.nii.gz"))
