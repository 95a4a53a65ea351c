"""The training loss: our soft Dice equals MONAI's DiceLoss (an independent implementation)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.slow  # importing MONAI alone takes 5-10 s here
def test_soft_dice_matches_monai():
    monai_losses = pytest.importorskip("monai.losses")
    from cervicontour.model.train import soft_dice_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g)
    target = (torch.rand(2, 3, 6, 5, 4, generator=g) > 0.7).float()
    target[:, 2] = 0  # an empty channel
    ref = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    torch.testing.assert_close(soft_dice_loss(logits, target), ref)


def test_perfect_and_empty_predictions_by_hand():
    from cervicontour.model.train import soft_dice_loss

    target = torch.zeros(1, 1, 4, 4, 4)
    target[0, 0, :2] = 1
    perfect = (target * 2 - 1) * 50  # sigmoid → exactly 0 / 1
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # everything predicted 0.5: Σp t = 16, Σp = 32, Σt = 32 → 1 - 32/64 = 0.5
    assert float(soft_dice_loss(torch.zeros(1, 1, 4, 4, 4), target)) == pytest.approx(0.5, abs=1e-6)
