"""Box corrections on the review page (LiteMedSAM proposes, the clinician accepts): geometry, files, log, API.

The segmenter is a stand-in that fills the box (``medsam_stub.BoxFiller``), so the proposal must be
exactly the voxels whose centres lie inside the dragged box on its slice. Those voxels are found
here from SimpleITK's own index → physical point mapping (``TransformIndexToPhysicalPoint``), not
from cervicontour's geometry; files are read back with nibabel and hashed with hashlib. The real
LiteMedSAM runs in the browser test (``tests/test_review_browser.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")

from fastapi.testclient import TestClient  # noqa: E402
from medsam_stub import BoxFiller  # noqa: E402

from cervicontour.errors import InputError  # noqa: E402
from cervicontour.io import write_nifti  # noqa: E402
from cervicontour.review import correct  # noqa: E402
from cervicontour.review.server import create_app  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

TOKEN = "c" * 8 + "0123456789abcdef"
#: Native array axes → world direction columns. The LPS-indexed extent is always L 128, P 96, S 8
#: (longest side 128: the stand-in's 256 frame maps back to pixels exactly).
GRIDS = {
    "LPS": (np.eye(3), (128, 96, 8)),
    "RAS": (np.diag([-1.0, -1.0, 1.0]), (128, 96, 8)),
    "flipped-S": (np.diag([1.0, -1.0, -1.0]), (128, 96, 8)),
    "permuted": (np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), (96, 128, 8)),  # axis 0 → anterior, axis 1 → L
}
SPACING = (0.8, 1.1, 2.5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def world_lps(direction: np.ndarray, shape, origin) -> np.ndarray:
    """Every voxel centre's LPS mm, ``[*shape, 3]``, from SimpleITK's mapping."""
    image = sitk.Image([int(n) for n in shape], sitk.sitkUInt8)
    image.SetSpacing(SPACING)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(float(v) for v in np.asarray(direction).reshape(-1)))
    out = np.empty((*shape, 3))
    for index in np.ndindex(*shape):
        out[index] = image.TransformIndexToPhysicalPoint(tuple(int(i) for i in index))
    return out


def make_case(root: Path, name: str) -> tuple[Path, Volume, np.ndarray]:
    """A case folder: CT + a Bladder draft (a block) + one CTV part, on the named grid."""
    direction, shape = GRIDS[name]
    origin = (-60.0, 25.0, -310.0)
    rng = np.random.default_rng(3)
    ct = Volume(rng.integers(-100, 100, size=shape).astype(np.int16), SPACING, origin, direction)
    case = root / name / "CASE01"
    write_nifti(ct, case / "image.nii.gz")
    world = world_lps(direction, shape, origin)
    draft = (np.abs(world[..., 0] - world[..., 0].mean()) < 20) & (np.abs(world[..., 1] - world[..., 1].mean()) < 15)
    write_nifti(ct.with_array(draft.astype(np.uint8)), case / "structures" / "Bladder.nii.gz")
    write_nifti(ct.with_array(draft.astype(np.uint8)), case / "structures" / "sub" / "Cervix.nii.gz")
    return case, ct, world


def drag_for(world: np.ndarray, *, jitter: float = 0.3):
    """A drag (RAS mm, as NiiVue reports it) between two voxel centres of one axial plane, and the
    voxels whose centres lie inside it (on that plane), from world coordinates alone."""
    xs, ys, zs = (np.unique(np.round(world[..., a], 6)) for a in range(3))
    xa, xb, ya, yb, z0 = xs[30], xs[70], ys[20], ys[60], zs[5]
    expected = ((np.round(world[..., 0], 6) >= xa) & (np.round(world[..., 0], 6) <= xb) & (np.round(world[..., 1], 6) >= ya)
                & (np.round(world[..., 1], 6) <= yb) & (np.abs(world[..., 2] - z0) < 1e-6))
    # corners given in the other order (max then min), each nudged by less than half a voxel
    start_ras = [-(xb + jitter * SPACING[0]), -(ya - jitter * SPACING[1]), z0 + jitter * SPACING[2]]
    end_ras = [-(xa - jitter * SPACING[0]), -(yb + jitter * SPACING[1]), z0 - jitter * SPACING[2]]
    return start_ras, end_ras, expected


@pytest.mark.parametrize("grid", sorted(GRIDS))
def test_the_proposal_is_the_dragged_box_on_its_slice_on_every_grid(tmp_path, grid):
    case, ct, world = make_case(tmp_path, grid)
    start, end, expected = drag_for(world)
    assert expected.sum() == 41 * 41  # 41 voxel centres each way on one plane (by construction)
    record = correct.propose(case, "structures/Bladder.nii.gz", start, end, correct.Segmenter(BoxFiller))
    proposal = nib.load(case / "review" / "proposals" / f"{record['id']}.nii.gz")
    assert np.array_equal(np.asarray(proposal.dataobj) != 0, expected)
    ct_header = nib.load(case / "image.nii.gz")
    assert np.allclose(proposal.affine, ct_header.affine)  # on the CT's grid
    assert record["voxels"] == 41 * 41
    draft = np.asarray(nib.load(case / "structures" / "Bladder.nii.gz").dataobj) != 0
    assert record["added"] == int((expected & ~draft).sum()) and record["removed"] == 0  # a filled box removes nothing
    # box_mm: the LPS corners of its first and last voxel centres (from the world grid)
    corners = np.array(record["box_mm"])
    inside = world[expected]
    assert np.allclose(corners.min(axis=0), inside.min(axis=0), atol=1e-3) and np.allclose(corners.max(axis=0), inside.max(axis=0), atol=1e-3)
    assert json.loads((case / "review" / "proposals" / f"{record['id']}.json").read_text())["box_xyxy"] == record["box_xyxy"]


def test_accept_replaces_the_box_on_its_slice_only_and_logs_the_edit(tmp_path):
    case, ct, world = make_case(tmp_path, "RAS")
    draft_path = case / "structures" / "Bladder.nii.gz"
    draft_before = _sha(draft_path)
    draft = np.asarray(nib.load(draft_path).dataobj) != 0
    start, end, expected = drag_for(world)
    # a stand-in that proposes nothing: accepting it erases the draft inside the box on that slice
    empty = BoxFiller()
    empty.mask_decoder = lambda **_: (torch.full((1, 1, 256, 256), -10.0), None)
    record = correct.propose(case, "structures/Bladder.nii.gz", start, end, correct.Segmenter(lambda: empty))
    assert record["voxels"] == 0 and record["removed"] == int((draft & expected).sum()) > 0 and record["added"] == 0
    entry = correct.accept(case, record["id"], "Dr Box")
    edited = np.asarray(nib.load(case / entry["id"]).dataobj) != 0
    assert np.array_equal(edited, draft & ~expected)  # only the box on its slice changed
    assert _sha(draft_path) == draft_before  # the draft is kept
    assert entry["sha256"] == _sha(case / entry["id"]) and entry["base"] == {"id": "structures/Bladder.nii.gz", "sha256": draft_before}
    assert entry["id"].startswith("review/edited/Bladder_edited_") and entry["structure"] == "Bladder"
    voxel_cc = float(np.prod(SPACING)) / 1000
    assert entry["volume_cc"] == {"before": round(draft.sum() * voxel_cc, 3), "after": round(edited.sum() * voxel_cc, 3)}
    log = json.loads((case / "review.json").read_text())["entries"]
    assert [e["action"] for e in log] == ["edit"] and log[0]["reviewer"] == "Dr Box" and log[0]["removed"] == record["removed"]
    assert not (case / "review" / "proposals" / f"{record['id']}.nii.gz").exists()  # the proposal is used up
    with pytest.raises(InputError, match="no proposal"):
        correct.accept(case, record["id"], "Dr Box")
    # the edited mask is listed and can be corrected again (a filled box brings the box back)
    again = correct.propose(case, entry["id"], start, end, correct.Segmenter(BoxFiller))
    second = correct.accept(case, again["id"], "Dr Box")
    assert np.array_equal(np.asarray(nib.load(case / second["id"]).dataobj) != 0, edited | expected)
    assert second["base"]["id"] == entry["id"]


def test_refusals(tmp_path):
    case, ct, world = make_case(tmp_path, "LPS")
    segmenter = correct.Segmenter(BoxFiller)
    start, end, _ = drag_for(world, jitter=0.0)
    with pytest.raises(InputError, match="axial slices 5 and 6"):
        correct.propose(case, "structures/Bladder.nii.gz", start, [end[0], end[1], end[2] + SPACING[2]], segmenter)
    with pytest.raises(InputError, match="pixels; expected at least 3"):
        correct.propose(case, "structures/Bladder.nii.gz", start, [start[0] - SPACING[0], start[1], start[2]], segmenter)
    with pytest.raises(InputError, match="misses"):
        correct.propose(case, "structures/Bladder.nii.gz", [500.0, 500.0, start[2]], [480.0, 480.0, start[2]], segmenter)
    with pytest.raises(InputError, match="outside the CT"):
        correct.propose(case, "structures/Bladder.nii.gz", [start[0], start[1], 900.0], [end[0], end[1], 900.0], segmenter)
    with pytest.raises(InputError, match="composed, not edited"):
        correct.propose(case, "structures/sub/Cervix.nii.gz", start, end, segmenter)
    with pytest.raises(InputError, match="not a mask"):
        correct.propose(case, "../image.nii.gz", start, end, segmenter)
    with pytest.raises(InputError, match="3 finite numbers"):
        correct.propose(case, "structures/Bladder.nii.gz", [1.0, "x", 2.0], end, segmenter)
    # a base that changed since the proposal is refused; a blank reviewer is refused; discard leaves no file
    record = correct.propose(case, "structures/Bladder.nii.gz", start, end, segmenter)
    with pytest.raises(InputError, match="reviewer"):
        correct.accept(case, record["id"], "  ")
    bladder = case / "structures" / "Bladder.nii.gz"
    write_nifti(ct.with_array(np.zeros(ct.shape, np.uint8)), bladder)
    with pytest.raises(InputError, match="changed since"):
        correct.accept(case, record["id"], "Dr Box")
    assert not (case / "review" / "edited").exists() and not (case / "review.json").exists()
    assert correct.discard(case, record["id"]) == {"discarded": record["id"]}
    assert correct.proposal_files(case) == {}
    # a mask off the CT's grid
    write_nifti(Volume(np.zeros((4, 4, 4), np.uint8), SPACING), bladder)
    with pytest.raises(InputError, match="not on the CT's grid"):
        correct.propose(case, "structures/Bladder.nii.gz", start, end, segmenter)


def test_through_the_api_and_the_rtstruct_choice(tmp_path):
    case, ct, world = make_case(tmp_path, "permuted")
    client = TestClient(create_app(case.parent, token=TOKEN, medsam=BoxFiller), headers={"X-Review-Token": TOKEN})
    start, end, expected = drag_for(world)
    answer = client.post("/api/cases/CASE01/medsam/propose", json={"mask": "structures/Bladder.nii.gz", "start_mm": start, "end_mm": end})
    assert answer.status_code == 200, answer.text
    record = answer.json()
    served = client.get(f"/api/cases/CASE01/proposals/{record['id']}.nii.gz")
    assert served.content == (case / "review" / "proposals" / f"{record['id']}.nii.gz").read_bytes()
    assert client.get("/api/cases/CASE01/proposals/nothing.nii.gz").status_code == 400
    bad = client.post("/api/cases/CASE01/medsam/propose", json={"mask": "structures/Bladder.nii.gz", "start_mm": start, "end_mm": [*end[:2], end[2] + 10]})
    assert bad.status_code == 400 and "one axial slice" in bad.json()["detail"]
    assert client.post("/api/cases/CASE01/medsam/accept", json={"proposal": record["id"], "reviewer": ""}).status_code == 400
    accepted = client.post("/api/cases/CASE01/medsam/accept", json={"proposal": record["id"], "reviewer": "Dr API"})
    assert accepted.status_code == 200, accepted.text
    entry = accepted.json()["entry"]
    masks = {m["id"]: m for m in client.get("/api/cases/CASE01").json()["masks"]}
    assert masks[entry["id"]]["kind"] == "edited" and masks[entry["id"]]["name"] == "Bladder"
    assert masks[entry["id"]]["volume_cc"] == entry["volume_cc"]["after"]
    assert client.get("/api/cases/CASE01/review").json()["entries"][-1]["action"] == "edit"
    other = client.post("/api/cases/CASE01/medsam/propose", json={"mask": "structures/Bladder.nii.gz", "start_mm": start, "end_mm": end}).json()
    assert client.post("/api/cases/CASE01/medsam/discard", json={"proposal": other["id"]}).json() == {"discarded": other["id"]}
    # the RTSTRUCT of the accepted set takes the mask of a name written last on the page
    from cervicontour.review.decisions import _written_order

    ids = ["review/edited/Bladder_edited_20261203T101500000000Z.nii.gz", "structures/Bladder.nii.gz",
           "review/composed/Bladder_composed_20261203T101400000000Z.nii.gz"]
    assert sorted(ids, key=_written_order)[-1] == ids[0]
    ids[0] = "review/edited/Bladder_edited_20261203T101300000000Z.nii.gz"
    assert sorted(ids, key=_written_order)[-1] == ids[2]
