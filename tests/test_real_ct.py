"""A real CT (TotalSegmentator's example) read by `read_nifti`, checked against nibabel."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cervicontour.io import read_nifti

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
EXAMPLE_CT = REAL / "totalsegmentator" / "example_ct.nii.gz"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

pytestmark = pytest.mark.skipif(
    not EXAMPLE_CT.is_file(), reason=f"real data not present at {EXAMPLE_CT}"
)


def test_example_ct_geometry_matches_nibabel():
    nib = pytest.importorskip("nibabel")
    before = hashlib.sha256(EXAMPLE_CT.read_bytes()).hexdigest()

    ct = read_nifti(EXAMPLE_CT)
    reference = nib.load(EXAMPLE_CT)

    assert ct.shape == (122, 101, 112) == reference.shape
    assert ct.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert ct.orientation == "RAS" == "".join(nib.aff2axcodes(reference.affine))
    np.testing.assert_allclose(np.diag(ct.direction), [-1.0, -1.0, 1.0])
    np.testing.assert_allclose(LPS_TO_RAS @ ct.affine_lps, reference.affine, atol=1e-4)
    # nibabel's origin is RAS: negate x and y to get the LPS origin.
    np.testing.assert_allclose(ct.origin_mm, reference.affine[:3, 3] * [-1, -1, 1], atol=1e-4)
    assert np.array_equal(ct.array, np.asanyarray(reference.dataobj))
    assert hashlib.sha256(EXAMPLE_CT.read_bytes()).hexdigest() == before
