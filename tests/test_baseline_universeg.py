"""UniverSeg-style baseline: architecture properties, official weight layout, geometry, training."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cervicontour.baselines import universeg as us
from cervicontour.baselines import universeg_train as ut
from cervicontour.errors import InputError
from cervicontour.volume import Volume, to_lps

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(2)
TINY = ((4, 4), (4, 4))


def official_layout(nf: int = 64, levels: int = 4) -> dict[str, tuple[int, ...]]:
    """The official ``universeg`` v1 state-dict names and shapes, written out by hand from its
    ``model.py``: CrossBlock = cross.cross_conv (Conv2d on target‖support channels) +
    target.vmapped.conv + support.vmapped.conv; encoder input (1 target, 2 support) channels;
    decoder blocks see conv + skip channels on both sides; out_conv.conv is 1×1 → 1."""
    keys: dict[str, tuple[int, ...]] = {}

    def block(prefix: str, cin: int) -> None:
        keys[f"{prefix}.cross.cross_conv.weight"] = (nf, cin, 3, 3)
        keys[f"{prefix}.cross.cross_conv.bias"] = (nf,)
        for side in ("target", "support"):
            keys[f"{prefix}.{side}.vmapped.conv.weight"] = (nf, nf, 3, 3)
            keys[f"{prefix}.{side}.vmapped.conv.bias"] = (nf,)

    for i in range(levels):
        block(f"enc_blocks.{i}", 3 if i == 0 else 2 * nf)
    for i in range(levels - 1):
        block(f"dec_blocks.{i}", 4 * nf)
    keys["out_conv.conv.weight"] = (1, nf, 1, 1)
    keys["out_conv.conv.bias"] = (1,)
    return keys


# --------------------------------------------------------------------------- network
def test_state_dict_matches_official_layout_and_paper_size():
    model = us.UniverSeg()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_layout()
    # paper: 1.18M parameters
    assert us.parameter_count(model) == sum(int(np.prod(s)) for s in official_layout().values()) == 1_182_785


@pytest.mark.parametrize("k", [1, 3])
def test_output_shape(k):
    model = us.UniverSeg(TINY).eval()
    out = model(torch.rand(2, 1, 32, 32), torch.rand(2, k, 1, 32, 32), torch.rand(2, k, 1, 32, 32))
    assert out.shape == (2, 1, 32, 32)


def test_support_permutation_invariance():
    torch.manual_seed(0)
    model = us.UniverSeg(((8, 8), (8, 8), (8, 8))).eval()
    target, s_img, s_lab = torch.rand(1, 1, 32, 32), torch.rand(1, 5, 1, 32, 32), torch.rand(1, 5, 1, 32, 32)
    perm = torch.tensor([3, 0, 4, 2, 1])
    with torch.no_grad():
        a = model(target, s_img, s_lab)
        b = model(target, s_img[:, perm], s_lab[:, perm])
        c = model(target, s_img[:, :2], s_lab[:, :2])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, c)  # the support content matters


# --------------------------------------------------------------------------- weights
def test_official_layout_file_loads_and_reports(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in official_layout().items()}
    path = tmp_path / "universeg_v1.pt"
    torch.save(state, path)
    model, report = us.load_model(path)
    assert set(report.loaded) == set(state) and not report.skipped and not report.missing
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    # DataParallel prefix is stripped and reported
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    assert us.load_model(path)[1].stripped_prefix == "module."


def test_mismatched_file_error_lists_keys(tmp_path):
    state = {k: torch.zeros(s) for k, s in official_layout().items()}
    del state["out_conv.conv.bias"]
    state["enc_blocks.0.cross.cross_conv.weight"] = torch.zeros(64, 2, 3, 3)
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(InputError) as err:
        us.load_weights(us.UniverSeg(), path)
    msg = str(err.value)
    assert "missing keys [out_conv.conv.bias]" in msg and "unexpected keys [head.weight]" in msg
    assert "enc_blocks.0.cross.cross_conv.weight: file (64, 2, 3, 3) vs model (64, 3, 3, 3)" in msg
    report = us.load_weights(us.UniverSeg(), path, strict=False)
    assert report.missing == ("out_conv.conv.bias",) and report.unexpected == ("head.weight",)
    assert len(report.loaded) == len(official_layout()) - 2 and len(report.shape_mismatch) == 1
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(InputError, match="not a PyTorch weights file"):
        us.load_weights(us.UniverSeg(), tmp_path / "junk.pt")


# --------------------------------------------------------------------------- geometry
class _Threshold(torch.nn.Module):
    """Stand-in model: 'segment' bright pixels (normalised CT ≥ 0.5, i.e. HU ≥ 50)."""

    def forward(self, target, support_images, support_labels):
        return (target - 0.5) * 1000 + 1e-3


def _phantom(shape=(128, 128, 3)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.choice(np.array([-500, 0, 400], np.int16), size=shape)


def _support() -> us.Support:
    return us.Support(torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128))


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.array([[0, 1, 0], [0, 0, -1], [1, 0, 0]], float)],
    ids=["LPS", "RAS", "permuted"],
)
def test_slicewise_inference_round_trips_geometry(direction):
    order = np.argmax(np.abs(direction), axis=1)  # array axis that runs along world axis w
    shape = tuple(int(n) for n in np.array((128, 128, 3))[np.argsort(order)])
    hu = _phantom(shape)
    image = Volume(hu, (2.0, 2.5, 4.0), (10.0, -20.0, 30.0), direction)
    mask = us.predict_volume(_Threshold(), image, _support())
    assert mask.same_grid(image) and mask.array.dtype == np.uint8
    # 128×128 slices need no resizing, so the round trip is exact: expected = HU ≥ 50 voxel-wise
    np.testing.assert_array_equal(mask.array, (hu >= 50).astype(np.uint8))
    np.testing.assert_array_equal(us.to_lps_array(image), to_lps(image).array)


def test_non_square_grid_comes_back_on_input_grid():
    from cervicontour.synth import to_ras

    hu = np.full((60, 40, 4), -500, np.int16)
    hu[10:40, 5:30, 1:3] = 400  # a block of "bone"
    image = to_ras(Volume(hu, (3.0, 4.0, 5.0), (-90.0, -80.0, 0.0)))
    mask = us.predict_volume(_Threshold(), image, _support())
    assert mask.same_grid(image)
    np.testing.assert_array_equal(to_lps(mask).array, (hu >= 50).astype(np.uint8))


# --------------------------------------------------------------------------- training
def _disc_cohort(root, patients=3):
    """Bright discs ("Bladder") of varying position on dark tissue; every 2nd patient RAS."""
    from cervicontour.cohort import write_case
    from cervicontour.synth import to_ras

    for p in range(patients):
        rng = np.random.default_rng(p)
        i, j = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
        ci, cj, r = rng.uniform(15, 33), rng.uniform(12, 28), rng.uniform(6, 10)
        disc = ((i - ci) ** 2 + (j - cj) ** 2 <= r * r)[:, :, None] & (np.arange(6) >= 1)[None, None]
        hu = np.where(disc, 300, -100).astype(np.int16)
        image = Volume(hu, (4.0, 4.0, 5.0), (0.0, 0.0, 10.0 * p))
        mask = image.with_array(disc.astype(np.uint8))
        if p % 2:
            image, mask = to_ras(image), to_ras(mask)
        write_case(root, f"P{p}", image, {"Bladder": mask})
    return root


def test_tiny_meta_training_decreases_loss_and_checkpoint_reloads(tmp_path):
    cohort = _disc_cohort(tmp_path / "c")
    config = ut.MetaTrainConfig(seed=0, max_minutes=5, max_steps=30, batch_size=2, support_size=2,
                                lr=3e-3, blocks=TINY, negative_fraction=0.0, save_every=1000)
    result = ut.meta_train(cohort, tmp_path / "m.pt", config)
    assert result.steps == 30
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05
    model, report = us.load_model(tmp_path / "m.pt")
    assert model.blocks == TINY and not report.missing and not report.skipped
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    assert checkpoint["config_sha256"] == config.sha256() and checkpoint["history"]["steps"] == 30
    for k, v in model.state_dict().items():
        assert torch.equal(v, checkpoint["state_dict"][k])
    # the reloaded model predicts exactly as the one the file was written from
    target, _, s_img, s_lab = ut.sample_batch(ut.load_task_bank(cohort), np.random.default_rng(1), 1, 2, 0.0)
    fresh = us.UniverSeg(TINY)
    fresh.load_state_dict(checkpoint["state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(model(target, s_img, s_lab), fresh.eval()(target, s_img, s_lab), rtol=0, atol=0)

    # cohort prediction: every structure file on its input grid, LPS and RAS
    from cervicontour.cohort import load_cohort
    from cervicontour.io import read_nifti

    from cervicontour.baselines.universeg_cohort import predict_cohort

    result = predict_cohort(tmp_path / "m.pt", cohort, cohort, tmp_path / "out", structures=("Bladder",), k=2)
    assert set(result["cases"]) == {"P0", "P1", "P2"}
    for pid, case in load_cohort(cohort).items():
        written = read_nifti(tmp_path / "out" / pid / "structures" / "Bladder.nii.gz")
        assert written.same_grid(case.load_image()) and result["cases"][pid]["seconds"] > 0


def test_draw_support_spreads_over_patients_and_rejects_missing(tmp_path):
    from cervicontour.cohort import load_cohort

    cases = load_cohort(_disc_cohort(tmp_path / "c")).labelled()
    support = us.draw_support(cases, "bladder", 5, np.random.default_rng(0))
    assert support.images.shape == support.labels.shape == (5, 1, 128, 128)
    assert {pid for pid, _ in support.sources} == {"P0", "P1", "P2"}
    assert all(float(support.labels[n].max()) > 0.5 for n in range(5))  # labelled slices only
    with pytest.raises(InputError, match="no support patient has a non-empty 'CTVn' mask"):
        us.draw_support(cases, "CTVn", 2, np.random.default_rng(0))


def test_cli_help_is_light():
    from typer.testing import CliRunner

    from cervicontour.baselines.universeg_cli import app

    result = CliRunner().invoke(app, ["predict", "--help"])
    assert result.exit_code == 0 and "--weights" in result.stdout


def test_cli_train_then_predict_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from cervicontour.baselines.universeg_cli import app
    from cervicontour.io import read_nifti

    cohort = _disc_cohort(tmp_path / "c", patients=2)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(cohort), "--out", str(tmp_path / "m.pt"), "--max-steps", "1",
                                  "--support-size", "1", "--batch-size", "1"])
    assert trained.exit_code == 0, trained.output
    assert "1 steps" in " ".join(trained.output.split())
    predicted = runner.invoke(app, ["predict", str(cohort), str(cohort), str(tmp_path / "out"),
                                    "--weights", str(tmp_path / "m.pt"), "--k", "1", "-s", "bladder"])
    assert predicted.exit_code == 0, predicted.output
    assert f"loaded {len(official_layout())} tensors, skipped 0" in " ".join(predicted.output.split())
    mask = read_nifti(tmp_path / "out" / "P1" / "structures" / "Bladder.nii.gz")
    assert mask.orientation == "RAS" and mask.shape == (48, 40, 6)
    missing = runner.invoke(app, ["predict", str(cohort), str(cohort), str(tmp_path / "o2"),
                                  "--weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "no such weights file" in " ".join(missing.output.split())
