"""Label fusion for the multi-atlas baseline: majority vote and STAPLE, one structure at a time.

The five structures overlap (CTVp inside Parametrium's neighbourhood, CTVn around vessels…), so
each structure is fused from its own K binary masks, never as one multi-label map.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FUSION = ("majority", "staple")


def _stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    if len(masks) == 0:
        raise ValueError("label fusion needs at least one mask, got none")
    shapes = {np.shape(m) for m in masks}
    if len(shapes) != 1:
        raise ValueError(f"masks to fuse must share one grid, got shapes {sorted(shapes)}")
    return np.stack([np.asarray(m) > 0 for m in masks])


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Voxel-wise majority of K binary masks, ordered best atlas first.

    A voxel is inside when more than half of the K masks include it. Tie rule (even K, exactly
    K/2 votes): the voxel follows the first mask — the most similar atlas when the masks come
    from :func:`cervicontour.baselines.atlas.predict_case` — so K = 2 returns the best atlas's
    mask and a tie is never silently dropped to background.

    Args:
        masks: K arrays of one shape (non-zero = inside), best atlas first.

    Returns:
        bool array of that shape. Never modifies the inputs.

    Example:
        >>> a = np.array([1, 1, 0, 0]); b = np.array([1, 0, 1, 0]); c = np.array([0, 1, 1, 0])
        >>> majority_vote([a, b, c]).astype(int).tolist()
        [1, 1, 1, 0]
        >>> majority_vote([a, b]).astype(int).tolist()   # ties follow the first mask
        [1, 1, 0, 0]
    """
    stack = _stack(masks)
    k = stack.shape[0]
    votes = stack.sum(axis=0, dtype=np.int32)
    fused = 2 * votes > k
    if k % 2 == 0:
        fused |= (2 * votes == k) & stack[0]
    return fused


def staple(masks: Sequence[np.ndarray], *, threshold: float = 0.5) -> np.ndarray:
    """STAPLE (Warfield 2004, ``sitk.STAPLEImageFilter``) posterior thresholded at ``threshold``.

    STAPLE estimates each mask's sensitivity and specificity by expectation-maximisation and
    returns the posterior probability that a voxel is inside; a voxel is kept when the
    posterior is ≥ ``threshold``. Run on the full target grid (the background prior is the
    whole field of view, as in platipy).

    Edge cases: all masks empty → empty result (STAPLE's posterior is NaN there); all masks
    identical → that mask (STAPLE estimates sensitivity = specificity = 1). Any NaN in the
    posterior counts as outside.

    Args:
        masks: K arrays of one shape (non-zero = inside).
        threshold: posterior probability cut-off.

    Returns:
        bool array of that shape.
    """
    import SimpleITK as sitk

    stack = _stack(masks)
    if not stack.any():
        return np.zeros(stack.shape[1:], bool)
    images = [sitk.GetImageFromArray(m.astype(np.uint8)) for m in stack]
    posterior = sitk.STAPLE(images, 1.0)
    array = sitk.GetArrayViewFromImage(posterior)
    return np.nan_to_num(np.asarray(array), nan=0.0) >= threshold


def fuse(masks: Sequence[np.ndarray], *, fusion: str = "majority") -> np.ndarray:
    """Dispatch to :func:`majority_vote` or :func:`staple` by name."""
    if fusion == "majority":
        return majority_vote(masks)
    if fusion == "staple":
        return staple(masks)
    raise ValueError(f"fusion must be one of {', '.join(FUSION)}; got {fusion!r}")
