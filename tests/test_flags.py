""""Review closely" flags: the score, the per-structure thresholds and their choice, on hand-made maps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cervicontour.contours import flags
from cervicontour.contours.flags import (
    UNCERTAINTY_FLAG,
    choose_threshold,
    review_reasons,
    structure_record,
    uncertainty,
    worst_decile,
)

ROOT = Path(__file__).resolve().parents[1]


def _h(p: float) -> float:
    """Binary entropy in bits, by its formula."""
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def test_an_all_half_map_is_one_bit():
    assert uncertainty(np.full((4, 3, 2), 0.5, np.float32)) == pytest.approx(1.0)


def test_uncertainty_is_the_mean_entropy_of_the_voxels_above_0_05():
    p = np.zeros((2, 2, 2), np.float32)
    p[0, 0, 0], p[0, 0, 1], p[0, 1, 0] = 0.5, 0.11, 0.98  # 0.04 and 0 voxels do not count
    p[1, 1, 1] = 0.04
    assert uncertainty(p) == pytest.approx((1.0 + _h(0.11) + _h(0.98)) / 3, abs=1e-6)
    assert _h(0.11) == pytest.approx(0.4999, abs=1e-4)  # -0.11 log2 0.11 - 0.89 log2 0.89


def test_nothing_above_0_05_has_no_score():
    assert uncertainty(np.full((3, 3, 3), 0.05, np.float32)) is None


def test_an_absent_gtvn_is_not_flagged():
    record = structure_record(np.zeros((5, 5, 5), np.float32), 0, 0, 0.1, name="GTVn")
    assert record == {"volume_cc": 0.0, "uncertainty": 0.0, "review_closely": False, "reasons": [], "none_predicted": True}


def test_an_empty_gtvn_with_a_faint_uncertain_region_is_not_flagged():
    p = np.zeros((5, 5, 5), np.float32)
    p[2, 2, 2:4] = 0.3  # entropy 0.88 bits, but nothing at p >= 0.5: the model's answer is "none"
    record = structure_record(p, 0, 0, 0.1, name="GTVn")
    assert not record["review_closely"] and record["uncertainty"] == pytest.approx(_h(0.3), abs=1e-4)


def test_an_optional_structure_the_post_processing_removed_is_flagged():
    # the model put 12 voxels of GTVn at p >= 0.5 but none survived (outside its CTVn, or the rules)
    assert review_reasons("GTVn", 0.4, 0, 12, unreliable={}) == ["12 voxels at p >= 0.5, none kept (outside its target or removed by the rules)"]


def test_an_unreliable_structure_is_flagged_whenever_found_and_only_then():
    why = {"GTVn": "GTVn found, and this model's GTVn is unreliable"}
    assert review_reasons("GTVn", 0.02, 5, 5, unreliable=why) == [why["GTVn"]]  # however certain
    assert review_reasons("GTVn", 0.9, 0, 3, unreliable=why)[1:] == [why["GTVn"]]  # found, then removed
    assert review_reasons("GTVn", 0.9, 0, 0, unreliable=why) == []  # not found: "none predicted"
    assert review_reasons("Bladder", 0.02, 5, 5, unreliable=why, thresholds={}) == []


def test_a_required_structure_found_nowhere_is_flagged_with_uncertainty_1():
    record = structure_record(np.zeros((5, 5, 5), np.float32), 0, 0, 0.1, name="Bladder")
    assert record["review_closely"] and record["reasons"][0] == "nothing predicted"
    assert record["uncertainty"] == 1.0 and "none_predicted" not in record


def test_thresholds_per_structure_and_the_default_for_the_others():
    p = np.full((4, 4, 4), 0.98, np.float32)  # 0.1414 bits
    score = _h(0.98)
    table = {"Bladder": 0.10, "CTVn": 0.20}
    assert review_reasons("Bladder", score, 64, 64, thresholds=table) == [f"uncertainty {score:.2f} bits > 0.10 (Bladder's calibrated threshold)"]
    assert review_reasons("CTVn", score, 64, 64, thresholds=table) == []
    assert UNCERTAINTY_FLAG == 0.25  # the single threshold every structure had before calibration
    assert review_reasons("Cervix", _h(0.11), 64, 64, thresholds=table) == ["uncertainty 0.50 bits > 0.25 (the default threshold)"]
    assert review_reasons("Cervix", score, 64, 64, thresholds=table) == []
    assert structure_record(p, 64, 64, 0.5, name="Cervix")["volume_cc"] == 32.0


def test_rules_that_removed_more_than_a_tenth():
    assert review_reasons("Bladder", 0.0, 85, 100) == ["rules removed 15% of it"]
    assert review_reasons("Bladder", 0.0, 90, 100) == []  # exactly 10 %: not more than


def test_choose_threshold_by_hand():
    ten = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert choose_threshold(ten, rate=0.2) == pytest.approx(0.85)  # flags 0.9 and 1.0
    assert choose_threshold(ten[::-1], rate=0.1) == pytest.approx(0.95)  # order does not matter
    assert choose_threshold([0.1, 0.2, 0.3], rate=0.1) == 0.3  # 0.3 of a case: none, only beyond the highest
    # a tie at the boundary: flagging one of the two 0.9s would depend on the order, so neither is
    assert choose_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9], rate=0.1) == 0.9
    assert sum(s > choose_threshold(ten, rate=1.0) for s in ten) == 10
    with pytest.raises(ValueError):
        choose_threshold([], rate=0.1)


def test_worst_decile_by_hand():
    assert worst_decile([0.9, 0.5, 0.95, 0.8, 0.92, 0.93, 0.94, 0.96, 0.97, 0.98, 0.99]) == [1, 3]  # n = 11: 2
    assert worst_decile([0.7, 0.9, 0.8]) == [0]
    assert worst_decile([0.0, 1.0, 0.0, 0.0]) == [0, 2, 3]  # ties with the lowest count too
    assert worst_decile([]) == []


def test_shipped_thresholds_are_the_measured_ones():
    """The table in the code is the one benchmarks/flag_calibration.py measured (its JSON), and it
    says what it was measured on."""
    measured = json.loads((ROOT / "benchmarks" / "results" / "flag_calibration.json").read_text())
    assert flags.THRESHOLDS == pytest.approx(measured["thresholds_bits"])
    assert flags.UNRELIABLE == measured["unreliable"]
    assert not set(flags.THRESHOLDS) & set(flags.UNRELIABLE)
    assert flags.CALIBRATION["seed"] == measured["data"]["seed"] and flags.CALIBRATION["patients"] == measured["data"]["patients"]
    assert flags.CALIBRATION["model"] == measured["model"]
    assert all(0 < t < 1 for t in flags.THRESHOLDS.values())


# --------------------------------------------------------------------------- through predict_case
torch = pytest.importorskip("torch")


class _Net(torch.nn.Module):
    """Bladder sure on the 300 HU block, both nodal groups on the 500 HU block; GTVn sure there is none."""

    def forward(self, x):
        bladder = ((x - 3).abs() < 0.5).float() * 40 - 20
        nodes = ((x - 5).abs() < 0.5).float() * 40 - 20
        return torch.cat([bladder, nodes, nodes, torch.full_like(x, -20.0)], dim=1)


def test_predict_case_does_not_flag_an_absent_gtvn():
    from cervicontour.networks.bundle import Model
    from cervicontour.inference.case import predict_case
    from cervicontour.preprocess import Normalization, Plan
    from cervicontour.volume import Volume

    plan = Plan(("Bladder", "LN_CommonIliac", "LN_Pelvic", "GTVn"), (2.0, 2.0, 3.0), (16, 16, 8), Normalization(-1000.0, 1000.0, 0.0, 100.0))
    hu = np.full((24, 20, 12), -1000, np.int16)
    hu[2:22, 2:18, 1:11] = 0
    hu[8:16, 6:12, 3:8] = 300
    hu[16:20, 6:12, 3:8] = 500
    result = predict_case(Volume(hu, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0)), Model(_Net(), plan, {}, "toy", "test", "-"))
    gtvn, bladder = result.structures["GTVn"], result.structures["Bladder"]
    assert result.masks["GTVn"].array.sum() == 0
    assert gtvn["review_closely"] is False and gtvn["reasons"] == [] and gtvn["none_predicted"] is True
    assert gtvn["uncertainty"] == 0.0  # no probability above 0.05: sure there is none
    assert result.masks["Bladder"].array.sum() == 8 * 6 * 5 and bladder["uncertainty"] < 0.01
    assert result.masks["CTVn"].array.sum() == 4 * 6 * 5
