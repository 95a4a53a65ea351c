"""A model that predicts the nodal groups: CTVn is composed at predict time from the groups the
clinician chose (para-aortic nodes are a per-patient decision the CT does not show).

The 'network' is hand-made: each output channel fires on one intensity band, so the right masks
are known by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cervicontour.preprocess import Normalization, Plan
from cervicontour.volume import Volume

torch = pytest.importorskip("torch")

GROUPS = ("LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic", "CTVp")
BAND_HU = {"LN_Pelvic": 200, "LN_CommonIliac": 400, "LN_ParaAortic": 600, "CTVp": 800}


class BandNet(torch.nn.Module):
    """Channel c: logit +20 where the normalised input (HU / 100) is within 0.5 of its band, else -20."""

    def forward(self, x):
        return torch.cat([((x - BAND_HU[n] / 100).abs() < 0.5).float() * 40 - 20 for n in GROUPS], dim=1)


def _model():
    from cervicontour.networks.bundle import Model

    plan = Plan(GROUPS, (2.0, 2.0, 3.0), (16, 16, 8), Normalization(-1000.0, 1000.0, 0.0, 100.0))
    return Model(BandNet(), plan, {}, "bands", "test", "-")


def _image():
    hu = np.full((32, 20, 12), -1000, np.int16)
    hu[2:30, 2:18, 1:11] = 0
    hu[6:12, 6:12, 3:8] = BAND_HU["LN_Pelvic"]  # three touching blocks along i: one connected CTVn
    hu[12:16, 6:12, 3:8] = BAND_HU["LN_CommonIliac"]
    hu[16:24, 6:12, 3:8] = BAND_HU["LN_ParaAortic"]
    hu[25:28, 6:9, 3:6] = BAND_HU["CTVp"]
    return Volume(hu, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))


def _box(i0, i1):
    m = np.zeros((32, 20, 12), np.uint8)
    m[i0:i1, 6:12, 3:8] = 1
    return m


def test_default_groups_stop_at_the_common_iliac_nodes():
    from cervicontour.inference.case import predict_case

    result = predict_case(_image(), _model())
    np.testing.assert_array_equal(result.masks["CTVn"].array, _box(6, 16))
    assert result.composed == {"CTVn": ["LN_CommonIliac", "LN_Pelvic"]}  # GTVn is not predicted by this model
    # the para-aortic group is still drafted (for the reviewer to add), outside CTVn
    np.testing.assert_array_equal(result.masks["LN_ParaAortic"].array, _box(16, 24))
    assert result.masks["CTVn"].array.sum() * 2 * 2 * 3 / 1000 == pytest.approx(result.structures["CTVn"]["volume_cc"])


def test_para_aortic_extension_adds_its_group():
    from cervicontour.inference.case import predict_case

    result = predict_case(_image(), _model(), nodal_groups=["LN_Pelvic", "LN_CommonIliac", "LN_ParaAortic"])
    np.testing.assert_array_equal(result.masks["CTVn"].array, _box(6, 24))
    np.testing.assert_array_equal(result.masks["LN_Pelvic"].array, _box(6, 12))
    np.testing.assert_array_equal(result.masks["CTVp"].array[25:28, 6:9, 3:6], 1)


def test_unknown_or_unpredicted_groups_are_refused():
    from cervicontour.errors import InputError
    from cervicontour.inference.case import predict_case

    with pytest.raises(InputError, match="does not predict the nodal group GTVn"):
        predict_case(_image(), _model(), nodal_groups=["GTVn"])
    # a model without LN_ParaAortic cannot honour --para-aortic: an error naming it, not a narrower CTVn
    class NoParaAortic(torch.nn.Module):
        def forward(self, x):
            return BandNet()(x)[:, [GROUPS.index(n) for n in ("LN_Pelvic", "LN_CommonIliac", "CTVp")]]

    from cervicontour.networks.bundle import Model

    plan = Plan(("LN_Pelvic", "LN_CommonIliac", "CTVp"), (2.0, 2.0, 3.0), (16, 16, 8), Normalization(-1000.0, 1000.0, 0.0, 100.0))
    narrow = Model(NoParaAortic(), plan, {}, "bands", "test", "-")
    with pytest.raises(InputError, match="does not predict the nodal group LN_ParaAortic"):
        predict_case(_image(), narrow, nodal_groups=["LN_Pelvic", "LN_CommonIliac", "LN_ParaAortic"])
    # no GTVn channel: a chosen GTVn means "no pathological node", not an error
    result = predict_case(_image(), _model(), nodal_groups=["LN_Pelvic", "GTVn"])
    np.testing.assert_array_equal(result.masks["CTVn"].array, _box(6, 12))
    with pytest.raises(InputError, match="not a part of CTVn"):
        predict_case(_image(), _model(), nodal_groups=["Bladder"])


def test_reference_groups_follow_each_cases_contours(tmp_path):
    """predict(..., nodal_groups='reference') on a labelled cohort: a patient whose reference has
    LN_ParaAortic gets it in CTVn, one without does not; the choice is recorded."""
    from cervicontour.cohort import write_case
    from cervicontour.inference.cohort import predict

    image = _image()
    ref = image.with_array(_box(6, 12))
    write_case(tmp_path / "c", "PA", image, {"LN_Pelvic": ref, "LN_CommonIliac": ref, "LN_ParaAortic": ref})
    write_case(tmp_path / "c", "NOPA", image, {"LN_Pelvic": ref, "LN_CommonIliac": ref})
    from unittest import mock

    records = {}
    # BandNet cannot be saved as a model file: hand predict() the in-memory model
    with mock.patch("cervicontour.networks.bundle.load_model", return_value=_model()):
        for path_json in predict(tmp_path / "c", tmp_path / "out", model="bands", all_cases=True, nodal_groups="reference"):
            record = json.loads(path_json.read_text())
            records[record["patient_id"]] = record["composed"]["CTVn"]
    assert records == {"PA": ["LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"], "NOPA": ["LN_CommonIliac", "LN_Pelvic"]}
    from cervicontour.io import read_nifti

    assert read_nifti(tmp_path / "out" / "PA" / "structures" / "CTVn.nii.gz").array.sum() == _box(6, 24).sum()
    assert read_nifti(tmp_path / "out" / "NOPA" / "structures" / "CTVn.nii.gz").array.sum() == _box(6, 16).sum()


class GrowNet(torch.nn.Module):
    """A hand-made second stage: the refined CTVn is the coarse one grown by one voxel along i."""

    def forward(self, x):
        grown = torch.nn.functional.max_pool3d(x[:, 1:2], (3, 1, 1), stride=1, padding=(1, 0, 0))
        return (grown > 0.5).float() * 40 - 20


@pytest.mark.parametrize("refined", [False, True], ids=["coarse", "refined"])
def test_the_parts_union_is_the_composed_target(refined):
    """`cervicontour compose` re-makes CTVn from the part masks: their union must be the CTVn that
    predict wrote, also where a refiner grew CTVn beyond every part's 0.5 level."""
    from cervicontour.networks.refine import Refiner
    from cervicontour.inference.case import predict_case

    model = _model()
    if refined:
        model.refiner = Refiner("CTVn", ("CTVp",), GrowNet(), {}, (2.0, 2.0, 3.0), (2.0, 2.0, 3.0), (16, 16, 8))
    result = predict_case(_image(), model)
    ctvn = result.masks["CTVn"].array
    np.testing.assert_array_equal(ctvn, _box(5, 17) if refined else _box(6, 16))
    union = result.masks["LN_Pelvic"].array | result.masks["LN_CommonIliac"].array
    np.testing.assert_array_equal(union, ctvn)


# ----------------------------------------------------------------------------- the choice, logged
def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _predict_logged(tmp_path, out, **options):
    """predict() of the band image with the in-memory BandNet model; the case's compose_log.jsonl."""
    from unittest import mock

    from cervicontour.io import write_nifti
    from cervicontour.inference.cohort import predict

    ct = tmp_path / "P1.nii.gz"
    if not ct.exists():
        write_nifti(_image(), ct)
    with mock.patch("cervicontour.networks.bundle.load_model", return_value=_model()):
        [record] = predict(ct, out, model="bands", **options)
    return [json.loads(line) for line in (record.parent / "compose_log.jsonl").read_text().splitlines()]


def test_predict_logs_the_chosen_groups_with_the_hashes_of_the_masks_it_wrote(tmp_path):
    import datetime as dt

    from cervicontour.io import read_nifti

    start = dt.datetime.now(dt.timezone.utc)
    [record] = _predict_logged(tmp_path, tmp_path / "out", nodal_groups=["pelvicLN", "LN_PA"], who="dr.pa")
    case = tmp_path / "out" / "P1"
    sub = case / "structures" / "sub"
    assert (record["action"], record["who"], record["target"], record["chosen_by"]) == ("predict", "dr.pa", "CTVn", "option")
    assert record["requested"] == record["used"] == ["LN_Pelvic", "LN_ParaAortic"]
    assert start <= dt.datetime.fromisoformat(record["when"]) <= dt.datetime.now(dt.timezone.utc)
    # the hashes are those of the files on disk, recomputed with hashlib
    assert record["parts_sha256"] == {n: _sha(sub / f"{n}.nii.gz") for n in ("LN_Pelvic", "LN_ParaAortic")}
    assert record["path"] == "structures/CTVn.nii.gz" and record["sha256"] == _sha(case / "structures" / "CTVn.nii.gz")
    # and the CTVn written is the union of the two chosen groups: the bands at i 6..12 and 16..24
    ctvn = read_nifti(case / "structures" / "CTVn.nii.gz").array
    np.testing.assert_array_equal(ctvn, _box(6, 12) | _box(16, 24))
    np.testing.assert_array_equal(ctvn, read_nifti(sub / "LN_Pelvic.nii.gz").array | read_nifti(sub / "LN_ParaAortic.nii.gz").array)


def test_the_default_choice_is_logged_too_and_says_what_the_model_does_not_predict(tmp_path):
    [record] = _predict_logged(tmp_path, tmp_path / "out")
    assert record["chosen_by"] == "default" and record["who"] is None
    assert record["requested"] == ["GTVn", "LN_CommonIliac", "LN_Pelvic"]  # structures.DEFAULT_NODAL_GROUPS
    assert record["used"] == ["LN_CommonIliac", "LN_Pelvic"]  # BandNet has no GTVn channel
    assert "not predicted by the model: GTVn" in record["note"]


def test_predict_again_replaces_its_own_log_but_never_a_clinicians(tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.contours.compose import compose_case

    out = tmp_path / "out"
    _predict_logged(tmp_path, out, nodal_groups=["LN_Pelvic"], who="a")
    [again] = _predict_logged(tmp_path, out, nodal_groups=["LN_Pelvic", "LN_CommonIliac"], who="b")  # the folder is predict's own
    assert (again["who"], again["used"]) == ("b", ["LN_Pelvic", "LN_CommonIliac"])
    compose_case(out / "P1", {"CTVn": "LN_Pelvic"}, who="dr.c")  # a clinician's choice now in the log
    with pytest.raises(InputError, match="compose_log.jsonl"):
        _predict_logged(tmp_path, out, who="d")
    assert [r["action"] for r in map(json.loads, (out / "P1" / "compose_log.jsonl").read_text().splitlines())] == ["predict", "compose"]


def test_the_cli_logs_who_chose_the_para_aortic_extension(tmp_path, monkeypatch):
    from unittest import mock

    from typer.testing import CliRunner

    from cervicontour.cli import app
    from cervicontour.io import write_nifti

    write_nifti(_image(), tmp_path / "P1.nii.gz")
    monkeypatch.setattr("getpass.getuser", lambda: "dr.login")
    with mock.patch("cervicontour.networks.bundle.load_model", return_value=_model()):
        for out, who in ((tmp_path / "a", []), (tmp_path / "b", ["--who", "dr.given"])):
            result = CliRunner().invoke(app, ["predict", str(tmp_path / "P1.nii.gz"), "--out", str(out), "--para-aortic", *who])
            assert result.exit_code == 0, result.output
    log = {name: json.loads((tmp_path / name / "P1" / "compose_log.jsonl").read_text()) for name in ("a", "b")}
    assert (log["a"]["who"], log["b"]["who"]) == ("dr.login", "dr.given")
    assert log["a"]["requested"] == ["GTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"] and log["a"]["chosen_by"] == "option"
    assert log["a"]["used"] == ["LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"]


def test_a_model_that_predicts_ctvn_itself_still_drafts_the_para_aortic_group_above_it():
    """A model with a CTVn channel *and* the nodal groups: its CTVn is split among the groups a CTVn
    is made of by default (every voxel to one of them, their union the CTVn); the para-aortic group
    is the per-patient extension, drafted on its own threshold above it, not cut to nothing."""
    from cervicontour.networks.bundle import Model
    from cervicontour.inference.case import predict_case

    class WithCTVn(torch.nn.Module):  # CTVn on the pelvic and common iliac bands; the groups as BandNet
        def forward(self, x):
            bands = BandNet()(x)
            return torch.cat([torch.maximum(bands[:, :1], bands[:, 1:2]), bands[:, :3]], dim=1)

    plan = Plan(("CTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"), (2.0, 2.0, 3.0), (16, 16, 8), Normalization(-1000.0, 1000.0, 0.0, 100.0))
    result = predict_case(_image(), Model(WithCTVn(), plan, {}, "ctvn", "test", "-"))
    np.testing.assert_array_equal(result.masks["CTVn"].array, _box(6, 16))
    assert result.partitions == {"CTVn": ["LN_CommonIliac", "LN_Pelvic"]}
    np.testing.assert_array_equal(result.masks["LN_Pelvic"].array, _box(6, 12))
    np.testing.assert_array_equal(result.masks["LN_CommonIliac"].array, _box(12, 16))
    np.testing.assert_array_equal(result.masks["LN_ParaAortic"].array, _box(16, 24))
