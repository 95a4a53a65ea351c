"""Cross-checks against independent libraries installed as test dependencies.

* ``voxel6`` against MONAI (HD, HD95, ASSD, MASD, NSD) and medpy (HD, pooled HD95, pooled ASSD).
  MONAI returns float32 distances, hence the 1e-6 relative tolerance; its ``torch.quantile``
  also places the percentile in float32, which alone moves HD95 by up to ~1e-5 relative, so
  HD95 is checked to 1e-6 against MONAI's own edge distances with the percentile taken in
  float64, and to 1e-5 against ``compute_hausdorff_distance`` itself;
* ``surfel`` against DeepMind's ``surface-distance`` (distances, areas, HD, HD95, ASSD, MASD, NSD).
  Its PyPI build fails on empty masks under NumPy 2 (``np.Inf``), so it only sees non-empty ones.

Inputs: seeded random shapes (several touching the field-of-view edge) and the real WORD label
maps in ``../shared/data/real/word/labels/`` (bladder and rectum against shifted and eroded
copies), skipped with a reason when that folder is absent. The reference libraries get the
masks cropped (with margin) to keep them fast; ours always gets the full arrays.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cervicontour.metrics import bounding_box, surface_distances
from cervicontour.metrics.boundary import surfel_area_table

# MONAI warns about its own deprecated arguments; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
WORD_LABELS = REAL / "word" / "labels"
TOLERANCES_MM = (1.0, 2.0, 3.3)
RTOL = 1e-6


def require(module: str):
    return pytest.importorskip(module, reason=f"{module} is a test dependency: pip install -e '.[dev]'")


def random_pair(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(18, 30, size=3))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, size=3))
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    ref = field > 0.4 * field.std()
    other = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    pred = (field + 0.6 * other) > 0.5 * field.std()
    if not ref.any() or not pred.any():
        raise AssertionError("random pair must be non-empty; change the threshold")
    return ref, pred, spacing  # type: ignore[return-value]


def crop_for_reference_libraries(ref, pred, margin=3):
    boxes = [bounding_box(ref), bounding_box(pred)]
    region = tuple(
        slice(max(min(b[a][0] for b in boxes) - margin, 0), min(max(b[a][1] for b in boxes) + margin + 1, n))
        for a, n in enumerate(ref.shape)
    )
    return np.ascontiguousarray(ref[region]), np.ascontiguousarray(pred[region])


def check_voxel6_against_monai(ref, pred, spacing):
    require("monai")
    torch = require("torch")
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )
    from monai.metrics.utils import get_edge_surface_distance

    ours = surface_distances(ref, pred, spacing)
    r, p = crop_for_reference_libraries(ref, pred)
    y = torch.from_numpy(r.astype(np.float32))[None, None]
    y_pred = torch.from_numpy(p.astype(np.float32))[None, None]
    kw = {"include_background": True, "spacing": list(spacing)}
    assert ours.hausdorff_mm() == pytest.approx(compute_hausdorff_distance(y_pred, y, **kw).item(), rel=RTOL)
    _, edge_distances, _ = get_edge_surface_distance(
        torch.from_numpy(p), torch.from_numpy(r), spacing=list(spacing), symmetric=True
    )
    hd95_float64 = max(float(np.percentile(d.numpy().astype(np.float64), 95)) for d in edge_distances)
    assert ours.hd95_mm() == pytest.approx(hd95_float64, rel=RTOL)
    assert ours.hd95_mm() == pytest.approx(compute_hausdorff_distance(y_pred, y, percentile=95, **kw).item(), rel=1e-5)
    assd = compute_average_surface_distance(y_pred, y, symmetric=True, **kw).item()
    assert ours.assd_mm() == pytest.approx(assd, rel=RTOL)
    directed = [
        compute_average_surface_distance(a, b, symmetric=False, **kw).item() for a, b in ((y_pred, y), (y, y_pred))
    ]
    assert ours.masd_mm() == pytest.approx(sum(directed) / 2, rel=RTOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our tolerance-below-slice-spacing warning
        for tolerance in TOLERANCES_MM:
            theirs = compute_surface_dice(y_pred, y, [tolerance], **kw).item()
            assert ours.surface_dice(tolerance) == pytest.approx(theirs, rel=RTOL, abs=1e-7)


def check_voxel6_against_medpy(ref, pred, spacing):
    binary = require("medpy.metric.binary")
    ours = surface_distances(ref, pred, spacing)
    r, p = crop_for_reference_libraries(ref, pred)
    assert ours.hausdorff_mm() == pytest.approx(binary.hd(p, r, spacing), rel=1e-9)
    assert ours.hd95_pooled_mm() == pytest.approx(binary.hd95(p, r, spacing), rel=1e-9)
    assert ours.assd_mm() == pytest.approx(binary.assd(p, r, spacing), rel=1e-9)


def check_surfel_against_deepmind(ref, pred, spacing):
    sd = require("surface_distance")
    ours = surface_distances(ref, pred, spacing, boundary="surfel")
    r, p = crop_for_reference_libraries(ref.astype(bool), pred.astype(bool))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its scipy.ndimage.filters import
        theirs = sd.compute_surface_distances(r, p, spacing)
    np.testing.assert_allclose(np.sort(ours.reference_to_prediction_mm), theirs["distances_gt_to_pred"], rtol=1e-12)
    np.testing.assert_allclose(np.sort(ours.prediction_to_reference_mm), theirs["distances_pred_to_gt"], rtol=1e-12)
    np.testing.assert_allclose(np.sort(ours.reference_weights), np.sort(theirs["surfel_areas_gt"]), rtol=1e-9)
    assert ours.hausdorff_mm() == pytest.approx(sd.compute_robust_hausdorff(theirs, 100), rel=1e-9)
    assert ours.hd95_mm() == pytest.approx(sd.compute_robust_hausdorff(theirs, 95), rel=1e-9)
    directed = sd.compute_average_surface_distance(theirs)
    assert ours.masd_mm() == pytest.approx((directed[0] + directed[1]) / 2, rel=1e-9)
    areas = np.concatenate([theirs["surfel_areas_gt"], theirs["surfel_areas_pred"]])
    pooled = np.concatenate([theirs["distances_gt_to_pred"], theirs["distances_pred_to_gt"]])
    assert ours.assd_mm() == pytest.approx(np.sum(pooled * areas) / np.sum(areas), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tolerance in TOLERANCES_MM:
            assert ours.surface_dice(tolerance) == pytest.approx(
                sd.compute_surface_dice_at_tolerance(theirs, tolerance), rel=1e-9
            )


# --------------------------------------------------------------------------- random shapes
SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_voxel6_matches_monai_on_random_shapes(seed):
    check_voxel6_against_monai(*random_pair(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_voxel6_matches_medpy_on_random_shapes(seed):
    check_voxel6_against_medpy(*random_pair(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_surfel_matches_deepmind_on_random_shapes(seed):
    check_surfel_against_deepmind(*random_pair(seed))


def test_random_shapes_include_field_of_view_edges():
    touching = 0
    for seed in SEEDS:
        ref, pred, _ = random_pair(seed)
        touching += any(m[0].any() or m[-1].any() for m in (ref, pred))
    assert touching >= 3


def test_surfel_area_table_matches_deepmind_for_every_code():
    lookup = require("surface_distance.lookup_tables")
    kernel = lookup.ENCODE_NEIGHBOURHOOD_3D_KERNEL
    rng = np.random.default_rng(0)
    for spacing in [(1.0, 1.0, 1.0), (0.98, 0.98, 2.5), (3.0, 1.0, 0.5), *map(tuple, rng.uniform(0.2, 5, (5, 3)))]:
        theirs = lookup.create_table_neighbour_code_to_surface_area(spacing)
        ours = surfel_area_table(spacing)
        for code in range(256):
            # their kernel entry [a, b, c] weighs the same corner as our bit 4a + 2b + c
            their_code = sum(int(kernel[a, b, c]) for a, b, c in np.ndindex(2, 2, 2) if code >> (4 * a + 2 * b + c) & 1)
            assert ours[code] == pytest.approx(theirs[their_code], rel=1e-12, abs=1e-15)


# --------------------------------------------------------------------------- real WORD label maps
WORD_CASES = ("word_0023.nii.gz", "word_0014.nii.gz")
WORD_LABELS_OF = {"Bladder": 14, "Anorectum": 13}


@pytest.fixture(scope="module")
def word_pairs():
    if not WORD_LABELS.is_dir():
        pytest.skip(f"real WORD label maps not found at {WORD_LABELS} (shared data absent)")
    from cervicontour.io import read_nifti

    pairs = []
    for name in WORD_CASES:
        path = WORD_LABELS / name
        if not path.is_file():
            pytest.skip(f"{path} missing from the shared WORD labels")
        labels = read_nifti(path)
        for structure, value in WORD_LABELS_OF.items():
            ref = labels.array == value
            box = bounding_box(ref)
            if box is None:
                continue
            # work on the structure's neighbourhood only: eroding a full 512×512×200 map is slow
            region = tuple(slice(max(lo - 4, 0), hi + 5) for lo, hi in box)
            shifted, eroded = np.zeros_like(ref), np.zeros_like(ref)
            shifted[region] = np.roll(ref[region], (2, -1, 1), axis=(0, 1, 2))
            eroded[region] = ndimage.binary_erosion(ref[region])
            pairs += [(f"{name}:{structure}:shifted", ref, shifted, labels.spacing_mm)]
            pairs += [(f"{name}:{structure}:eroded", ref, eroded, labels.spacing_mm)]
    if not pairs:
        pytest.skip("no bladder or rectum labels in the WORD cases")
    return pairs


def test_word_voxel6_matches_monai(word_pairs):
    for _, ref, pred, spacing in word_pairs:
        check_voxel6_against_monai(ref, pred, spacing)


def test_word_voxel6_matches_medpy(word_pairs):
    for _, ref, pred, spacing in word_pairs:
        check_voxel6_against_medpy(ref, pred, spacing)


def test_word_surfel_matches_deepmind(word_pairs):
    for _, ref, pred, spacing in word_pairs:
        check_surfel_against_deepmind(ref, pred, spacing)
