"""TotalSegmentator labels for the baseline: where they come from and what their classes are.

Sources: TotalSegmentator's Python API (when it and its weights are installed), an existing
output (multi-label file with v2 ``total`` ids, or a per-class folder of ``<class>.nii.gz``), or
the synthetic phantom's own anatomy mapped onto TotalSegmentator class names (an "oracle
TotalSegmentator"). Every source ends as a :class:`TotalSegLabels` on the CT's grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.rules.findings import Finding, Severity
from cervicontour.volume import Volume

#: The pelvic part of TotalSegmentator's v2 ``total`` class map (label id → class name). Source:
#: TotalSegmentator ``totalsegmentator/map_to_binary.py``, ``class_map["total"]`` (v2.x,
#: github.com/wasserth/TotalSegmentator), identical to the real data folder's
#: ``label_map_total_v2.json``.
TOTAL_V2: dict[int, str] = {
    21: "urinary_bladder", 25: "sacrum", 26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4",
    29: "vertebrae_L3", 30: "vertebrae_L2", 31: "vertebrae_L1", 32: "vertebrae_T12", 33: "vertebrae_T11",
    34: "vertebrae_T10", 52: "aorta", 63: "inferior_vena_cava", 65: "iliac_artery_left",
    66: "iliac_artery_right", 67: "iliac_vena_left", 68: "iliac_vena_right", 75: "femur_left",
    76: "femur_right", 77: "hip_left", 78: "hip_right", 80: "gluteus_maximus_left",
    81: "gluteus_maximus_right", 82: "gluteus_medius_left", 83: "gluteus_medius_right",
    84: "gluteus_minimus_left", 85: "gluteus_minimus_right", 86: "autochthon_left",
    87: "autochthon_right", 88: "iliopsoas_left", 89: "iliopsoas_right",
}
LEVELS = ("S1", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10")
ILIAC = ("iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right")
PARA_AORTIC = ("aorta", "inferior_vena_cava")
SACRAL = ("sacrum", "vertebrae_S1")
BONES = ("hip_left", "hip_right", "sacrum", *(f"vertebrae_{v}" for v in LEVELS), "femur_left", "femur_right")
MUSCLES = tuple(f"{m}_{s}" for m in ("iliopsoas", "gluteus_maximus", "gluteus_medius", "gluteus_minimus",
                                     "autochthon") for s in ("left", "right"))
NEEDED = ("urinary_bladder", *ILIAC, *PARA_AORTIC, *BONES, *MUSCLES)
#: nnU-Net datasets holding the ``total`` weights (fast 3 mm model; full-resolution parts 1–5).
_WEIGHTS = {True: ("Dataset297",), False: tuple(f"Dataset29{i}" for i in range(1, 6))}


@dataclass(frozen=True)
class TotalSegLabels:
    """TotalSegmentator classes on a reference grid.

    Attributes:
        reference: the grid (normally the CT); only its geometry is used.
        masks: class name → boolean array on ``reference``'s grid; only non-empty classes.
        source: ``"api"``, ``"multilabel"``, ``"folder"`` or ``"phantom"``.
        path: where the labels came from (``None`` for in-memory labels).
        notes: informational findings about reading them (e.g. resampling).
    """

    reference: Volume
    masks: dict[str, np.ndarray]
    source: str
    path: str | None = None
    notes: tuple[Finding, ...] = ()


# ----------------------------------------------------------------------------------- label sources
def _on_grid(volume: Volume, reference: Volume) -> tuple[np.ndarray, bool]:
    """``volume``'s array on ``reference``'s grid (nearest neighbour), and whether it was resampled."""
    if reference.same_grid(volume):
        return np.asarray(volume.array), False
    import SimpleITK as sitk

    from cervicontour.io.nifti import image_to_volume, volume_to_image

    ref_image = volume_to_image(reference.with_array(np.zeros(reference.shape, np.uint8)))
    moved = sitk.Resample(volume_to_image(volume), ref_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return image_to_volume(moved).array, True


def _resampled_note(name: str, path: Path, volume: Volume, reference: Volume) -> Finding:
    return Finding("totalseg.resampled", None, name, Severity.INFO, f"labels on the CT grid {reference!r}",
                   f"{path} is on {volume!r}", "resampled with nearest neighbour; check the overlay")


def labels_from_multilabel(path: str | os.PathLike, reference: Volume,
                           *, label_map: Mapping[int, str] = TOTAL_V2) -> TotalSegLabels:
    """Read a TotalSegmentator multi-label file (v2 ``total`` ids by default) onto ``reference``.

    Raises:
        InputError: unreadable file, or non-integer voxel values.
    """
    from cervicontour.io import read_nifti

    path = Path(path)
    volume = read_nifti(path)
    if not np.issubdtype(volume.dtype, np.integer):
        raise InputError(f"{path}: expected an integer TotalSegmentator label map, got {volume.dtype} values; "
                         "pass the multi-label output (`TotalSegmentator --ml`) or the per-class folder")
    array, resampled = _on_grid(volume, reference)
    masks = {label_map[v]: array == v for v in np.unique(array).tolist() if v in label_map}
    notes = (_resampled_note("labels", path, volume, reference),) if resampled else ()
    return TotalSegLabels(reference, masks, "multilabel", str(path), notes)


def labels_from_folder(folder: str | os.PathLike, reference: Volume, *, source: str = "folder") -> TotalSegLabels:
    """Read the classes this baseline uses from a per-class folder (``<class>.nii.gz``).

    Raises:
        InputError: the folder holds none of the classes.
    """
    from cervicontour.io import read_nifti

    folder = Path(folder)
    masks, notes = {}, []
    for name in NEEDED:
        path = next((p for p in (folder / f"{name}.nii.gz", folder / f"{name}.nii") if p.is_file()), None)
        if path is None:
            continue
        volume = read_nifti(path)
        array, resampled = _on_grid(volume, reference)
        if resampled:
            notes.append(_resampled_note(name, path, volume, reference))
        if np.any(array):
            masks[name] = array != 0
    if not masks and not any(
        (folder / f"{n}.nii{z}").is_file() for n in NEEDED for z in (".gz", "")
    ):
        have = sorted(p.name for p in folder.glob("*.nii*"))[:5]
        raise InputError(f"{folder}: expected TotalSegmentator per-class files such as urinary_bladder.nii.gz "
                         f"and iliac_artery_left.nii.gz, found {have or 'no NIfTI files'}; pass the folder "
                         "`TotalSegmentator -i CT -o FOLDER` wrote, or its multi-label file")
    return TotalSegLabels(reference, masks, source, str(folder), tuple(notes))


def load_labels(ts_output: str | os.PathLike, reference: Volume) -> TotalSegLabels:
    """Labels from a TotalSegmentator output: a multi-label file or a per-class folder."""
    from cervicontour.io import is_nifti

    ts_output = Path(ts_output)
    if ts_output.is_dir():
        return labels_from_folder(ts_output, reference)
    if ts_output.is_file() and is_nifti(ts_output):
        return labels_from_multilabel(ts_output, reference)
    raise InputError(f"--ts-output {ts_output}: expected a TotalSegmentator multi-label .nii.gz (v2 'total' task) "
                     "or a per-class folder, but it is neither; check the path")


def totalsegmentator_status(*, fast: bool = True) -> str | None:
    """``None`` when TotalSegmentator and its ``total`` weights look installed, else why not.

    Weights are looked for in ``totalsegmentator.config.get_weights_dir()``; when that function
    does not exist they are assumed present (TotalSegmentator itself then reports a problem).
    """
    try:
        import totalsegmentator.python_api  # noqa: F401
    except ImportError:
        return "TotalSegmentator is not installed (pip install TotalSegmentator)"
    try:
        from totalsegmentator.config import get_weights_dir
    except ImportError:
        return None
    weights = Path(get_weights_dir())
    present = [p.name for p in weights.glob("Dataset*")] if weights.is_dir() else []
    missing = [d for d in _WEIGHTS[fast] if not any(n.startswith(d) for n in present)]
    if missing:
        return (f"TotalSegmentator's weights ({', '.join(missing)}) are not in {weights} and cannot be downloaded "
                "here; run TotalSegmentator once on a machine with internet access (or `totalseg_download_weights`) "
                "and copy ~/.totalsegmentator, or set TOTALSEG_HOME_DIR")
    return None


def run_totalsegmentator(ct_path: str | os.PathLike, out_folder: str | os.PathLike, *, fast: bool = True) -> Path:
    """Run TotalSegmentator's Python API on a CT, writing ``<class>.nii.gz`` into ``out_folder``.

    Only the classes this baseline uses are requested (``roi_subset``).
    """
    from totalsegmentator.python_api import totalsegmentator

    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    totalsegmentator(input=Path(ct_path), output=out_folder, ml=False, fast=fast, task="total",
                     roi_subset=list(NEEDED), quiet=True)
    return out_folder


# ------------------------------------------------------------------------------- phantom labels
#: Synthetic phantom anatomy (our vocabulary) → TotalSegmentator v2 class. The phantom's internal
#: iliac vessels go into ``iliac_*`` too (TotalSegmentator's iliac classes are common + external
#: iliac only), so the oracle gives the rule every vessel the guideline names; its one
#: ``Musc_Gluteus`` label becomes ``gluteus_maximus``; ``Bone_Pelvic`` is split into
#: ``hip_left``/``hip_right`` at the sacrum's mid-sagittal plane.
PHANTOM_TO_TOTALSEG: dict[str, str] = {
    "Bladder": "urinary_bladder", "A_Aorta": "aorta", "V_Venacava_I": "inferior_vena_cava",
    **{f"{v}_Iliac_{k}_{s}": f"iliac_{'artery' if v == 'A' else 'vena'}_{w}"
       for v in "AV" for k in ("Cm", "Ext", "Int") for s, w in (("L", "left"), ("R", "right"))},
    "Sacrum": "sacrum", "VB_L4": "vertebrae_L4", "VB_L5": "vertebrae_L5",
    "Femur_Head_L": "femur_left", "Femur_Head_R": "femur_right",
    "Musc_Iliopsoas_L": "iliopsoas_left", "Musc_Iliopsoas_R": "iliopsoas_right",
    "Musc_Gluteus_L": "gluteus_maximus_left", "Musc_Gluteus_R": "gluteus_maximus_right",
    "Kidney_L": "kidney_left", "Kidney_R": "kidney_right", "Bowel_Small": "small_bowel", "Colon_Sigmoid": "colon",
}


def world_coordinate(reference: Volume, axis: int) -> np.ndarray:
    """World LPS coordinate ``axis`` (0 x→L, 1 y→P, 2 z→S) of every voxel centre, broadcastable, mm."""
    step = reference.direction[axis] * np.asarray(reference.spacing_mm)
    out = np.asarray(reference.origin_mm[axis], float)
    for a in range(3):
        shape = [1, 1, 1]
        shape[a] = reference.shape[a]
        out = out + (np.arange(reference.shape[a]) * step[a]).reshape(shape)
    return out


def phantom_to_totalseg(masks: Mapping[str, Volume]) -> dict[str, np.ndarray]:
    """Map phantom anatomy masks (canonical names, one grid) onto TotalSegmentator classes.

    Returns:
        class name → boolean array (unions where several phantom labels map to one class).
        Names without a counterpart (targets, ``External``) are ignored.
    """
    out: dict[str, np.ndarray] = {}
    for name, volume in masks.items():
        target = PHANTOM_TO_TOTALSEG.get(name)
        if target is not None:
            out[target] = out.get(target, False) | (np.asarray(volume.array) != 0)
    if "Bone_Pelvic" in masks:
        pelvis = masks["Bone_Pelvic"]
        x = world_coordinate(pelvis, 0)
        centre_of = out["sacrum"] if "sacrum" in out and out["sacrum"].any() else pelvis.array != 0
        mid = float(np.broadcast_to(x, pelvis.shape)[centre_of].mean()) if centre_of.any() else 0.0
        bone = pelvis.array != 0
        out["hip_left"], out["hip_right"] = bone & (x > mid), bone & (x <= mid)  # LPS: +x = patient left
    return {k: v for k, v in out.items() if v.any()}


def labels_from_phantom(masks: Mapping[str, Volume]) -> TotalSegLabels:
    """An "oracle TotalSegmentator": the phantom's own anatomy as TotalSegmentator labels."""
    if not masks:
        raise InputError("no phantom masks given: expected anatomy such as A_Iliac_Ext_L, Sacrum, Bone_Pelvic")
    reference = next(iter(masks.values()))
    for name, volume in masks.items():
        if not reference.same_grid(volume):
            raise InputError(f"phantom mask {name!r} is not on the grid of the others "
                             f"({'; '.join(reference.grid_differences(volume))})")
    return TotalSegLabels(reference, phantom_to_totalseg(masks), "phantom")
