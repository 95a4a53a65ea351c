"""Soft (partial-volume) training labels: values derived by hand from linear interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cervicontour.training.augment import augment_batch
from cervicontour.training.train_config import Augmentation, TrainConfig
from cervicontour.training.data import CaseArrays, sample_batch
from cervicontour.preprocess import Normalization, Plan, prepare_image
from cervicontour.preprocess.prepare import SOFT_SCALE, masks_to_working
from cervicontour.volume import Volume


def _slab_case():
    """A 20×6×6 all-body CT on a 1 mm LPS grid; the mask is x index 0..3 (a slab 4 mm thick)."""
    hu = np.zeros((20, 6, 6), np.int16)
    mask = np.zeros(hu.shape, np.uint8)
    mask[:4] = 1
    return Volume(hu, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), Volume(mask, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def test_soft_labels_keep_the_linear_fraction_that_binary_labels_threshold():
    image, mask = _slab_case()
    plan = Plan(("Bladder",), (2.5, 1.0, 1.0), (8, 8, 8), Normalization(-200.0, 200.0, 0.0, 100.0), margin_mm=0.0)
    prepared = prepare_image(image, plan)
    assert prepared.grid.crop_start == (0, 0, 0)
    # working voxel k along x sits at input index 0.75 + 2.5 k (voxel centres):
    # k=0 → 0.75 (inside, 1.0); k=1 → 3.25 → 0.75·m[3] + 0.25·m[4] = 0.75; k=2 → 5.75 → 0.
    soft = masks_to_working([mask], prepared.grid, image, soft=True)[0]
    binary = masks_to_working([mask], prepared.grid, image)[0]
    assert soft.dtype == np.uint8 and SOFT_SCALE == 255
    assert list(soft[:3, 2, 2]) == [255, round(0.75 * 255), 0]
    assert list(binary[:3, 2, 2]) == [1, 1, 0]
    assert (soft[3:] == 0).all() and (binary[3:] == 0).all()


def test_case_mask_thresholds_soft_labels_at_one_half():
    labels = np.array([0, 127, 128, 255], np.uint8).reshape(1, 4, 1, 1)
    soft = CaseArrays("P", np.zeros((4, 1, 1), np.float32), labels, (1.0, 1.0, 1.0), label_max=SOFT_SCALE)
    assert list(soft.mask(0).ravel()) == [0, 0, 1, 1]  # 127/255 < 0.5 ≤ 128/255
    binary = CaseArrays("P", np.zeros((4, 1, 1), np.float32), (labels > 0).astype(np.uint8), (1.0, 1.0, 1.0))
    assert list(binary.mask(0).ravel()) == [0, 1, 1, 1]


def test_foreground_patches_centre_on_voxels_at_least_half_inside():
    """A faint partial-volume haze (< 0.5) must not count as foreground for oversampling."""
    labels = np.zeros((1, 40, 40, 40), np.uint8)
    labels[0, :20] = 100  # haze: 0.39 everywhere in the lower half
    labels[0, 33, 33, 33] = 200  # the only voxel ≥ 0.5
    item = CaseArrays("P", np.zeros((40, 40, 40), np.float32), labels, (1.0, 1.0, 1.0), label_max=SOFT_SCALE)
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, patch, _ = sample_batch([item], (8, 8, 8), 1, rng, fg_oversample=1.0, pad_value=0.0)
        assert (patch == 200).any()


def test_augmentation_keeps_soft_labels_fractional_and_binary_labels_binary():
    aug = Augmentation(rotation_p=1.0, rotation_deg=30.0, scale_p=0.0, elastic_p=0.0, gamma_p=0.0, noise_p=0.0,
                       brightness_p=0.0, contrast_p=0.0, lowres_p=0.0, mirror_axes=())  # fmt: skip
    images = torch.zeros((1, 1, 16, 16, 16))
    labels = torch.zeros((1, 1, 16, 16, 16))
    labels[..., 4:12, 4:12, 4:12] = 1.0
    _, soft = augment_batch(images, labels, np.random.default_rng(3), aug, (1.0, 1.0, 1.0), soft=True)
    _, hard = augment_batch(images, labels, np.random.default_rng(3), aug, (1.0, 1.0, 1.0))
    fractional = (soft > 0.01) & (soft < 0.99)
    assert fractional.any()
    assert set(torch.unique(hard).tolist()) <= {0.0, 1.0}
    # the same warp: thresholding the soft result gives the binary one
    assert torch.equal((soft >= 0.5).float(), hard)


def test_soft_labels_is_a_config_knob_in_the_hash():
    assert TrainConfig().soft_labels is False
    assert TrainConfig(soft_labels=True).sha256() != TrainConfig().sha256()


@pytest.mark.parametrize("soft", [False, True])
def test_training_runs_and_validates_with_either_label_kind(tmp_path, small_cohort, soft):
    from cervicontour.training.train import train

    config = TrainConfig(structures=("Bladder",), steps=2, val_every=2, val_cases=1, patch_size=(32, 32, 16),
                         batch_size=1, threads=1, soft_labels=soft, augmentation=Augmentation(mirror_axes=()))  # fmt: skip
    result = train(small_cohort, tmp_path / "run", config)
    assert result.steps_done == 2
    assert np.isfinite(result.last_loss)
    assert 0.0 <= result.validation["dice"]["Bladder"] <= 1.0
