"""Classification, overlap and volume metrics against counts derived by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cervicontour.metrics import ConfusionCounts, bounding_box, confusion_counts, crop_pair, dice, jaccard


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def test_two_overlapping_boxes():
    # ref 4×4×4 = 64 voxels, pred the same box moved 1 voxel along x: overlap 3×4×4 = 48.
    spacing = (0.98, 0.98, 2.5)
    ref = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    pred = box((10, 10, 10), (3, 2, 2), (7, 6, 6))
    c = confusion_counts(ref, pred, spacing)
    assert (c.tp, c.fp, c.fn, c.tn) == (48, 16, 16, 1000 - 80)
    assert c.dice() == 96 / 128
    assert c.jaccard() == 48 / 80
    assert c.precision() == c.recall() == c.sensitivity() == 48 / 64
    assert c.specificity() == 920 / 936
    assert c.accuracy() == (48 + 920) / 1000
    assert c.f_beta(1.0) == pytest.approx(c.dice(), rel=1e-15)
    assert c.f_beta(2.0) == pytest.approx(5 * 48 / (5 * 48 + 4 * 16 + 16), rel=1e-15)
    voxel_cc = 0.98 * 0.98 * 2.5 / 1000
    assert c.volume_reference_cc() == pytest.approx(64 * voxel_cc, rel=1e-12)
    assert c.volume_prediction_cc() == pytest.approx(64 * voxel_cc, rel=1e-12)
    assert c.volume_difference_cc() == 0.0
    assert c.relative_volume_difference() == 0.0
    assert c.volume_similarity() == 1.0
    assert c.false_negative_volume_cc() == pytest.approx(16 * voxel_cc, rel=1e-12)
    assert c.false_positive_volume_cc() == pytest.approx(16 * voxel_cc, rel=1e-12)
    assert dice(ref, pred) == 0.75 and jaccard(ref, pred) == 0.6


def test_signed_volume_difference():
    ref = box((10, 10, 10), (0, 0, 0), (10, 10, 2))  # 200 voxels
    pred = box((10, 10, 10), (0, 0, 0), (10, 10, 1))  # 100 voxels, inside ref
    c = confusion_counts(ref, pred, (1.0, 1.0, 2.0))
    assert c.volume_difference_cc() == pytest.approx(-100 * 2.0 / 1000, rel=1e-12)
    assert c.relative_volume_difference() == -0.5
    assert c.volume_similarity() == 1 - 100 / 300
    assert c.precision() == 1.0 and c.recall() == 0.5


def test_identical_masks():
    m = box((5, 6, 7), (1, 1, 1), (4, 5, 6))
    c = confusion_counts(m, m, (1.0, 1.0, 1.0))
    assert (c.dice(), c.jaccard(), c.precision(), c.recall(), c.specificity(), c.accuracy()) == (1, 1, 1, 1, 1, 1)
    assert c.volume_similarity() == 1.0 and c.relative_volume_difference() == 0.0


def test_empty_mask_policy():
    empty = np.zeros((4, 4, 4), bool)
    mask = box((4, 4, 4), (0, 0, 0), (2, 2, 2))  # 8 voxels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = confusion_counts(empty, empty, (1.0, 1.0, 1.0))
        no_pred = confusion_counts(mask, empty, (1.0, 1.0, 1.0))
        no_ref = confusion_counts(empty, mask, (1.0, 1.0, 1.0))
        for value in (both.dice(), both.jaccard(), both.precision(), both.recall(), both.f_beta(2.0),
                      both.relative_volume_difference(), both.volume_similarity()):  # fmt: skip
            assert math.isnan(value)
        assert both.accuracy() == both.specificity() == 1.0
        assert both.volume_reference_cc() == both.volume_difference_cc() == 0.0
        assert no_pred.dice() == no_pred.jaccard() == no_pred.recall() == no_pred.f_beta() == 0.0
        assert math.isnan(no_pred.precision())
        assert no_pred.relative_volume_difference() == -1.0 and no_pred.volume_similarity() == 0.0
        assert no_ref.dice() == no_ref.jaccard() == no_ref.precision() == 0.0
        assert math.isnan(no_ref.recall())
        assert no_ref.relative_volume_difference() == math.inf and no_ref.volume_similarity() == 0.0


def test_mask_filling_the_field_of_view_has_undefined_specificity():
    full = np.ones((3, 3, 3), bool)
    c = confusion_counts(full, full, (1.0, 1.0, 1.0))
    assert c.tn == 0 and math.isnan(c.specificity()) and c.accuracy() == 1.0


def test_counts_are_taken_over_the_full_field_of_view():
    ref = box((20, 20, 20), (18, 18, 18), (20, 20, 20))  # touches the far corner
    pred = box((20, 20, 20), (0, 0, 0), (1, 1, 1))
    c = confusion_counts(ref, pred, (1.0, 1.0, 1.0))
    assert c == ConfusionCounts(0, 1, 8, 8000 - 9, 0.001)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int16, np.float32])
def test_bounding_box_any_layout_and_dtype(order, dtype):
    m = np.zeros((9, 16, 7), dtype=dtype, order=order)
    m[2, 3, 6] = 1
    m[5, 15, 0] = 2
    assert bounding_box(m) == ((2, 5), (3, 15), (0, 6))
    assert bounding_box(m[::-1]) == ((3, 6), (3, 15), (0, 6))
    assert bounding_box(m.transpose(2, 0, 1)) == ((0, 6), (2, 5), (3, 15))
    assert bounding_box(np.zeros_like(m)) is None


def test_crop_pair_pads_with_background_and_keeps_inputs():
    ref = box((6, 6, 6), (0, 0, 0), (2, 6, 6)).astype(np.uint8)
    pred = box((6, 6, 6), (1, 1, 1), (3, 3, 3)).astype(np.uint8)
    before = ref.copy()
    pair = crop_pair(ref, pred, (1.0, 2.0, 3.0))
    assert pair.reference.shape == (5, 8, 8) and pair.offset == (-1, -1, -1)
    assert pair.reference.dtype == bool and not pair.reference[0].any()
    assert int(pair.reference.sum()) == int(ref.sum()) and int(pair.prediction.sum()) == int(pred.sum())
    np.testing.assert_array_equal(ref, before)
