"""`rules.enforce` on predicted probabilities: contested voxels, stray components, what it reports."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.rules import Severity, check, enforce, load_rules
from cervicontour.volume import Volume

SPACING = (3.0, 3.0, 3.0)  # 0.027 cc per voxel
SHAPE = (30, 30, 20)


def _prob(*boxes, shape=SHAPE) -> np.ndarray:
    """float32 probabilities: each ``(lo, hi, p)`` box set to p (later boxes win)."""
    out = np.zeros(shape, np.float32)
    for lo, hi, p in boxes:
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = p
    return out


def _vols(**arrays):
    return {name: Volume(a, SPACING) for name, a in arrays.items()}


def test_contested_voxels_go_to_the_higher_probability():
    ctvp = _prob(((5, 5, 5), (15, 15, 10), 0.9))
    # CTVn overlaps CTVp on i = 10..14 (5 × 10 × 5 = 250 voxels); it is more probable on i = 13..14.
    ctvn = _prob(((10, 5, 5), (25, 15, 10), 0.7), ((13, 5, 5), (15, 15, 10), 0.95))
    before = (ctvp.copy(), ctvn.copy())
    out = enforce(_vols(CTVp=ctvp, CTVn=ctvn))
    assert np.array_equal(ctvp, before[0]) and np.array_equal(ctvn, before[1])  # inputs untouched
    p, n = out.masks["CTVp"].array, out.masks["CTVn"].array
    assert out.masks["CTVp"].dtype == np.uint8
    assert not np.any(p & n)
    assert np.all(p[10:13, 5:15, 5:10] == 1) and np.all(n[10:13, 5:15, 5:10] == 0)  # 3 × 10 × 5 = 150 to CTVp
    assert np.all(n[13:15, 5:15, 5:10] == 1) and np.all(p[13:15, 5:15, 5:10] == 0)  # 2 × 10 × 5 = 100 to CTVn
    changes = {(c.rule, c.structure, c.other): c for c in out.changes}
    assert set(changes) == {("overlap", "CTVn", "CTVp"), ("overlap", "CTVp", "CTVn")}
    assert changes[("overlap", "CTVn", "CTVp")].voxels == 150
    assert changes[("overlap", "CTVp", "CTVn")].voxels == 100
    assert changes[("overlap", "CTVp", "CTVn")].volume_cc == pytest.approx(100 * 0.027)
    assert [f for f in check(out.masks) if f.check == "rules.overlap"] == []


def test_ties_go_to_the_structure_first_in_the_vocabulary():
    a = _prob(((5, 5, 5), (10, 10, 10), 0.8))
    out = enforce(_vols(CTVp=a, CTVn=a.copy()))  # vocabulary order: ... CTVn, CTVp ...
    assert out.masks["CTVn"].array.sum() == 125 and out.masks["CTVp"].array.sum() == 0
    assert [(c.structure, c.voxels, c.other) for c in out.changes] == [("CTVp", 125, "CTVn")]


def test_allowed_overlaps_are_kept_and_resolve_setting_is_honoured():
    bladder = _prob(((5, 5, 5), (15, 15, 10), 0.9))
    ctvn = _prob(((10, 5, 5), (20, 15, 10), 0.8))  # Bladder may overlap CTVn
    param = _prob(((0, 0, 0), (30, 30, 20), 0.6))  # Parametrium may overlap anything
    ctvp = _prob(((12, 5, 5), (25, 15, 10), 0.7))  # Bladder/CTVp: warning-level; CTVn/CTVp: error
    out = enforce(_vols(Bladder=bladder, CTVn=ctvn, Parametrium=param, CTVp=ctvp))
    m = {k: v.array.astype(bool) for k, v in out.masks.items()}
    assert m["Parametrium"].all()
    assert np.array_equal(m["Bladder"], bladder >= 0.5)
    assert (m["Bladder"] & m["CTVn"]).sum() == 5 * 10 * 5
    assert not (m["CTVn"] & m["CTVp"]).any() and not (m["Bladder"] & m["CTVp"]).any()
    # CTVp kept only where neither the Bladder nor CTVn was: i = 20..24
    assert m["CTVp"].sum() == 5 * 10 * 5
    # Only errors resolved: Bladder and CTVp (a warning-level overlap) keep sharing i = 12..14.
    rules = load_rules()
    errors_only = replace(rules, enforce=replace(rules.enforce, resolve=(Severity.ERROR,)))
    out = enforce(_vols(Bladder=bladder, CTVp=ctvp), rules=errors_only)
    m = {k: v.array.astype(bool) for k, v in out.masks.items()}
    assert (m["Bladder"] & m["CTVp"]).sum() == 3 * 10 * 5
    assert not out.changed


def test_three_way_contest_keeps_allowed_partner():
    one = ((5, 5, 5), (6, 6, 6))
    out = enforce(
        _vols(
            CTVn=_prob((*one, 0.8)), CTVp=_prob((*one, 0.9)), Parametrium=_prob((*one, 0.95))
        )
    )
    assert out.masks["Parametrium"].array[5, 5, 5] == 1
    assert out.masks["CTVp"].array[5, 5, 5] == 1
    assert out.masks["CTVn"].array[5, 5, 5] == 0
    assert [(c.structure, c.other) for c in out.changes] == [("CTVn", "CTVp")]


def test_stray_components_are_removed_and_counts_limited():
    # Bladder: main box 5×5×5 (3.375 cc), a second box 3×3×3 (0.729 cc) and a speck (0.027 cc).
    bladder = _prob(((2, 2, 2), (7, 7, 7), 0.9), ((20, 20, 2), (23, 23, 5), 0.9), ((12, 25, 15), (13, 26, 16), 0.9))
    # CTVn: three boxes of 27 voxels (0.729 cc) and one of 64 (1.728 cc): max 2 components kept.
    ctvn = _prob(((2, 20, 10), (6, 24, 14), 0.9), ((10, 10, 10), (13, 13, 13), 0.9), ((20, 5, 12), (23, 8, 15), 0.9), ((26, 26, 15), (29, 29, 18), 0.9))
    out = enforce(_vols(Bladder=bladder, CTVn=ctvn))
    assert out.masks["Bladder"].array.sum() == 125  # max 1 component: the 27-voxel box goes too
    assert out.masks["CTVn"].array.sum() == 64 + 27
    changes = {c.structure: c for c in out.changes}
    assert changes["Bladder"].rule == "components" and changes["Bladder"].voxels == 28
    assert changes["CTVn"].voxels == 54
    # Without the count limit only the speck (< 0.5 cc) goes.
    rules = load_rules()
    unlimited = replace(rules, enforce=replace(rules.enforce, limit_components=False))
    out = enforce(_vols(Bladder=bladder), rules=unlimited)
    assert out.masks["Bladder"].array.sum() == 125 + 27
    assert [c.voxels for c in out.changes] == [1]


def test_the_largest_component_always_stays():
    tiny = _prob(((5, 5, 5), (6, 6, 6), 0.9))  # one voxel, far below min_component_cc
    out = enforce(_vols(Bladder=tiny))
    assert out.masks["Bladder"].array.sum() == 1 and not out.changed


def test_threshold_and_empty_predictions():
    low = _prob(((5, 5, 5), (10, 10, 10), 0.49))
    out = enforce(_vols(Bladder=low, CTVn=_prob(((5, 5, 5), (10, 10, 10), 0.5))))
    assert out.masks["Bladder"].array.sum() == 0
    assert out.masks["CTVn"].array.sum() == 125
    assert enforce({}).masks == {}


def test_probability_maps_must_share_a_grid():
    a = Volume(np.zeros(SHAPE, np.float32), SPACING)
    b = Volume(np.zeros(SHAPE, np.float32), SPACING, (1.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the grid"):
        enforce({"CTVn": a, "CTVp": b})
