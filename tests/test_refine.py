"""The second stage (cervicontour.networks.refine): inputs on the right grid in the right orientation,
identity before training, a learnable correction, and a model file that carries it."""

from __future__ import annotations

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.preprocess import Normalization
from cervicontour.volume import Volume

torch = pytest.importorskip("torch")
pytest.importorskip("dynamic_network_architectures")

from model_helpers import tiny_cohort, tiny_run  # noqa: E402,F401 - pytest fixtures

NORM = Normalization(-1000.0, 1000.0, 0.0, 100.0)
CONTEXT = ("CTVp", "Anorectum", "Bladder")


class PatchMean(torch.nn.Module):
    """Each output channel = the mean of that input channel over the whole patch (known by hand)."""

    def forward(self, x):
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x)


def test_predict_probabilities_pads_each_channel_with_its_own_value():
    from cervicontour.networks.infer import predict_probabilities

    image = np.stack([np.full((2, 2, 2), 1.0), np.full((2, 2, 2), 5.0)]).astype(np.float32)
    out = predict_probabilities(PatchMean(), image, (4, 4, 4), pad_value=(10.0, -3.0))
    # one 4×4×4 window: 8 image voxels + 56 padding voxels per channel
    expected = 1 / (1 + np.exp(-np.array([(8 * 1 + 56 * 10) / 64, (8 * 5 + 56 * -3) / 64])))
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out.reshape(2, -1).std(axis=1), 0, atol=1e-7)


def _box(direction=np.eye(3), spacing=(3.5, 3.5, 5.0), seed=0):
    """A 40×36×20 LPS box: CT noise, a bright tube (the 'vessel') and coarse maps around it."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(40), np.arange(36), np.arange(20), indexing="ij")
    r = np.hypot(x - 18.0, y - 20.0)
    ct = (rng.normal(40, 20, r.shape) + 200 * (r < 3)).astype(np.float32)
    coarse = {"CTVn": np.clip(1.2 - np.abs(r - 4.5) / 2.5, 0, 1).astype(np.float32)}
    for k, name in enumerate(CONTEXT):
        coarse[name] = np.clip(1 - np.hypot(x - 8.0 - 10 * k, y - 6.0) / 4, 0, 1).astype(np.float32)
    return Volume(ct, spacing, (-70.0, -60.0, 100.0), direction), coarse


def _stored(box: Volume, coarse: dict, flip_axes=(), permutation=(0, 1, 2)):
    """The same physical box stored with flipped and permuted array axes (world unchanged)."""
    array, maps = box.array, dict(coarse)
    direction, origin = box.direction.copy(), np.asarray(box.origin_mm, float)
    for a in flip_axes:
        origin = origin + direction[:, a] * box.spacing_mm[a] * (box.shape[a] - 1)
        direction[:, a] *= -1
        array = np.flip(array, a)
        maps = {k: np.flip(v, a) for k, v in maps.items()}
    perm = list(permutation)
    array = np.ascontiguousarray(np.transpose(array, perm))
    maps = {k: np.ascontiguousarray(np.transpose(v, perm)) for k, v in maps.items()}
    spacing = tuple(box.spacing_mm[p] for p in perm)
    return Volume(array, spacing, tuple(origin), direction[:, perm]), maps


def _random_refiner(seed=1, **kw):
    from cervicontour.networks.refine import new_refiner

    refiner = new_refiner("CTVn", CONTEXT, (3.0, 3.0, 4.5), (4.0, 4.0, 6.0), seed=seed, **kw)
    torch.manual_seed(seed)
    head = refiner.network.unet.decoder.seg_layers[-1]
    torch.nn.init.normal_(head.weight, std=0.5)  # a non-trivial correction
    return refiner


def test_an_untrained_refiner_returns_the_coarse_map():
    from cervicontour.networks.refine import new_refiner, refine

    box, coarse = _box()
    refiner = new_refiner("CTVn", CONTEXT, (3.0, 3.0, 4.5), (4.0, 4.0, 6.0))
    out = refine(refiner, box, coarse, NORM)
    # logit(clip(p, 1e-4, 1 - 1e-4)) + 0 inside the region; the coarse map itself outside it
    np.testing.assert_allclose(out, coarse["CTVn"], atol=1e-4 + 2e-6)


@pytest.mark.parametrize("flips,perm", [((0, 1), (0, 1, 2)), ((2,), (0, 1, 2)), ((), (2, 0, 1)), ((0,), (1, 0, 2))], ids=["RAS", "flipped-z", "permuted", "flipped-permuted"])
def test_the_refiner_sees_lps_whatever_the_storage_order(flips, perm):
    """The same anatomy stored RAS, flipped or permuted gives the same refined map, stored the same way."""
    from cervicontour.networks.refine import refine

    box, coarse = _box()
    refiner = _random_refiner()
    reference = refine(refiner, box, coarse, NORM)
    assert np.abs(reference - coarse["CTVn"]).max() > 0.05  # the correction is not trivial
    stored, maps = _stored(box, coarse, flips, perm)
    out = refine(refiner, stored, maps, NORM)
    expected = reference
    for a in flips:
        expected = np.flip(expected, a)
    expected = np.transpose(expected, perm)
    assert out.shape == stored.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_a_grid_outside_the_trained_spacing_goes_to_the_nearest_spacing_inside_and_back():
    from cervicontour.networks.refine import build_inputs, new_refiner, refine

    box, coarse = _box(spacing=(1.0, 1.0, 5.0))
    # a linear ramp survives linear down- and up-sampling exactly away from the box edges
    ramp = np.broadcast_to(np.linspace(0.1, 0.9, 40)[:, None, None], box.shape).astype(np.float32)
    coarse["CTVn"] = ramp
    refiner = new_refiner("CTVn", CONTEXT, (2.0, 2.0, 4.5), (3.0, 3.0, 6.0))
    inputs = build_inputs(refiner, box, coarse, NORM)
    assert inputs.grid.spacing_mm == (2.0, 2.0, 5.0)  # in-plane clipped up to 2 mm; z in range
    assert inputs.x.shape == (1 + 4 + 2, 20, 18, 20)
    out = refine(refiner, box, coarse, NORM)
    assert out.shape == box.shape
    # interior exact; the outermost in-plane voxels blend with 0 outside the box, as the working grid does
    np.testing.assert_allclose(out[2:-2, 2:-2], ramp[2:-2, 2:-2], atol=1e-5)


def test_train_refiner_learns_a_one_voxel_dilation():
    """Label = the coarse mask grown by one voxel: the untrained refiner scores the coarse Dice, a
    short training must beat it clearly."""
    from scipy import ndimage

    from cervicontour.networks.refine import RefineCase, dice_on_grid, new_refiner, train_refiner

    rng = np.random.default_rng(0)
    cases = []
    for i in range(6):
        x, y, z = np.meshgrid(np.arange(24), np.arange(24), np.arange(12), indexing="ij")
        r = np.hypot(x - 12 + rng.uniform(-2, 2), y - 12 + rng.uniform(-2, 2))
        shell = (r > 3) & (r < 5)
        label = ndimage.binary_dilation(shell, iterations=1)
        p = np.where(shell, 0.9, 0.1).astype(np.float32)
        ct = (200.0 * (r < 3) / 100).astype(np.float32)
        channels = np.stack([ct, p, *(np.zeros_like(p),) * 3, np.zeros_like(p), np.zeros_like(p)])
        cases.append(RefineCase(f"T{i}", channels, label.astype(np.float32), 0, (0.0,) * 7))
    refiner = new_refiner("CTVn", CONTEXT, (3.0, 3.0, 4.5), (4.0, 4.0, 6.0), patch_size=(16, 16, 8))
    before = dice_on_grid(refiner, cases[4:])
    record = train_refiner(refiner, cases[:4], cases[4:], steps=120, batch_size=2, lr=3e-3, validate_every=60)
    after = dice_on_grid(refiner, cases[4:])
    assert record["val_dice_refine_grid"]["coarse"] == pytest.approx(before)
    assert after > before + 0.1, (before, after)


def test_train_refiner_needs_one_budget():
    from cervicontour.networks.refine import new_refiner, train_refiner

    refiner = new_refiner("CTVn", CONTEXT, (3.0, 3.0, 4.5), (4.0, 4.0, 6.0))
    with pytest.raises(InputError, match="exactly one"):
        train_refiner(refiner, [], [], steps=1, minutes=1.0)


def test_model_file_carries_the_refiner(tiny_run, tiny_cohort, tmp_path):
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.inference.case import predict_case

    from model_helpers import lift_head

    model = load_model(lift_head(tiny_run, "CTVn", tmp_path / "lifted.pt"))  # finds a CTVn: the refiner has a box to work on
    assert model.refiner is None
    refiner = _random_refiner()
    path = save_model(tmp_path / "m.pt", model.network, model.plan, model.arch, name="t", version="0", config_sha256="-", refiner=refiner)
    loaded = load_model(path)
    assert loaded.refiner is not None and loaded.refiner.structure == "CTVn" and loaded.refiner.context == CONTEXT
    assert loaded.refiner.spacing_min_mm == (3.0, 3.0, 4.5) and loaded.refiner.spacing_max_mm == (4.0, 4.0, 6.0)
    for key, value in refiner.network.unet.state_dict().items():
        assert torch.equal(loaded.refiner.network.unet.state_dict()[key], value), key
    case = load_cohort(tiny_cohort)["SYN004"]  # stored RAS
    image = case.load_image()
    result = predict_case(image, loaded)
    assert "refine" in result.timings_s
    for mask in result.masks.values():
        assert mask.same_grid(image)


def test_a_refiner_for_a_structure_the_model_lacks_is_refused(tiny_run, tmp_path):
    from cervicontour.networks.bundle import load_model, save_model
    from cervicontour.networks.refine import new_refiner

    model = load_model(tiny_run)
    refiner = new_refiner("GTVp", CONTEXT, (3.0, 3.0, 4.5), (4.0, 4.0, 6.0))
    path = save_model(tmp_path / "m.pt", model.network, model.plan, model.arch, name="t", version="0", config_sha256="-", refiner=refiner)
    with pytest.raises(InputError, match="GTVp"):
        load_model(path)


def test_a_model_file_without_a_run_gets_a_seeded_split(tiny_run, tiny_cohort, tmp_path):
    """No run.json beside the stage-1 model: the labelled patients are shuffled with the seed and at
    most a fifth (here 4 // 5 = 0) go to validation."""
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.refiner_cases import train_refiner_run
    from model_helpers import lift_head

    stage1 = lift_head(tiny_run, "CTVn", tmp_path / "stage1.pt")
    record = train_refiner_run(stage1, tiny_cohort, tmp_path / "refined", steps=2)
    labelled = {c.patient_id for c in load_cohort(tiny_cohort).labelled()}
    assert len(labelled) == 4 and record["val_patients"] == [] and set(record["train_patients"]) == labelled
    assert load_model(tmp_path / "refined").refiner.meta["steps"] == 2
