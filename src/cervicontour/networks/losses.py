"""The training loss (soft Dice + binary cross-entropy, partial labels) shared by the segmenter and the refiner."""

from __future__ import annotations


def _loss():
    """Soft Dice + binary cross-entropy, equally weighted (see :func:`soft_dice_loss`).

    ``known (B, C)`` (optional) leaves a sample's channel out of both terms when that patient's
    structure was not contoured (partial labels, e.g. no para-aortic nodes in this CTVn).
    """
    import torch

    bce = torch.nn.BCEWithLogitsLoss()

    def loss(logits, target, known=None):
        if known is None or bool(known.all()):
            d, b = soft_dice_loss(logits, target), bce(logits, target)
        else:
            weight = known[(..., *([None] * (logits.ndim - 2)))].to(logits.dtype).expand_as(logits)
            d = soft_dice_loss(logits, target, known=known)
            per_voxel = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            b = (per_voxel * weight).sum() / weight.sum().clamp_min(1)
        return d + b, d.detach(), b.detach()

    return loss


def soft_dice_loss(logits, target, *, smooth: float = 1e-5, known=None):
    """Batch soft Dice loss on sigmoid probabilities, averaged over channels.

    Per channel ``c``: ``1 - (2 Σ p t + s) / (Σ p + Σ t + s)`` with sums over the batch and all
    voxels (nnU-Net's batch Dice), ``s = 1e-5``. Equal to MONAI's
    ``DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)`` (cross-checked in the
    tests); ours because importing MONAI costs ~5-10 s per process on this machine.

    Args:
        logits: ``(B, C, X, Y, Z)``; target: same shape, {0, 1}.
        known: optional ``(B, C)`` bool: the sums skip samples whose channel is unknown, and a
            channel unknown in the whole batch is left out of the mean.
    """
    import torch

    p = torch.sigmoid(logits)
    dims = [0, *range(2, p.ndim)]
    if known is None:
        intersection = (p * target).sum(dims)
        denominator = p.sum(dims) + target.sum(dims)
        return (1 - (2 * intersection + smooth) / (denominator + smooth)).mean()
    w = known[(..., *([None] * (p.ndim - 2)))].to(p.dtype)
    intersection = (p * target * w).sum(dims)
    denominator = (p * w).sum(dims) + (target * w).sum(dims)
    per_channel = 1 - (2 * intersection + smooth) / (denominator + smooth)
    channels = known.any(0)
    return per_channel[channels].mean() if bool(channels.any()) else per_channel.sum() * 0
