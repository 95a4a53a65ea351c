"""Masks for export: found in a case folder, and placed on the CT's voxels without interpolation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, STRUCTURES, try_canonical_name
from cervicontour.volume import Volume


def onto_grid(reference: Volume, mask: Volume, *, name: str = "mask") -> np.ndarray:
    """``mask`` as a boolean array on ``reference``'s voxels, when both lie on one voxel lattice.

    Masks written in another storage orientation (e.g. a RAS NIfTI of an LPS CT) or cropped to a
    box are re-indexed exactly (axis permutations, flips and whole-voxel offsets); voxels of the
    reference outside the mask's box are outside. Nothing is interpolated.

    Raises:
        InputError: the mask's voxel centres do not coincide with the reference's (other spacing,
            rotation or a sub-voxel shift) — resample it onto the CT first.
    """
    if reference.same_grid(mask):
        return np.asarray(mask.array) != 0
    # Row r of `steps`: how the mask index changes for one step along reference axis r.
    b = mask.world_to_index(np.asarray(reference.origin_mm))
    steps = mask.world_to_index(reference.index_to_world(np.eye(3))) - b
    axes = np.argmax(np.abs(steps), axis=1)  # mask axis that reference axis r runs along
    signs = np.sign(steps[range(3), axes])
    expected = np.zeros((3, 3))
    expected[range(3), axes] = signs
    if sorted(axes) != [0, 1, 2] or not np.allclose(steps, expected, atol=1e-3) or not np.allclose(b, np.round(b), atol=1e-2):
        raise InputError(
            f"{name}: its voxels do not coincide with the CT's ({'; '.join(reference.grid_differences(mask))}); "
            "expected a mask on the CT grid (any axis order or flip) — resample it onto the CT series first"
        )
    offset = np.round(b).astype(int)
    source = np.transpose(np.asarray(mask.array) != 0, axes)  # source axis r = mask axis axes[r]
    out = np.zeros(reference.shape, bool)
    picks, keeps = [], []
    for axis in range(3):
        index = signs[axis].astype(int) * np.arange(reference.shape[axis]) + offset[axes[axis]]
        keep = (index >= 0) & (index < source.shape[axis])
        picks.append(index[keep])
        keeps.append(np.flatnonzero(keep))
    out[np.ix_(*keeps)] = source[np.ix_(*picks)]
    return out


def split_labels(masks: dict[str, Volume], label_names: dict[int, str] | None = None) -> dict[str, Volume]:
    """One binary mask per label of every label map among ``masks``; binary masks pass unchanged.

    A mask with two or more distinct non-zero values (e.g. 0..5) is a label map: value ``n``
    becomes the mask named ``label_names[n]`` when given, else ``label_<n>``. A mask with one
    non-zero value (0/1, 0/255) is one structure, as before.

    Raises:
        InputError: a label map with non-integer values, or two masks ending up with one name.

    Example:
        >>> import numpy as np
        >>> labels = Volume(np.array([[[0, 1], [2, 2]]], np.uint8), (1, 1, 1))
        >>> sorted(split_labels({"labels": labels}, {2: "Bladder"}))
        ['Bladder', 'label_1']
    """
    out: dict[str, Volume] = {}
    for given, mask in masks.items():
        array = np.asarray(mask.array)
        values = np.unique(array[array != 0])
        if values.size < 2:
            split = {given: mask}
        elif not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise InputError(f"{given}: a mask with {values.size} different non-integer values ({values[:4].tolist()} ...); "
                             "expected a binary mask or a label map of integers 0..N")
        else:
            split = {(label_names or {}).get(int(v)) or f"label_{int(v)}": mask.with_array((array == v).astype(np.uint8)) for v in values}
        for name, part in split.items():
            if name in out:
                raise InputError(f"two masks are named {name!r} (one from {given!r}); keep one, or name the labels (--label-names 1=Bladder,...)")
            out[name] = part
    return out


def collect_masks(folder: str | os.PathLike) -> dict[str, Path]:
    """Mask files to export from a case folder, a ``structures/`` folder or a predict output.

    Looks in ``folder``, ``folder/sub``, ``folder/structures``, ``folder/structures/sub`` and ``folder/planning``
    (margins written by ``cervicontour margin``) for ``.nii``/``.nii.gz`` files, skipping the image
    (``image``/``ct`` stems). Names resolve through the vocabulary; unknown names keep their file stem.
    Order: the primary five, then the vocabulary's order, then unknown names alphabetically.

    Raises:
        InputError: the folder is missing, holds no masks, or two files name one structure.
    """
    from cervicontour.cohort import IMAGE_STEMS
    from cervicontour.io import is_nifti, strip_nifti_suffix

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; expected a case folder or its structures/ folder")
    found: dict[str, Path] = {}
    for sub in (folder, folder / "sub", folder / "structures", folder / "structures" / "sub", folder / "planning"):
        if not sub.is_dir():
            continue
        for path in sorted(p for p in sub.iterdir() if p.is_file() and is_nifti(p)):
            stem = strip_nifti_suffix(path.name)
            if stem.lower() in IMAGE_STEMS:
                continue
            name = try_canonical_name(stem) or stem
            if name in found:
                raise InputError(f"{folder}: two files for {name!r}: {found[name]} and {path}; keep one")
            found[name] = path
    if not found:
        raise InputError(f"{folder}: no mask files (.nii.gz) found in it, structures/, structures/sub/ or planning/")
    order = {name: i for i, name in enumerate([*PRIMARY, *STRUCTURES])}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
