"""The training loss: our soft Dice equals MONAI's DiceLoss (an independent implementation)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.slow  # importing MONAI alone takes 5-10 s here
def test_soft_dice_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    from cervicontour.networks.losses import soft_dice_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g)
    target = (torch.rand(2, 3, 6, 5, 4, generator=g) > 0.7).float()
    target[:, 2] = 0  # an empty channel
    ref = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    torch.testing.assert_close(soft_dice_loss(logits, target), ref)


def test_perfect_and_empty_predictions_by_hand():
    from cervicontour.networks.losses import soft_dice_loss

    target = torch.zeros(1, 1, 4, 4, 4)
    target[0, 0, :2] = 1
    perfect = (target * 2 - 1) * 50  # sigmoid → exactly 0 / 1
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # everything predicted 0.5: Σp t = 16, Σp = 32, Σt = 32 → 1 - 32/64 = 0.5
    assert float(soft_dice_loss(torch.zeros(1, 1, 4, 4, 4), target)) == pytest.approx(0.5, abs=1e-6)


def _dice_by_hand(p, t, smooth=1e-5):
    return 1 - (2 * float((p * t).sum()) + smooth) / (float(p.sum() + t.sum()) + smooth)


def test_unknown_channels_leave_the_loss():
    """Partial labels: channel 1 of sample 1 is "not contoured" — the loss must equal the loss
    of the samples that define each channel, and that sample's channel gets no gradient."""
    from cervicontour.networks.losses import _loss

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 5, 4, 3, generator=g, requires_grad=True)
    target = (torch.rand(2, 2, 5, 4, 3, generator=g) > 0.6).float()
    known = torch.tensor([[True, True], [True, False]])
    total, dice, bce = _loss()(logits, target, known)

    p = torch.sigmoid(logits.detach())
    expected_dice = (_dice_by_hand(p[:, 0], target[:, 0]) + _dice_by_hand(p[0, 1], target[0, 1])) / 2
    known_logits = torch.cat([logits.detach()[:, 0].reshape(-1), logits.detach()[0, 1].reshape(-1)])
    known_target = torch.cat([target[:, 0].reshape(-1), target[0, 1].reshape(-1)])
    expected_bce = float(torch.nn.functional.binary_cross_entropy_with_logits(known_logits, known_target))
    assert float(dice) == pytest.approx(expected_dice, rel=1e-5)
    assert float(bce) == pytest.approx(expected_bce, rel=1e-5)
    total.backward()
    assert float(logits.grad[1, 1].abs().max()) == 0.0
    assert float(logits.grad[1, 0].abs().max()) > 0.0


def test_all_known_mask_is_the_plain_loss():
    from cervicontour.networks.losses import _loss

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, 4, generator=g)
    target = (torch.rand(2, 3, 4, 4, 4, generator=g) > 0.5).float()
    plain = _loss()(logits, target)[0]
    masked = _loss()(logits, target, torch.ones(2, 3, dtype=torch.bool))[0]
    assert float(masked) == float(plain)


def test_absent_para_aortic_group_is_unknown_absent_gtvn_is_empty(tmp_path):
    import numpy as np

    from cervicontour.cohort import load_cohort, write_case
    from cervicontour.training.data import known_channels
    from cervicontour.volume import Volume

    image = Volume(np.zeros((4, 4, 4), np.int16), (1.0, 1.0, 1.0))
    mask = image.with_array(np.ones((4, 4, 4), np.uint8))
    write_case(tmp_path, "P1", image, {"Bladder": mask, "LN_Pelvic": mask})
    case = load_cohort(tmp_path)["P1"]
    names = ["Bladder", "LN_Pelvic", "LN_ParaAortic", "GTVn"]
    assert known_channels(case, names).tolist() == [True, True, False, True]
