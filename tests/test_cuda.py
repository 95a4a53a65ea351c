"""The CUDA paths: augmentation on the GPU, AMP training, checkpoints and inference on the GPU.

They skip on a machine without a CUDA GPU (this project's CPU CI); `benchmarks/gpu_session.py`
runs them on a lent GPU machine. Each compares the GPU against the CPU path, which the rest of
the suite checks against hand-derived values.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here; these run on a GPU machine (benchmarks/gpu_session.py)")


def test_augmentation_on_the_gpu_draws_the_same_transform_as_on_the_cpu():
    from cervicontour.training.augment import augment_batch
    from cervicontour.training.train_config import Augmentation

    aug = Augmentation(rotation_p=1.0, scale_p=1.0, elastic_p=1.0, gamma_p=1.0, noise_p=1.0, brightness_p=1.0, contrast_p=1.0, lowres_p=1.0)
    gen = np.random.default_rng(5)
    images = torch.from_numpy(gen.standard_normal((2, 1, 24, 20, 16)).astype(np.float32))
    x, y, z = np.meshgrid(*(np.arange(n) for n in (24, 20, 16)), indexing="ij")
    ball = ((x - 12) ** 2 + (y - 10) ** 2 + (z - 8) ** 2 < 36).astype(np.float32)
    labels = torch.from_numpy(np.stack([ball, 1 - ball])[None].repeat(2, 0))
    cpu = augment_batch(images, labels, np.random.default_rng(9), aug, (2.0, 2.0, 3.0))
    gpu = augment_batch(images.cuda(), labels.cuda(), np.random.default_rng(9), aug, (2.0, 2.0, 3.0))
    assert gpu[0].is_cuda and gpu[1].is_cuda
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-3, atol=1e-3)
    flipped = (gpu[1].cpu() != cpu[1]).float().mean().item()
    assert flipped < 1e-3  # only voxels whose warped label sits at 0.5 within rounding may differ


def test_amp_training_on_the_gpu_writes_a_run_that_loads_on_the_cpu(tiny_cohort, tmp_path):
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import train

    config = TINY.replace(steps=4, device="cuda", amp=True, checkpoint_every=2)
    result = train(tiny_cohort, tmp_path / "run", config)
    assert result.steps_done == 4 and np.isfinite(result.last_loss)
    ckpt = torch.load(tmp_path / "run" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert ckpt["scaler"]["scale"] > 0  # the GradScaler ran (its state is saved only when enabled)
    model = load_model(tmp_path / "run", device="cpu")
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["amp"] is True


def test_gpu_run_resumes_from_its_checkpoint(tiny_cohort, tmp_path):
    from cervicontour.training.train import train

    config = TINY.replace(steps=4, device="cuda", checkpoint_every=2, max_minutes=60.0)
    first = train(tiny_cohort, tmp_path / "run", config.replace(steps=2))
    assert first.steps_done == 2
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    info["config"]["steps"] = 4  # as if the first run had been stopped after 2 of 4 steps
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    (tmp_path / "run" / "model.pt").unlink()
    resumed = train(tiny_cohort, tmp_path / "run", resume=True)
    assert resumed.steps_done == 4


def test_gpu_inference_matches_the_cpu(tiny_cohort, tmp_path):
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import train
    from cervicontour.networks.infer import predict_probabilities

    train(tiny_cohort, tmp_path / "run", TINY.replace(steps=2))
    rng = np.random.default_rng(1)
    image = rng.standard_normal((40, 36, 20)).astype(np.float32)
    cpu_model, gpu_model = load_model(tmp_path / "run", device="cpu"), load_model(tmp_path / "run", device="cuda")
    patch = cpu_model.plan.patch_size
    on_cpu = predict_probabilities(cpu_model.network, image, patch, pad_value=-3.0, device="cpu")
    on_gpu = predict_probabilities(gpu_model.network, image, patch, pad_value=-3.0, device="cuda")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)


def test_the_refiner_on_the_gpu_matches_the_cpu():
    """The shipped model's CTVn refiner (inputs built on the CPU, network on the device)."""
    from cervicontour.networks.bundle import load_model
    from cervicontour.networks.refine import refine
    from cervicontour.volume import Volume

    cpu_model, gpu_model = load_model("default", device="cpu"), load_model("default", device="cuda")
    assert cpu_model.refiner is not None
    rng = np.random.default_rng(2)
    x, y, _ = np.meshgrid(np.arange(40), np.arange(36), np.arange(20), indexing="ij")
    ct = Volume((rng.normal(40, 20, x.shape) + 200 * (np.hypot(x - 18, y - 20) < 3)).astype(np.float32), (3.5, 3.5, 5.0))
    coarse = {n: np.clip(1.2 - np.abs(np.hypot(x - 18.0, y - 20.0) - 4.5) / 2.5, 0, 1).astype(np.float32) for n in cpu_model.refiner.inputs}
    on_cpu = refine(cpu_model.refiner, ct, coarse, cpu_model.plan.normalization, device="cpu")
    on_gpu = refine(gpu_model.refiner, ct, coarse, gpu_model.plan.normalization, device="cuda")
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)
