"""One image (and its masks) onto the working grid, normalised; predictions back onto the input grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cervicontour.preprocess.grid import WorkingGrid, paste, resample_to_working, to_input_grid, working_grid_of
from cervicontour.preprocess.plan import Plan
from cervicontour.errors import InputError
from cervicontour.volume import Volume, to_lps

#: soft (partial-volume) labels are stored as ``round(SOFT_SCALE · fraction)`` in uint8
SOFT_SCALE = 255


@dataclass(frozen=True)
class Prepared:
    """An image on its working grid.

    Attributes:
        image: ``(X, Y, Z)`` float32, normalised CT on the working grid (LPS axes).
        grid: the map back to the input grid.
    """

    image: np.ndarray
    grid: WorkingGrid

    def back_to_input(self, probabilities: np.ndarray, *, threshold_region: float = 0.5) -> tuple[np.ndarray, tuple[slice, ...]]:
        """Map ``(C, X, Y, Z)`` working-grid probabilities onto the input grid, all channels at once.

        Only the input-grid box under the working voxels where any channel reaches
        ``threshold_region``, grown by one working voxel, is computed; the rest is 0. With the
        default 0.5 (the rules' threshold) no input voxel outside the box could have reached 0.5
        by linear interpolation, so the masks are the same as from a full-grid resampling.

        Returns:
            ``(values, slices)``: ``values`` is ``(C, *box)`` float32, ``slices`` the box in the
            input array. An all-below-threshold input gives an empty box.
        """
        hot = np.argwhere((probabilities >= threshold_region).any(axis=0))
        if hot.size == 0:
            return np.zeros((probabilities.shape[0], 0, 0, 0), np.float32), (slice(0, 0),) * 3
        shape = np.asarray(probabilities.shape[1:])
        region = (tuple(np.maximum(hot.min(0) - 1, 0)), tuple(np.minimum(hot.max(0) + 2, shape)))
        out, slices = [], None
        for channel in probabilities:
            values, slices = to_input_grid(channel, self.grid, region=region)
            out.append(values)
        return np.stack(out), slices  # type: ignore[return-value]


def prepare_image(image: Volume, plan: Plan) -> Prepared:
    """Reorient, crop, resample (linear) and normalise ``image`` for the network.

    Args:
        image: a CT in HU on any grid (LPS, RAS, permuted, oblique). Never modified.
        plan: the model's plan.

    Returns:
        :class:`Prepared`; ``prepared.grid.shape`` may be smaller than the patch size (the
        network pads).
    """
    grid, cropped = working_grid_of(image, plan.spacing_mm, body_threshold_hu=plan.body_threshold_hu, margin_mm=plan.margin_mm)
    hu = resample_to_working(cropped, grid, order=1)
    return Prepared(plan.normalization.apply(hu), grid)


def masks_to_working(masks: list[Volume | None], grid: WorkingGrid, image: Volume, *, soft: bool = False) -> np.ndarray:
    """``(C, X, Y, Z)`` uint8 working-grid labels: linear resampling of each binary mask, then ≥ 0.5.

    ``soft=True`` keeps the resampled fraction instead, as ``round(255 · fraction)`` (partial-volume
    targets; ≥ 128 is the thresholded label). ``None`` entries (structure absent) give an all-zero
    channel. Masks must be on the image grid.
    """
    out = np.zeros((len(masks), *grid.shape), np.uint8)
    for c, mask in enumerate(masks):
        if mask is None:
            continue
        if not image.same_grid(mask):
            raise InputError(f"mask {c} is not on its image grid: {'; '.join(image.grid_differences(mask))}; run `cervicontour clean`")
        cropped = _crop_like(to_lps(mask.with_array((mask.array > 0).astype(np.float32))), grid)
        fraction = resample_to_working(cropped, grid, order=1, cval=0.0)
        out[c] = np.rint(np.clip(fraction, 0.0, 1.0) * SOFT_SCALE) if soft else fraction >= 0.5
    return out


def _crop_like(reoriented_full: Volume, grid: WorkingGrid) -> Volume:
    index = tuple(slice(a, b) for a, b in zip(grid.crop_start, grid.crop_stop))
    start = np.asarray(grid.crop_start)
    origin = reoriented_full.index_to_world(start)
    return Volume(reoriented_full.array[index], reoriented_full.spacing_mm, tuple(origin), reoriented_full.direction)


def prepare_case(case, plan: Plan, structures=None, *, soft: bool = False) -> tuple[Prepared, np.ndarray]:
    """Image and labels of a labelled case on its working grid.

    Returns:
        ``(prepared, labels)`` with ``labels`` ``(C, X, Y, Z)`` uint8, one channel per structure
        of ``structures`` (default ``plan.structures``); a structure the case lacks is all zero.
        ``soft=True``: partial-volume labels scaled to 0..255 (see :func:`masks_to_working`).
    """
    image = case.load_image()
    prepared = prepare_image(image, plan)
    names = list(structures or plan.structures)
    masks = [case.load_structure(n) if case.has(n) else None for n in names]
    return prepared, masks_to_working(masks, prepared.grid, image, soft=soft)


__all__ = ["SOFT_SCALE", "Prepared", "masks_to_working", "paste", "prepare_case", "prepare_image"]
