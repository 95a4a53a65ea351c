"""Known corruptions of a copy of a cohort, for the validate and clean suites.

Each function edits files inside ``root`` (a copy; never the session's shared cohort) the way the
hospital's data go wrong, and touches nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from cervicontour.io import read_nifti, write_nifti
from cervicontour.structures import PRIMARY
from cervicontour.volume import Volume


def copy_cohort(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def mask_path(root: Path, pid: str, name: str) -> Path:
    folder = root / pid / "structures"
    return folder / f"{name}.nii.gz" if name in PRIMARY else folder / "sub" / f"{name}.nii.gz"


def tree_hashes(root: Path) -> dict[str, str]:
    """``relative path → sha256`` of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def finding_keys(findings) -> set[tuple]:
    return {(f.check, f.patient_id, f.structure, f.severity.value) for f in findings}


# --------------------------------------------------------------------------- corruptions
def shift_origin(root: Path, pid: str, name: str, shift_mm: float) -> None:
    """Move a mask's origin along the patient's left by ``shift_mm`` (voxels unchanged)."""
    path = mask_path(root, pid, name)
    m = read_nifti(path)
    write_nifti(Volume(m.array, m.spacing_mm, (m.origin_mm[0] + shift_mm, *m.origin_mm[1:]), m.direction), path)


def rescale_mask(root: Path, pid: str, name: str, value: float, dtype=np.uint8) -> None:
    """Store a mask's inside as ``value`` (0/255 masks, float masks)."""
    path = mask_path(root, pid, name)
    m = read_nifti(path)
    write_nifti(m.with_array((m.array > 0).astype(dtype) * dtype(value)), path)


def reorient_mask(root: Path, pid: str, name: str) -> None:
    """Store a mask with axes 0 and 1 reversed: same voxels at the same world positions."""
    path = mask_path(root, pid, name)
    m = read_nifti(path)
    corner = m.index_to_world(np.array([m.shape[0] - 1, m.shape[1] - 1, 0]))
    write_nifti(Volume(m.array[::-1, ::-1, :].copy(), m.spacing_mm, tuple(corner), m.direction @ np.diag([-1.0, -1.0, 1.0])), path)


def multi_label_mask(root: Path, pid: str, name: str) -> None:
    """Write label 2 into the upper half of a mask (a label map saved as a mask)."""
    path = mask_path(root, pid, name)
    m = read_nifti(path)
    a = (m.array > 0).astype(np.uint8)
    k = np.flatnonzero(a.any(axis=(0, 1)))
    a[:, :, k[len(k) // 2] :] *= 2
    write_nifti(m.with_array(a), path)


def delete_mask(root: Path, pid: str, name: str) -> None:
    mask_path(root, pid, name).unlink()


def rename_to_synonym(root: Path, pid: str, name: str, new_name: str) -> None:
    """Move a mask beside the image under a synonym (``rectum.nii.gz``)."""
    mask_path(root, pid, name).rename(root / pid / new_name)


def set_header_text(path: Path, field: str, text: bytes) -> None:
    """Write ``text`` into a NIfTI-1 free-text header field, in place."""
    offset, length = {"descrip": (148, 80), "aux_file": (228, 24), "db_name": (14, 18)}[field]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset : offset + length] = text[:length].ljust(length, b"\0")
    path.write_bytes(gzip.compress(bytes(raw)))


def add_slices(root: Path, pid: str, fraction: float) -> int:
    """Append ``fraction`` × n slices at the superior end of the image (air) and every mask (0)."""
    files = [root / pid / "image.nii.gz", *sorted((root / pid / "structures").rglob("*.nii.gz"))]
    added = 0
    for path in files:
        v = read_nifti(path)
        axis = int(np.argmax(np.abs(v.direction[2, :])))
        added = int(round(fraction * v.shape[axis]))
        shape = list(v.shape)
        shape[axis] = added
        fill = -1000 if path.name == "image.nii.gz" else 0
        extra = np.full(shape, fill, v.array.dtype)
        # append where the superior end is: index end when the axis points superior
        up = v.direction[2, axis] > 0
        array = np.concatenate([v.array, extra] if up else [extra, v.array], axis=axis)
        origin = v.origin_mm if up else tuple(v.index_to_world(np.eye(3)[axis] * -added))
        write_nifti(Volume(array, v.spacing_mm, origin, v.direction), path)
    return added


def make_4d(root: Path, pid: str) -> None:
    """Replace the image with two copies of it stacked along a 4th dimension."""
    import SimpleITK as sitk

    path = root / pid / "image.nii.gz"
    image = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(path))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def draw_ctvn_into_ctvp(root: Path, pid: str, *, depth_mm: float = 10.0, radius_mm: float = 5.0) -> int:
    """Extend CTVn with a tube from its nearest point to CTVp, ``depth_mm`` into CTVp.

    The tube avoids the Anorectum, and is added to LN_Pelvic too (when present) so that CTVn
    stays the union of its parts: the only rule broken is CTVn ∩ CTVp = ∅.

    Returns:
        Voxels now shared by CTVn and CTVp.
    """
    ctvn_v = read_nifti(mask_path(root, pid, "CTVn"))
    ctvn = ctvn_v.array > 0
    ctvp = read_nifti(mask_path(root, pid, "CTVp")).array > 0
    rectum = read_nifti(mask_path(root, pid, "Anorectum")).array > 0
    spacing = np.asarray(ctvn_v.spacing_mm)
    dist, nearest = ndimage.distance_transform_edt(~ctvn, sampling=spacing, return_indices=True)
    candidates = np.argwhere(ctvp)
    p = candidates[np.argmin(dist[tuple(candidates.T)])]
    q = nearest[:, p[0], p[1], p[2]]
    p_mm, q_mm = p * spacing, q * spacing
    u = (p_mm - q_mm) / np.linalg.norm(p_mm - q_mm)
    end = p_mm + u * depth_mm
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in ctvn.shape], indexing="ij"), axis=-1) * spacing
    seg = end - q_mm
    t = np.clip(((grid - q_mm) @ seg) / (seg @ seg), 0.0, 1.0)
    tube = np.linalg.norm(grid - (q_mm + t[..., None] * seg), axis=-1) <= radius_mm
    chunk = tube & ~rectum & ~ctvn
    write_nifti(ctvn_v.with_array((ctvn | chunk).astype(np.uint8)), mask_path(root, pid, "CTVn"))
    pelvic = mask_path(root, pid, "LN_Pelvic")
    if pelvic.is_file():
        ln = read_nifti(pelvic)
        write_nifti(ln.with_array(((ln.array > 0) | chunk).astype(np.uint8)), pelvic)
    return int(np.count_nonzero(chunk & ctvp))
