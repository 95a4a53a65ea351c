"""Planning: target spacing rule, patch size, CT normalisation, plan.json round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.preprocess import Normalization, load_plan, make_plan, patch_size_for, save_plan, target_spacing
from cervicontour.structures import PRIMARY


def test_median_spacing_and_the_anisotropic_rule():
    # medians (1.0, 1.0, 5.0): 5.0 > 3 × 1.0, so z takes its 10th percentile: 2 + 0.2*(5-2) = 2.6
    spacings = np.array([[1.0, 1.0, 5.0], [0.8, 0.8, 5.0], [1.2, 1.2, 2.0]])
    assert target_spacing(spacings) == (1.0, 1.0, 2.6)
    assert target_spacing(np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]])) == (1.0, 1.0, 2.0)


def test_patch_size_fits_the_budget_and_the_stride():
    patch = patch_size_for((120, 100, 50), divisor=(16, 16, 8), budget_voxels=64 * 64 * 32)
    assert np.prod(patch) <= 64 * 64 * 32
    assert all(p % d == 0 for p, d in zip(patch, (16, 16, 8)))
    # an image smaller than the budget is covered whole, rounded up to the divisor
    assert patch_size_for((20, 30, 9), divisor=(16, 16, 8), budget_voxels=10**9, minimum=(16, 16, 8)) == (32, 32, 16)


def test_normalization_clips_then_z_scores_without_touching_the_input():
    hu = np.array([-2000, -100, 0, 100, 3000], np.int16)
    norm = Normalization(-100.0, 100.0, 0.0, 50.0)
    np.testing.assert_allclose(norm.apply(hu), [-2, -2, 0, 2, 2])
    assert hu[0] == -2000


def test_plan_from_a_cohort_round_trips_through_plan_json(small_cohort, tmp_path):
    from cervicontour.cohort import load_cohort

    cases = load_cohort(small_cohort).labelled()[:3]
    plan = make_plan(cases, PRIMARY, budget_voxels=64 * 64 * 32)
    lps = np.asarray(plan.fingerprint["lps_spacings_mm"])
    np.testing.assert_allclose(plan.spacing_mm, np.median(lps, axis=0), atol=1e-4)
    hu = plan.fingerprint["foreground_hu"]
    assert hu["p00_5"] < hu["mean"] < hu["p99_5"]
    assert plan.normalization.lower_hu == hu["p00_5"]
    path = save_plan(plan, tmp_path / "plan.json")
    again = load_plan(path)
    assert again == plan and again.sha256() == plan.sha256()
    fixed = make_plan(cases, PRIMARY, spacing_mm=(5.0, 5.0, 6.0))
    assert fixed.spacing_mm == (5.0, 5.0, 6.0) and fixed.spacing_rule == "fixed"


def test_unreadable_plan_says_what_to_do(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{")
    with pytest.raises(InputError, match="cervicontour train"):
        load_plan(bad)
