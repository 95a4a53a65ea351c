"""Training data: cases on the working grid (cached), seeded patch sampling.

Every random choice of step ``s`` on rank ``r`` comes from ``numpy.random.default_rng([seed, s, r])``,
so a resumed run draws exactly the patches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from cervicontour.io.atomic import atomic_path
from cervicontour.preprocess import Plan, prepare_case
from cervicontour.preprocess.prepare import SOFT_SCALE


@dataclass(frozen=True)
class CaseArrays:
    """One labelled case on the working grid: ``image (X, Y, Z)`` float32, ``labels (C, X, Y, Z)`` uint8.

    ``known[c]`` is False when channel ``c`` was not contoured for this patient (see
    :func:`known_channels`): training leaves it out of the loss instead of learning "empty".
    ``label_max`` is 1 for binary labels and ``SOFT_SCALE`` (255) for partial-volume labels:
    the target is ``labels / label_max``.
    """

    patient_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    known: np.ndarray = field(default=None)  # type: ignore[assignment]
    label_max: int = 1

    def __post_init__(self) -> None:
        if self.known is None:
            object.__setattr__(self, "known", np.ones(self.labels.shape[0], bool))

    @property
    def threshold(self) -> int:
        """Smallest stored label value that counts as inside (fraction ≥ 0.5)."""
        return (self.label_max + 1) // 2

    @cached_property
    def present(self) -> tuple[int, ...]:
        """Channels with at least one inside voxel (computed once per case, not per sampled patch)."""
        return tuple(c for c in range(self.labels.shape[0]) if (self.labels[c] >= self.threshold).any())

    def mask(self, channel: int) -> np.ndarray:
        """Channel ``channel`` as a binary mask (fraction ≥ 0.5), uint8."""
        return (self.labels[channel] >= self.threshold).astype(np.uint8)


def known_channels(case, structures) -> np.ndarray:
    """Which channels a labelled case defines: present, or absent where absence means "none".

    An absent ``GTVn`` means no pathological node (a known, empty channel); an absent
    ``LN_ParaAortic`` means the clinician did not include that group (unknown, not empty).
    """
    from cervicontour.structures import ABSENT_MEANS_EMPTY

    return np.array([case.has(n) or n in ABSENT_MEANS_EMPTY for n in structures], bool)


def _cache_key(case, plan: Plan, structures, soft: bool = False) -> str:
    stat = Path(case.image_path).stat() if case.image_path else None
    payload = {
        "plan": plan.sha256(),
        "structures": list(structures),
        **({"soft": True} if soft else {}),  # binary caches keep their key
        "image": str(case.image_path),
        "mtime": stat.st_mtime_ns if stat else 0,
        "size": stat.st_size if stat else 0,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def load_arrays(cases, plan: Plan, structures, *, cache_dir: Path | None = None, on_case=None, soft: bool = False) -> list[CaseArrays]:
    """Prepare labelled cases (image + the ``structures`` as channels), caching each as ``.npz``.

    ``soft=True``: partial-volume labels (``label_max`` 255), see :func:`~cervicontour.preprocess.prepare.masks_to_working`.
    """
    label_max = SOFT_SCALE if soft else 1
    out = []
    for case in cases:
        known = known_channels(case, structures)
        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / f"{case.patient_id}-{_cache_key(case, plan, structures, soft)}.npz"
            if path.is_file():
                with np.load(path) as z:
                    out.append(CaseArrays(case.patient_id, z["image"], z["labels"], plan.spacing_mm, known, label_max))
                if on_case:
                    on_case(case.patient_id)
                continue
        prepared, labels = prepare_case(case, plan, structures, soft=soft)
        item = CaseArrays(case.patient_id, prepared.image.astype(np.float32), labels, plan.spacing_mm, known, label_max)
        if path is not None:
            with atomic_path(path) as tmp:
                np.savez(tmp, image=item.image, labels=item.labels)
        out.append(item)
        if on_case:
            on_case(case.patient_id)
    return out


def split_cases(cases, *, fold: int, folds: int, seed: int) -> tuple[list, list]:
    """``(train, validation)`` for one fold: a seeded permutation of the sorted patient ids.

    ``folds == 1`` trains on every case and validates on none.
    """
    cases = sorted(cases, key=lambda c: c.patient_id)
    if folds <= 1 or len(cases) < 2:
        return cases, []
    order = np.random.default_rng([seed, 7919]).permutation(len(cases))
    val = [cases[i] for n, i in enumerate(order) if n % folds == fold]
    train = [cases[i] for n, i in enumerate(order) if n % folds != fold]
    if not train:
        return cases, []
    return train, val


def crop_patch(array: np.ndarray, start, size, pad_value: float) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, padded with ``pad_value`` outside."""
    lead = array.shape[:-3]
    out = np.full((*lead, *size), pad_value, dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, array.shape[-3:]):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = array[(..., *src)]
    return out


def sample_batch(
    data: list[CaseArrays],
    patch_size,
    batch_size: int,
    rng: np.random.Generator,
    *,
    fg_oversample: float,
    pad_value: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch: ``images (B, 1, *patch)`` float32, ``labels (B, C, *patch)`` uint8 (targets are
    ``labels / item.label_max``) and ``known (B, C)`` bool (which channels each sample's patient defines).

    A patch is centred on a random foreground voxel of a random present structure with
    probability ``fg_oversample``, else anywhere in the volume (nnU-Net's scheme).
    """
    size = np.asarray(patch_size)
    images, labels, known = [], [], []
    for _ in range(batch_size):
        item = data[int(rng.integers(len(data)))]
        shape = np.asarray(item.image.shape)
        present = item.present
        if present and rng.random() < fg_oversample:
            channel = present[int(rng.integers(len(present)))]
            voxels = np.flatnonzero(item.labels[channel] >= item.threshold)
            centre = np.asarray(np.unravel_index(voxels[int(rng.integers(voxels.size))], shape))
        else:
            centre = np.asarray([int(rng.integers(max(n, 1))) for n in shape])
        start = centre - size // 2 + np.asarray([int(rng.integers(-s // 4, s // 4 + 1)) for s in size])
        # keep the patch inside the volume where it fits
        start = np.where(shape >= size, np.clip(start, 0, shape - size), (shape - size) // 2)
        images.append(crop_patch(item.image, start, size, pad_value)[None])
        labels.append(crop_patch(item.labels, start, size, 0))
        known.append(item.known)
    return np.stack(images), np.stack(labels), np.stack(known)
