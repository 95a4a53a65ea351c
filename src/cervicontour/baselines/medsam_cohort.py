"""LiteMedSAM on volumes and cohorts: box prompts from a mask source, slice by slice, each slice encoded once.

Two settings share one code path and differ only in where the boxes come from:

* ``"reference"``: the test case's own reference mask (the *oracle box* of the MedSAM paper: it
  needs the answer, so it measures the segmenter given a perfect localiser, not a usable tool);
* a predictions folder (``<patient_id>/structures/<Name>.nii.gz`` on the same grid, e.g. our
  default model's): the realistic setting, no reference used.

Boxes are drawn per axial slice around each 2-D connected component of the source mask (8-connected
in the slice), so a bilateral structure (CTVn, Parametrium) gets one box per side; the masks decoded
from a slice's boxes are united. Several settings and structures run in one pass: every slice is
encoded once (:func:`~.medsam.segment_volumes`), and each setting's cost is reported as if it had
run alone (the encodes of the slices it prompts + its own decodes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cervicontour.baselines.medsam import axial_lps, axial_slice, embed_slice, segment_embedded
from cervicontour.errors import InputError
from cervicontour.structures import canonical_name
from cervicontour.volume import Volume, array_from_lps

#: ``boxes_from`` value for boxes taken from the reference mask (the oracle box).
REFERENCE = "reference"


@dataclass(frozen=True)
class Cost:
    """What :func:`segment_volumes` spent, per encoded slice and per box set decoded.

    Wall seconds say what a user waits; CPU seconds (``time.process_time``, every thread of the
    process) say what the work costs on a machine shared with other jobs.

    Attributes:
        encode: ``{k: (wall_s, cpu_s)}`` of the image encoder, one entry per slice encoded.
        decodes: ``{name: (boxes decoded, wall_s, cpu_s)}`` per box set.
    """

    encode: Mapping[int, tuple[float, float]]
    decodes: Mapping[str, tuple[int, float, float]]

    @property
    def seconds(self) -> float:
        return float(sum(w for w, _ in self.encode.values()) + sum(w for _, w, _ in self.decodes.values()))

    @property
    def cpu_seconds(self) -> float:
        return float(sum(c for _, c in self.encode.values()) + sum(c for _, _, c in self.decodes.values()))

    def only(self, slices, names) -> "Cost":
        """The cost had only box sets ``names`` run: the encodes of ``slices`` and those decodes."""
        wanted = set(slices)
        return Cost({k: v for k, v in self.encode.items() if k in wanted}, {n: self.decodes[n] for n in names if n in self.decodes})

    def to_dict(self) -> dict:
        n, boxes = len(self.encode), sum(d[0] for d in self.decodes.values())
        enc = [float(sum(v[i] for v in self.encode.values())) for i in (0, 1)]
        dec = [float(sum(d[i] for d in self.decodes.values())) for i in (1, 2)]
        return {"slices_encoded": n, "boxes_decoded": boxes, "encode_s": enc[0], "encode_cpu_s": enc[1],
                "decode_s": dec[0], "decode_cpu_s": dec[1],
                "encode_s_per_slice": enc[0] / n if n else None, "encode_cpu_s_per_slice": enc[1] / n if n else None,
                "decode_s_per_box": dec[0] / boxes if boxes else None, "decode_cpu_s_per_box": dec[1] / boxes if boxes else None}  # fmt: skip


def segment_volumes(model, volume: Volume, prompts: Mapping[str, Mapping[int, object]], *,
                    threshold: float = 0.5) -> tuple[dict[str, Volume], Cost]:  # fmt: skip
    """LiteMedSAM slice by slice for several box sets at once; each slice is encoded once.

    Args:
        model: from :func:`~.medsam.load_litemedsam`.
        volume: CT in HU (not modified); any orientation that permutations and flips map to LPS.
        prompts: ``{name: {k: [x_min, y_min, x_max, y_max]}}``: per name, one box per axial slice
            ``k`` (counted inferior → superior), in :func:`~.medsam.axial_slice` coordinates (e.g. from
            :func:`~.medsam.boxes_from_mask` on a mask of the same grid), or a list of boxes whose masks
            are united. Slices without a box stay empty.

    Returns:
        ``({name: uint8 Volume on volume's exact grid}, Cost)``; the image encoder runs once per
        slice that any name has a box on.

    Raises:
        InputError: a slice index outside the volume, a bad box, or a grid not mappable to LPS.
    """
    lps = axial_lps(volume)
    n_s = lps.shape[2]
    out = {name: np.zeros(lps.shape, dtype=np.uint8) for name in prompts}
    slices = sorted({int(k) for boxes in prompts.values() for k in boxes})
    for k in slices:
        if not 0 <= k < n_s:
            raise InputError(f"box given for axial slice {k}, but the volume has slices 0..{n_s - 1}")
    encode: dict[int, tuple[float, float]] = {}
    decodes = {name: [0, 0.0, 0.0] for name in prompts}
    for k in slices:
        t, c = time.perf_counter(), time.process_time()
        embedding = embed_slice(model, lps[:, :, k].T)
        encode[k] = (time.perf_counter() - t, time.process_time() - c)
        for name, boxes in prompts.items():
            box = boxes.get(k)
            if box is None:
                continue
            t, c = time.perf_counter(), time.process_time()
            many = np.ndim(box) == 2  # a list of boxes: their masks are united
            for one in (box if many else [box]):
                out[name][:, :, k] |= segment_embedded(model, embedding, one, threshold=threshold).T
                decodes[name][0] += 1
            decodes[name][1] += time.perf_counter() - t
            decodes[name][2] += time.process_time() - c
    masks = {name: volume.with_array(np.ascontiguousarray(array_from_lps(array, volume.direction)), source="litemedsam")
             for name, array in out.items()}  # fmt: skip
    return masks, Cost(encode, {name: tuple(d) for name, d in decodes.items()})


def component_boxes(mask: Volume, *, margin_px: int = 0) -> dict[int, list[tuple[int, int, int, int]]]:
    """Per axial slice, one box around each 8-connected component of the mask in that slice.

    Args:
        mask: a mask volume (nonzero = inside); any orientation permutations/flips map to LPS.
        margin_px: pixels added on every side (clipped to the slice).

    Returns:
        ``{k: [(x_min, y_min, x_max, y_max), ...]}`` in :func:`~.medsam.axial_slice` coordinates,
        components in label order; slices without a voxel are absent (an empty mask gives ``{}``).

    Example:
        >>> m = np.zeros((8, 6, 2), np.uint8); m[0:2, 1:3, 1] = 1; m[5:7, 2:4, 1] = 1
        >>> component_boxes(Volume(m, (1.0, 1.0, 1.0)))
        {1: [(0, 1, 1, 2), (5, 2, 6, 3)]}
    """
    from scipy import ndimage

    boxes: dict[int, list[tuple[int, int, int, int]]] = {}
    for k in range(axial_lps(mask).shape[2]):
        image = axial_slice(mask, k) != 0
        if not image.any():
            continue
        labels, _ = ndimage.label(image, structure=np.ones((3, 3), bool))
        rows, cols = image.shape
        boxes[k] = [(max(s[1].start - margin_px, 0), max(s[0].start - margin_px, 0),
                     min(s[1].stop - 1 + margin_px, cols - 1), min(s[0].stop - 1 + margin_px, rows - 1))
                    for s in ndimage.find_objects(labels)]  # fmt: skip
    return boxes


def predict_cohort(
    test_dir: str | os.PathLike,
    settings: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    *,
    structures: Sequence[str],
    cases: Sequence[str] | None = None,
    margin_px: int = 0,
    model=None,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, dict[str, dict]]:
    """Segment ``structures`` of the test cases with box prompts, for each setting; write the masks.

    Args:
        test_dir: the test cohort (its images; its reference masks for ``"reference"`` boxes).
        settings: ``{name: (boxes_from, out_dir)}``: ``boxes_from`` is :data:`REFERENCE` or a
            predictions folder; each setting writes ``OUT_DIR/<patient_id>/structures/<Name>.nii.gz``
            (a structure its source has no voxel of is written empty).
        structures: the structures to segment (vocabulary names or synonyms).
        cases: patient ids to run (default: every patient of the test cohort).
        margin_px: box margin in pixels (:func:`component_boxes`).
        model: a loaded LiteMedSAM (default: :func:`~.medsam.load_litemedsam`).
        on_case: called with each patient id once its masks are written.

    Returns:
        ``{setting: {patient_id: cost}}``, ``cost`` being what that setting alone spent on the case
        (``{"seconds", "cpu_seconds", **Cost.to_dict()}``: wall and CPU seconds, slices encoded,
        boxes decoded, per-slice and per-box rates).

    Raises:
        InputError: an unknown case id, or a box source lacking a case or structure.
    """
    from cervicontour.baselines.medsam import load_litemedsam
    from cervicontour.cohort import load_cohort, write_case

    names = [canonical_name(s) for s in structures]
    test = load_cohort(test_dir)
    chosen = list(cases) if cases is not None else sorted(test)
    unknown = [c for c in chosen if c not in test]
    if unknown:
        raise InputError(f"MedSAM cases {unknown} are not in the test cohort {test.root} (it has {sorted(test)})")
    sources = {setting: None if str(src) == REFERENCE else load_cohort(src) for setting, (src, _) in settings.items()}
    model = model if model is not None else load_litemedsam()[0]
    costs: dict[str, dict[str, dict]] = {setting: {} for setting in settings}
    for pid in chosen:
        case = test[pid]
        image = case.load_image()
        masks = {(setting, name): _source_mask(case, image, source, name, setting) for setting, source in sources.items() for name in names}
        segmented, own = segment_from_masks(model, image, masks, margin_px=margin_px, groups={s: [(s, n) for n in names] for s in settings})
        for setting, (_, out_dir) in settings.items():
            costs[setting][pid] = {"seconds": own[setting].seconds, "cpu_seconds": own[setting].cpu_seconds, **own[setting].to_dict()}
            write_case(out_dir, pid, None, {n: segmented[(setting, n)] for n in names})
        if on_case:
            on_case(pid)
    return costs


def segment_from_masks(model, image: Volume, masks: Mapping, *, margin_px: int | Mapping = 0,
                       groups: Mapping[str, Sequence] | None = None) -> tuple[dict, dict[str, Cost]]:  # fmt: skip
    """LiteMedSAM prompted by each mask's per-slice component boxes, all in one pass over the slices.

    Args:
        model: a loaded LiteMedSAM.
        image: the CT in HU.
        masks: ``{key: mask Volume on image's grid}`` (the box sources; any hashable keys).
        margin_px: box margin (:func:`component_boxes`), one for all or ``{key: margin}``.
        groups: ``{group: [keys]}``: the cost of each group is reported as if it had run alone.

    Returns:
        ``({key: LiteMedSAM's mask}, {group: Cost})``; without ``groups``, one group per key.
    """
    margins = margin_px if isinstance(margin_px, Mapping) else {key: margin_px for key in masks}
    prompts = {key: component_boxes(mask, margin_px=margins[key]) for key, mask in masks.items()}
    tags = {key: str(i) for i, key in enumerate(prompts)}
    segmented, cost = segment_volumes(model, image, {tags[key]: boxes for key, boxes in prompts.items()})
    own = {}
    for group, keys in (groups or {key: [key] for key in prompts}).items():
        slices = {k for key in keys for k in prompts[key]}
        own[group] = cost.only(slices, [tags[key] for key in keys])
    return {key: segmented[tags[key]] for key in prompts}, own


def _source_mask(case, image: Volume, source, name: str, setting: str) -> Volume:
    if source is None:
        if not case.has(name):
            raise InputError(f"patient {case.patient_id!r} has no reference {name!r} for {setting}'s oracle boxes")
        return case.load_structure(name)
    if case.patient_id not in source or not source[case.patient_id].has(name):
        raise InputError(f"{setting}: the box source {source.root} has no {name!r} for patient {case.patient_id!r}; "
                         "expected <patient_id>/structures/<Name>.nii.gz for every MedSAM case")  # fmt: skip
    mask = source[case.patient_id].load_structure(name)
    if not image.same_grid(mask):
        raise InputError(f"{setting}: {name!r} of patient {case.patient_id!r} in {source.root} is not on the CT's grid "
                         f"({'; '.join(image.grid_differences(mask))}); expected predictions on the input grid")  # fmt: skip
    return mask


__all__ = ["REFERENCE", "Cost", "component_boxes", "predict_cohort", "segment_from_masks", "segment_volumes"]


def segment_volume(model, volume: Volume, boxes_per_slice: Mapping[int, object], *,
                   threshold: float = 0.5) -> Volume:
    """LiteMedSAM slice by slice: one box per axial slice → a 3-D uint8 mask on ``volume``'s grid.

    One box set of :func:`segment_volumes` (see there for the arguments).

    Returns:
        uint8 Volume with exactly ``volume``'s shape, spacing, origin and direction.

    Raises:
        InputError: a slice index outside the volume, a bad box, or a grid not mappable to LPS.
    """
    masks, _ = segment_volumes(model, volume, {"mask": boxes_per_slice}, threshold=threshold)
    return masks["mask"]
