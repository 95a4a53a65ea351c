"""benchmarks/ctvn_errors.py: error voxels by anatomical zone, on grids drawn by hand."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ctvn_errors import zones  # noqa: E402


def _mask(shape, *voxels):
    m = np.zeros(shape, bool)
    for v in voxels:
        m[v] = True
    return m


def test_each_wrong_voxel_lands_in_one_zone_and_the_oracle_fixes_only_the_psoas_zone():
    shape = (7, 7, 1)
    psoas = _mask(shape, (0, 0, 0))  # its in-plane neighbourhood: x, y in 0..1
    vessel = _mask(shape, (3, 3, 0))
    other = _mask(shape, (6, 6, 0))  # neighbourhood x, y in 5..6
    ref = _mask(shape, (1, 1, 0), (3, 3, 0), (5, 5, 0), (3, 1, 0), (2, 3, 0))
    pred = _mask(shape, (2, 3, 0), (1, 0, 0), (3, 4, 0))
    out = zones(ref, pred, vessel, psoas, other)
    assert out["fn"] == {"iliopsoas": 1, "vessel": 1, "other_boundary": 1, "margin": 1}
    assert out["fp"] == {"iliopsoas": 1, "vessel": 0, "other_boundary": 0, "margin": 1}
    assert out["dice"] == pytest.approx(2 * 1 / (5 + 3))
    # right in the psoas zone: (1,1) found, (1,0) dropped → 2 of 5 reference voxels, 3 predicted
    assert out["dice_if_iliopsoas_zone_right"] == pytest.approx(2 * 2 / (5 + 3))


def test_next_to_the_psoas_means_in_the_same_slice():
    shape = (3, 3, 2)
    psoas = _mask(shape, (1, 1, 0))
    nothing = np.zeros(shape, bool)
    ref = _mask(shape, (1, 1, 1))  # directly above the muscle voxel, one slice away
    out = zones(ref, nothing, nothing, psoas, nothing)
    assert out["fn"]["iliopsoas"] == 0 and out["fn"]["margin"] == 1
