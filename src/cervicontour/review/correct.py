"""Box corrections on the review page: the clinician drags a box on an axial slice, LiteMedSAM
proposes the structure there, the clinician accepts it into a new edited mask (logged) or discards it.

The flow, as the server runs it:

1. :func:`propose` — the box arrives as the two corners of the drag in the viewer's world
   coordinates (NiiVue's ``mmStart``/``mmEnd``: RAS mm, the NIfTI convention). They are turned
   into LPS, then into the CT's voxel indices (nearest voxel centre), and must lie on one axial
   slice. LiteMedSAM (:mod:`cervicontour.baselines.medsam`) segments that slice with that box;
   the proposal (the box's voxels on that slice only) is written to
   ``review/proposals/<Structure>_medsam_<stamp>.nii.gz`` with a JSON sidecar, on the CT's grid.
2. :func:`accept` — the base mask (the draft, a composed or an earlier edited mask) is copied and,
   on the proposal's slice and inside its box only, replaced by the proposal; written to
   ``review/edited/<Structure>_edited_<stamp>.nii.gz`` and logged (``"action": "edit"``: base and
   result hashes, slice, box in voxels and mm, voxels added and removed). The base is never
   modified; a base that changed since the proposal is refused.
3. :func:`discard` — the proposal's files are removed; nothing is logged (nothing changed).

Proposal ids are file stems this module lists itself; no path the browser sent reaches the file
system (as everywhere in :mod:`cervicontour.review.cases`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io.atomic import file_sha256, write_text_atomic
from cervicontour.review.cases import REVIEW_FOLDER, MaskFile, ct_source, find_mask, mask_files, stamp
from cervicontour.volume import Volume, array_to_lps, to_lps

PROPOSALS = "proposals"
EDITED = "edited"
#: The smallest box side, in pixels, MedSAM is asked to fill (a click is not a box).
MIN_BOX_PX = 3
#: Slice embeddings kept per server (a clinician often draws several boxes on one slice).
EMBEDDINGS_KEPT = 8


@dataclass(frozen=True)
class SliceBox:
    """A box drawn on one axial slice, in the CT's LPS-indexed voxels.

    Attributes:
        k: the axial slice (LPS S index, inferior → superior).
        box_xyxy: ``(x_min, y_min, x_max, y_max)``: x = L index (display column), y = P index
            (display row), inclusive: the coordinates of :func:`cervicontour.baselines.medsam.axial_slice`.
    """

    k: int
    box_xyxy: tuple[int, int, int, int]


def ras_to_lps(point_mm) -> np.ndarray:
    """A world point in RAS mm (NIfTI, NiiVue) as LPS mm (DICOM, ITK): x and y change sign."""
    try:
        point = np.asarray(point_mm, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        point = np.array([])
    if point.size not in (3, 4) or not np.all(np.isfinite(point)):  # NiiVue's mm may carry a 4th (homogeneous) 1
        raise InputError(f"a world point is [x, y, z] in mm (3 finite numbers), got {point_mm!r}")
    return point[:3] * np.array([-1.0, -1.0, 1.0])


def slice_box(volume: Volume, start_ras_mm, end_ras_mm) -> SliceBox:
    """The axial slice and box that a drag from ``start`` to ``end`` (RAS mm) covers on ``volume``.

    Each corner goes to its nearest voxel centre; the box is clipped to the slice.

    Raises:
        InputError: the corners are on different axial slices (the drag was not on an axial view),
            the slice is outside the CT, the box misses the slice or is under :data:`MIN_BOX_PX`
            pixels on a side.
    """
    lps = to_lps(volume, copy=False)  # indices on it are the LPS-ordered ones (L, P, S)
    a, b = (lps.world_to_index(ras_to_lps(p)) for p in (start_ras_mm, end_ras_mm))
    n_l, n_p, n_s = lps.shape
    k0, k1 = (int(np.floor(v + 0.5)) for v in (a[2], b[2]))
    if k0 != k1:
        raise InputError(f"the box's corners lie on axial slices {k0} and {k1}; expected one axial slice — draw the box on an axial view")
    if not 0 <= k0 < n_s:
        raise InputError(f"the box lies on axial slice {k0}, outside the CT's {n_s} slices; draw it on the image")
    lo = np.floor(np.minimum(a[:2], b[:2]) + 0.5).astype(int)
    hi = np.floor(np.maximum(a[:2], b[:2]) + 0.5).astype(int)
    if hi[0] < 0 or hi[1] < 0 or lo[0] > n_l - 1 or lo[1] > n_p - 1:
        raise InputError(f"the box (voxels L {lo[0]}..{hi[0]}, P {lo[1]}..{hi[1]}) misses the {n_l}×{n_p} slice; draw it on the image")
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [n_l - 1, n_p - 1])
    if np.any(hi - lo + 1 < MIN_BOX_PX):
        raise InputError(f"the box is {hi[0] - lo[0] + 1}×{hi[1] - lo[1] + 1} pixels; expected at least {MIN_BOX_PX}×{MIN_BOX_PX} — drag a box around the structure")
    return SliceBox(k0, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))


def _editable(case: Path, mask_id: str) -> MaskFile:
    try:
        mask = find_mask(case, mask_id)
    except KeyError:
        raise InputError(f"{mask_id!r} is not a mask of {case.name}; expected one of "
                         f"{', '.join(m.id for m in mask_files(case) if m.kind != 'sub')}") from None
    if mask.kind == "sub":
        raise InputError(f"{mask_id}: a CTV component is composed, not edited; correct the draft or a composed mask")
    return mask


class Segmenter:
    """LiteMedSAM for one review server: loaded on first use, slice embeddings cached (thread-safe).

    Args:
        load: returns the model (default: :func:`cervicontour.baselines.medsam.load_litemedsam`);
            tests pass a stand-in.
    """

    def __init__(self, load=None) -> None:
        self._load = load
        self._model = None
        self._about: dict = {}
        self._lock = threading.Lock()
        self._embeddings: OrderedDict = OrderedDict()
        self._ct: tuple | None = None

    def model(self):
        with self._lock:
            if self._model is None:
                if self._load is not None:
                    self._model = self._load()
                    self._about = {"name": "LiteMedSAM (stand-in)"}
                else:
                    from cervicontour.baselines.medsam import DIST_MODULE, load_litemedsam

                    self._model, report = load_litemedsam()
                    self._about = {"name": "LiteMedSAM", "package": f"{DIST_MODULE} {report.package_version}",
                                   "weights_sha256": report.sha256, "tensors": report.tensor_count}
            return self._model

    @property
    def about(self) -> dict:
        return dict(self._about)

    def ct(self, case: Path) -> tuple[Volume, str]:
        """The case's CT (the last one read is kept) and a key that changes when its file does."""
        from cervicontour.io import read_volume

        source = ct_source(case)
        if source is None:
            raise InputError(f"{case.name}: no CT (no image.nii.gz, and prediction.json's input is gone); a box correction needs the CT")
        stat = source.stat()
        key = f"{source.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
        with self._lock:
            if self._ct is not None and self._ct[0] == key:
                return self._ct[1], key
        volume = read_volume(source)
        with self._lock:
            self._ct = (key, volume)
        return volume, key

    def segment(self, ct: Volume, ct_key: str, box: SliceBox) -> np.ndarray:
        """LiteMedSAM's ``[P rows, L cols]`` mask of slice ``box.k`` for ``box``; embeds a slice once."""
        from cervicontour.baselines.medsam import axial_slice, embed_slice, segment_embedded

        model = self.model()
        key = (ct_key, box.k)
        with self._lock:
            embedding = self._embeddings.get(key)
            if embedding is not None:
                self._embeddings.move_to_end(key)
        if embedding is None:
            embedding = embed_slice(model, axial_slice(ct, box.k))
            with self._lock:
                self._embeddings[key] = embedding
                while len(self._embeddings) > EMBEDDINGS_KEPT:
                    self._embeddings.popitem(last=False)
        return segment_embedded(model, embedding, box.box_xyxy)


def propose(case: str | os.PathLike, mask_id: str, start_ras_mm, end_ras_mm, segmenter: Segmenter, *,
            when: _dt.datetime | None = None) -> dict:
    """LiteMedSAM's proposal for ``mask_id`` inside the box dragged from ``start`` to ``end`` (RAS mm).

    Returns:
        The proposal's record (also its sidecar): ``id``, ``mask`` (the base's id), ``name``,
        ``base_sha256``, ``slice`` (``k`` and ``z_mm``), ``box_xyxy``, ``box_mm`` (LPS corners of the
        box's voxel centres), ``voxels`` (in the proposal), ``added``/``removed`` (voxels that
        accepting would change in the base), ``seconds``, ``segmenter``.

    Raises:
        InputError: unknown mask or a CTV component, no CT, a base mask not on the CT's grid, or a
            box :func:`slice_box` refuses.
    """
    from cervicontour.io import read_nifti, write_nifti

    case = Path(case)
    started = time.perf_counter()
    mask = _editable(case, mask_id)
    ct, ct_key = segmenter.ct(case)
    base = read_nifti(mask.path)
    if not base.same_grid(ct):
        raise InputError(f"{mask.id} is not on the CT's grid ({'; '.join(base.grid_differences(ct))}); a box correction edits masks drawn on the CT")
    box = slice_box(ct, start_ras_mm, end_ras_mm)
    seg = segmenter.segment(ct, ct_key, box)  # [P rows, L cols]
    x0, y0, x1, y1 = box.box_xyxy
    inside = seg[y0:y1 + 1, x0:x1 + 1].T.astype(bool)  # [L, P] inside the box
    proposal = np.zeros(ct.shape, dtype=np.uint8, order="F")
    array_to_lps(proposal, ct.direction)[x0:x1 + 1, y0:y1 + 1, box.k] = inside
    was = array_to_lps(base.array, base.direction)[x0:x1 + 1, y0:y1 + 1, box.k] != 0
    when = when or _dt.datetime.now(_dt.timezone.utc)
    proposal_id = f"{mask.name}_medsam_{stamp(when)}"
    folder = case / REVIEW_FOLDER / PROPOSALS
    corners = to_lps(ct, copy=False).index_to_world(np.array([[x0, y0, box.k], [x1, y1, box.k]], dtype=float))  # first and last voxel centres
    record = {
        "id": proposal_id, "mask": mask.id, "name": mask.name, "base_sha256": file_sha256(mask.path),
        "slice": {"k": box.k, "z_mm": round(float(corners[0][2]), 3)}, "box_xyxy": list(box.box_xyxy),
        "box_mm": [[round(float(v), 3) for v in c] for c in corners], "drag_ras_mm": [list(map(float, np.asarray(p, float)[:3])) for p in (start_ras_mm, end_ras_mm)],
        "voxels": int(inside.sum()), "added": int((inside & ~was).sum()), "removed": int((~inside & was).sum()),
        "segmenter": segmenter.about, "seconds": None,
    }
    write_nifti(ct.with_array(proposal), folder / f"{proposal_id}.nii.gz")
    record["seconds"] = round(time.perf_counter() - started, 3)
    write_text_atomic(folder / f"{proposal_id}.json", json.dumps(record, indent=2) + "\n")
    return record


def proposal_files(case: Path) -> dict[str, tuple[Path, Path]]:
    """Proposal id → (mask file, sidecar) of the proposals waiting in the case's folder."""
    folder = Path(case) / REVIEW_FOLDER / PROPOSALS
    if not folder.is_dir():
        return {}
    found = {}
    for sidecar in sorted(folder.glob("*.json")):
        image = sidecar.with_suffix(".nii.gz")
        if image.is_file() and not sidecar.is_symlink() and not image.is_symlink():
            found[sidecar.stem] = (image, sidecar)
    return found


def find_proposal(case: Path, proposal_id: str) -> tuple[Path, Path]:
    try:
        return proposal_files(case)[proposal_id]
    except KeyError:
        raise InputError(f"no proposal {proposal_id!r} waiting for {Path(case).name} (accepted, discarded, or never made); draw the box again") from None


def accept(case: str | os.PathLike, proposal_id: str, reviewer: str, *, when: _dt.datetime | None = None) -> dict:
    """Apply a proposal to its base mask as a new edited mask and log the edit.

    Returns:
        The log entry: ``action`` ``"edit"``, ``tool``, timestamp, reviewer, provenance, ``structure``,
        ``base`` (id, sha256), ``id``/``sha256`` of the edited mask, ``slice``, ``box_xyxy``,
        ``box_mm``, ``added``/``removed`` voxels and ``volume_cc`` before and after.

    Raises:
        InputError: blank reviewer, an unknown proposal, a base mask that changed or is gone since
            the proposal, or a ``review.json`` that cannot take the entry (nothing is written then).
    """
    from cervicontour.io import read_nifti, write_nifti
    from cervicontour.review.decisions import _provenance, _reviewer, append_entry, read_log

    case = Path(case)
    reviewer = _reviewer(reviewer, "accepting the correction")
    image_path, sidecar = find_proposal(case, proposal_id)
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    try:
        base_file = find_mask(case, record["mask"])
    except KeyError:
        raise InputError(f"the mask {record['mask']} that proposal {proposal_id} corrects is gone; draw the box again") from None
    if file_sha256(base_file.path) != record["base_sha256"]:
        raise InputError(f"{base_file.id} changed since proposal {proposal_id} was made; draw the box again on the current mask")
    read_log(case)  # a log that cannot take the entry is refused before any mask is written
    base, proposal = read_nifti(base_file.path), read_nifti(image_path)
    x0, y0, x1, y1 = record["box_xyxy"]
    k = record["slice"]["k"]
    edited = np.array(base.array, dtype=np.uint8, order="F", copy=True) != 0
    view = array_to_lps(edited, base.direction)
    view[x0:x1 + 1, y0:y1 + 1, k] = array_to_lps(proposal.array, proposal.direction)[x0:x1 + 1, y0:y1 + 1, k] != 0
    when = when or _dt.datetime.now(_dt.timezone.utc)
    path = write_nifti(base.with_array(edited.astype(np.uint8)), case / REVIEW_FOLDER / EDITED / f"{record['name']}_edited_{stamp(when)}.nii.gz")
    before, after = int(np.count_nonzero(base.array)), int(np.count_nonzero(edited))
    entry = {
        "action": "edit", "tool": "medsam-box", "timestamp": when.isoformat(), "reviewer": reviewer, **_provenance(case),
        "structure": record["name"], "base": {"id": base_file.id, "sha256": record["base_sha256"]},
        "id": path.relative_to(case).as_posix(), "sha256": file_sha256(path), "proposal": proposal_id,
        "slice": record["slice"], "box_xyxy": record["box_xyxy"], "box_mm": record["box_mm"],
        "added": record["added"], "removed": record["removed"], "segmenter": record.get("segmenter", {}),
        "volume_cc": {"before": round(before * base.voxel_volume_cc, 3), "after": round(after * base.voxel_volume_cc, 3)},
    }
    try:
        append_entry(case, entry)
    except Exception:
        path.unlink(missing_ok=True)  # no edited mask without its log entry
        raise
    discard(case, proposal_id)
    return entry


def discard(case: str | os.PathLike, proposal_id: str) -> dict:
    """Remove a waiting proposal (nothing was changed, so nothing is logged)."""
    image, sidecar = find_proposal(Path(case), proposal_id)
    image.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return {"discarded": proposal_id}
