"""The review server's API through Starlette's TestClient, on a real predict output folder.

Expected values come from the files on disk (bytes, SHA-256 by hashlib, unions by numpy, NIfTI
headers read by nibabel), never from the server's own earlier answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
nib = pytest.importorskip("nibabel")

from fastapi.testclient import TestClient  # noqa: E402
from review_case import make_predict_output  # noqa: E402

from cervicontour.errors import InputError  # noqa: E402
from cervicontour.review.cases import downsample, preview_steps  # noqa: E402
from cervicontour.review.server import check_host, create_app  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

TOKEN = "t" * 8 + "0123456789abcdef"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    return make_predict_output(tmp_path_factory.mktemp("review"))


@pytest.fixture
def out(predicted, tmp_path) -> Path:
    """A private copy (tests write review.json and composed masks)."""
    return Path(shutil.copytree(predicted, tmp_path / "pred"))


@pytest.fixture
def client(out) -> TestClient:
    return TestClient(create_app(out, token=TOKEN), headers={"X-Review-Token": TOKEN})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- token, host, traversal
def test_every_request_needs_the_token(out):
    anonymous = TestClient(create_app(out, token=TOKEN))
    for path in ("/", "/api/cases", "/api/cases/SYN001", "/static/review.js", "/api/cases/SYN001/ct.nii.gz", "/nothing-here"):
        assert anonymous.get(path).status_code == 403, path
        assert anonymous.get(path, headers={"X-Review-Token": TOKEN[:-1] + "x"}).status_code == 403, path
        assert anonymous.get(path, params={"token": "wrong" * 5}).status_code == 403, path
    assert anonymous.post("/api/cases/SYN001/decisions", json={"reviewer": "x", "decisions": {}}).status_code == 403
    # the token in the URL opens the page and sets a cookie that later requests (NiiVue's) carry
    page = anonymous.get("/", params={"token": TOKEN})
    assert page.status_code == 200 and "cervicontour review" in page.text
    assert anonymous.get("/api/cases").status_code == 200


def test_the_page_loads_nothing_from_other_hosts(client):
    page = client.get("/").text + client.get("/static/review.js").text + client.get("/static/review.css").text
    assert "http://" not in page and "https://" not in page
    assert "default-src 'self'" in client.get("/").headers["content-security-policy"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_remote_hosts_are_refused_unless_allowed(host):
    with pytest.raises(InputError, match="--allow-remote"):
        check_host(host)
    assert check_host(host, allow_remote=True) == host
    assert check_host("127.0.0.1") == "127.0.0.1" and check_host("localhost") == "localhost" and check_host("::1") == "::1"


def test_cli_refuses_0000_without_allow_remote(out):
    script = str(Path(sys.executable).with_name("cervicontour"))
    result = subprocess.run([script, "review", str(out), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr


@pytest.mark.parametrize("path", [
    "/api/cases/SYN001/masks/../../secret.txt",
    "/api/cases/SYN001/masks/..%2F..%2Fsecret.txt",
    "/api/cases/SYN001/masks/%2E%2E/%2E%2E/secret.txt",
    "/api/cases/SYN001/masks/structures/../../../secret.txt",
    "/api/cases/SYN001/masks//etc/passwd",
    "/api/cases/SYN001/masks/prediction.json",
    "/api/cases/..%2Fsecret.txt/masks/x",
    "/api/cases/SYN001/preview/..%2F..%2Fsecret.txt.preview.nii",
    "/static/../../secret.txt",
    "/static/..%2F..%2F..%2Fsecret.txt",
])
def test_path_traversal_is_refused(out, client, path):
    (out.parent / "secret.txt").write_text("PATIENT SECRET")
    response = client.get(path)
    assert response.status_code in (403, 404), (path, response.status_code)
    assert b"PATIENT SECRET" not in response.content


# ----------------------------------------------------------------------------- listing and volumes
def test_listing_shows_the_cases_and_their_masks(out, client):
    expected_ids = sorted(p.name for p in out.iterdir() if (p / "prediction.json").is_file())
    listing = client.get("/api/cases").json()
    assert [c["patient_id"] for c in listing["cases"]] == expected_ids == ["SYN001"]
    prediction = json.loads((out / "SYN001" / "prediction.json").read_text())
    assert listing["cases"][0]["review_closely"] == prediction["review_closely"]
    assert listing["cases"][0]["dicom"] is False

    summary = client.get("/api/cases/SYN001").json()
    drafts = sorted(f"structures/{p.name}" for p in (out / "SYN001" / "structures").glob("*.nii.gz"))
    subs = sorted(f"structures/sub/{p.name}" for p in (out / "SYN001" / "structures" / "sub").glob("*.nii.gz"))
    assert [m["id"] for m in summary["masks"] if m["kind"] == "draft"] == drafts
    assert sorted(m["id"] for m in summary["masks"] if m["kind"] == "sub") == subs
    for mask in summary["masks"]:
        if mask["kind"] == "draft":
            assert mask["review_closely"] == prediction["structures"][mask["name"]]["review_closely"]
            assert mask["volume_cc"] == prediction["structures"][mask["name"]]["volume_cc"]
    present = {m["name"] for m in summary["masks"] if m["kind"] == "sub"}
    for part in summary["parts"]["CTVn"]:
        assert part["present"] == (part["name"] in present)
    assert summary["model"]["config_sha256"] == prediction["model"]["config_sha256"]
    assert client.get("/api/cases/NOPE").status_code == 404


def test_volumes_stream_the_files_and_previews_keep_the_geometry(out, client):
    case = out / "SYN001"
    ct_path = Path(json.loads((case / "prediction.json").read_text())["input"]["path"])
    assert client.get("/api/cases/SYN001/ct.nii.gz").content == ct_path.read_bytes()
    mask_path = case / "structures" / "Bladder.nii.gz"
    assert client.get("/api/cases/SYN001/masks/structures/Bladder.nii.gz").content == mask_path.read_bytes()
    assert client.get("/api/cases/SYN001/masks/structures/Nope.nii.gz").status_code == 404

    full = nib.load(ct_path)
    preview_file = out.parent / "preview.nii"
    preview_file.write_bytes(client.get("/api/cases/SYN001/ct-preview.nii").content)
    preview = nib.load(preview_file)
    steps = [max(1, math.ceil(n / m)) for n, m in zip(full.shape, (128, 128, 64))]
    assert preview.shape == tuple(math.ceil(n / s) for n, s in zip(full.shape, steps))
    np.testing.assert_allclose(preview.affine[:3, :3], full.affine[:3, :3] * steps, atol=1e-4)
    np.testing.assert_allclose(preview.affine[:3, 3], full.affine[:3, 3], atol=1e-3)
    np.testing.assert_array_equal(np.asarray(preview.dataobj), np.asarray(full.dataobj)[:: steps[0], :: steps[1], :: steps[2]])

    mask_preview = out.parent / "mask.nii"
    mask_preview.write_bytes(client.get("/api/cases/SYN001/preview/structures/Bladder.nii.gz.preview.nii").content)
    expected = (np.asarray(nib.load(mask_path).dataobj) != 0)[:: steps[0], :: steps[1], :: steps[2]]
    np.testing.assert_array_equal(np.asarray(nib.load(mask_preview).dataobj), expected.astype(np.uint8))


def test_preview_strides_bring_a_full_size_grid_within_128_128_64():
    assert preview_steps((512, 512, 200)) == (4, 4, 4)  # 128 × 128 × 50
    assert preview_steps((100, 600, 52)) == (1, 5, 1)  # ceil(600 / 128) = 5
    assert preview_steps((128, 129, 65)) == (1, 2, 2)
    volume = Volume(np.arange(4 * 6 * 3, dtype=np.int16).reshape(4, 6, 3), (0.5, 1.0, 2.5), (10.0, -5.0, 3.0))
    small = downsample(volume, (2, 3, 1))
    assert small.shape == (2, 2, 3) and small.spacing_mm == (1.0, 3.0, 2.5) and small.origin_mm == (10.0, -5.0, 3.0)
    assert small.array[1, 1, 2] == volume.array[2, 3, 2]
    np.testing.assert_allclose(small.index_to_world(np.array([1, 1, 2])), volume.index_to_world(np.array([2, 3, 2])))


# ----------------------------------------------------------------------------- decisions
def test_decisions_are_saved_with_hashes_and_model_provenance(out, client):
    case = out / "SYN001"
    body = {"reviewer": "Dr A. Example", "decisions": {
        "structures/Bladder.nii.gz": {"decision": "accept", "comment": ""},
        "structures/CTVn.nii.gz": {"decision": "needs-edit", "comment": "extend cranially to L4/L5"},
    }}
    response = client.post("/api/cases/SYN001/decisions", json=body)
    assert response.status_code == 200, response.text
    log = json.loads((case / "review.json").read_text())
    prediction = json.loads((case / "prediction.json").read_text())
    (entry,) = log["entries"]
    assert log["patient_id"] == "SYN001"
    assert entry["reviewer"] == "Dr A. Example" and entry["action"] == "review"
    assert entry["model"] == {k: prediction["model"][k] for k in ("name", "version", "config_sha256")}
    assert entry["input_sha256"] == prediction["input"]["sha256"]
    assert entry["structures"]["structures/Bladder.nii.gz"]["sha256"] == _sha(case / "structures" / "Bladder.nii.gz")
    assert entry["structures"]["structures/CTVn.nii.gz"] == {
        "name": "CTVn", "decision": "needs-edit", "comment": "extend cranially to L4/L5", "sha256": _sha(case / "structures" / "CTVn.nii.gz")}
    assert entry["timestamp"].endswith("+00:00")


@pytest.mark.parametrize("body, message", [
    ({"reviewer": "", "decisions": {"structures/Bladder.nii.gz": {"decision": "accept"}}}, "reviewer"),
    ({"reviewer": "a", "decisions": {"structures/Bladder.nii.gz": {"decision": "maybe"}}}, "accept, reject, needs-edit"),
    ({"reviewer": "a", "decisions": {"../prediction.json": {"decision": "accept"}}}, "not a mask"),
    ({"reviewer": "a", "decisions": {}}, "no decisions"),
])
def test_bad_decisions_are_refused_and_nothing_is_written(out, client, body, message):
    response = client.post("/api/cases/SYN001/decisions", json=body)
    assert response.status_code == 400 and message in response.json()["detail"]
    assert not (out / "SYN001" / "review.json").exists()


def test_the_log_is_append_only(out, client):
    case = out / "SYN001"
    first = {"reviewer": "a", "decisions": {"structures/Bladder.nii.gz": {"decision": "reject", "comment": "too small"}}}
    second = {"reviewer": "b", "decisions": {"structures/Bladder.nii.gz": {"decision": "accept"}}}
    assert client.post("/api/cases/SYN001/decisions", json=first).status_code == 200
    before = json.loads((case / "review.json").read_text())["entries"]
    assert client.post("/api/cases/SYN001/decisions", json=second).status_code == 200
    after = json.loads((case / "review.json").read_text())["entries"]
    assert after[:1] == before and len(after) == 2
    assert after[1]["previous_sha256"] == hashlib.sha256(json.dumps(before[0], sort_keys=True).encode()).hexdigest()
    # an edited log is reported, not overwritten
    data = json.loads((case / "review.json").read_text())
    data["entries"][0]["structures"]["structures/Bladder.nii.gz"]["decision"] = "accept"
    (case / "review.json").write_text(json.dumps(data))
    tampered = (case / "review.json").read_bytes()
    response = client.post("/api/cases/SYN001/decisions", json=second)
    assert response.status_code == 400 and "edited" in response.json()["detail"]
    assert (case / "review.json").read_bytes() == tampered


# ----------------------------------------------------------------------------- compose
def test_compose_writes_a_new_mask_and_keeps_the_draft(out, client):
    from cervicontour.io import read_nifti

    case = out / "SYN001"
    sub = case / "structures" / "sub"
    draft = (case / "structures" / "CTVn.nii.gz").read_bytes()
    chosen = [p for p in ("LN_Pelvic", "LN_CommonIliac") if (sub / f"{p}.nii.gz").is_file()]
    assert chosen, "the phantom has nodal sub-structures"
    response = client.post("/api/cases/SYN001/compose", json={"reviewer": "a", "choices": {"CTVn": chosen}})
    assert response.status_code == 200, response.text
    (result,) = response.json()["compositions"]
    parts = chosen + (["GTVn"] if (sub / "GTVn.nii.gz").is_file() else [])
    expected = np.zeros(read_nifti(sub / f"{chosen[0]}.nii.gz").shape, bool)
    for part in parts:
        expected |= read_nifti(sub / f"{part}.nii.gz").array != 0
    composed = read_nifti(case / result["id"])
    np.testing.assert_array_equal(composed.array != 0, expected)
    assert result["used"] == parts and result["id"].startswith("review/composed/CTVn_composed_")
    assert result["volume_cc"] == pytest.approx(expected.sum() * float(np.prod(composed.spacing_mm)) / 1000, abs=1e-3)
    assert (case / "structures" / "CTVn.nii.gz").read_bytes() == draft  # the model's draft is untouched
    log = json.loads((case / "review.json").read_text())["entries"]
    assert log[-1]["action"] == "compose" and log[-1]["compositions"][0]["sha256"] == _sha(case / result["id"])
    assert log[-1]["compositions"][0]["parts_sha256"] == {p: _sha(sub / f"{p}.nii.gz") for p in parts}
    # the composed mask is listed and served, and can be decided on
    listed = [m for m in client.get("/api/cases/SYN001").json()["masks"] if m["id"] == result["id"]]
    assert listed and listed[0]["name"] == "CTVn" and listed[0]["kind"] == "composed"
    assert listed[0]["volume_cc"] == result["volume_cc"]
    assert client.get(f"/api/cases/SYN001/masks/{result['id']}").content == (case / result["id"]).read_bytes()
    assert client.post("/api/cases/SYN001/decisions", json={"reviewer": "a", "decisions": {result["id"]: {"decision": "accept"}}}).status_code == 200


def test_compose_with_a_part_the_case_lacks_is_refused_and_writes_nothing(out, client):
    """A choice the case cannot honour (its para-aortic mask removed): 400 naming the part, no
    composed mask, no log entry; an empty part file (no node) is a valid choice."""
    from cervicontour.io import read_nifti, write_nifti

    case = out / "SYN001"
    sub = case / "structures" / "sub"
    (sub / "LN_ParaAortic.nii.gz").unlink(missing_ok=True)
    before = {p: p.read_bytes() for p in case.rglob("*") if p.is_file()}
    response = client.post("/api/cases/SYN001/compose", json={"reviewer": "a", "choices": {"CTVn": ["LN_Pelvic", "LN_ParaAortic"]}})
    assert response.status_code == 400
    assert "CTVn part LN_ParaAortic not in this case" in response.json()["detail"] and "it has " in response.json()["detail"]
    assert {p: p.read_bytes() for p in case.rglob("*") if p.is_file()} == before
    pelvic = read_nifti(sub / "LN_Pelvic.nii.gz")
    write_nifti(pelvic.with_array(np.zeros(pelvic.shape, np.uint8)), sub / "GTVn.nii.gz")  # the patient has no node
    response = client.post("/api/cases/SYN001/compose", json={"reviewer": "a", "choices": {"CTVn": ["GTVn", "LN_Pelvic"]}})
    assert response.status_code == 200, response.text
    (result,) = response.json()["compositions"]
    np.testing.assert_array_equal(read_nifti(case / result["id"]).array != 0, pelvic.array != 0)


def test_compose_with_a_part_of_the_other_target_is_refused(client):
    response = client.post("/api/cases/SYN001/compose", json={"reviewer": "a", "choices": {"CTVn": ["Uterus"]}})
    assert response.status_code == 400 and "part of CTVp" in response.json()["detail"]


def test_a_nifti_case_is_exported_on_its_ct_series(out, client):
    """A case predicted from a NIfTI CT: the accepted set goes out as an RTSTRUCT on the case's CT/
    series (written for the export when predict --rtstruct did not), which holds the NIfTI's voxels
    on its grid; the RTSTRUCT references that series' slices and re-imports to the accepted masks."""
    pydicom = pytest.importorskip("pydicom")
    from cervicontour.export.rtstruct_import import read_rtstruct
    from cervicontour.io import read_nifti, read_volume

    case = out / "SYN001"
    assert not (case / "CT").exists()
    summary = client.get("/api/cases/SYN001").json()
    assert summary["dicom"] is False and summary["ct"] is True  # the page shows the export button for any CT
    accepted = ("Bladder", "CTVp")
    decisions = {f"structures/{n}.nii.gz": {"decision": "accept"} for n in accepted}
    assert client.post("/api/cases/SYN001/decisions", json={"reviewer": "a", "decisions": decisions}).status_code == 200
    response = client.post("/api/cases/SYN001/rtstruct", json={"reviewer": "a"})
    assert response.status_code == 200, response.text
    ds = pydicom.dcmread(case / response.json()["path"])
    assert sorted(roi.ROIName for roi in ds.StructureSetROISequence) == sorted(accepted)

    image = read_nifti(Path(json.loads((case / "prediction.json").read_text())["input"]["path"]))
    series = read_volume(case / "CT")
    assert series.shape == image.shape and np.allclose(series.origin_mm, image.origin_mm) and np.allclose(series.spacing_mm, image.spacing_mm)
    np.testing.assert_array_equal(series.array, image.array)
    slices = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in (case / "CT").glob("*.dcm")}
    referenced = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for item in ds.ROIContourSequence for c in item.ContourSequence}
    assert referenced and referenced <= slices
    for roi in read_rtstruct(case / response.json()["path"], series).rois:
        draft = read_nifti(case / "structures" / f"{roi.name}.nii.gz").array != 0
        dice = 2 * np.count_nonzero(roi.mask & draft) / (np.count_nonzero(roi.mask) + np.count_nonzero(draft))
        assert dice >= 0.98, (roi.name, dice)


def test_the_review_export_reuses_the_series_predict_wrote(out, client):
    """predict --rtstruct wrote CT/ and RS.dcm: the review's RTSTRUCT references the same slices and
    the series is not written again; a CT/ that is not this CT's series is written anew."""
    pydicom = pytest.importorskip("pydicom")
    from cervicontour.export.ct_series import prediction_rtstruct

    case = out / "SYN001"
    prediction_rtstruct(case)
    written = {p.name: (p.stat().st_mtime_ns, _sha(p)) for p in (case / "CT").glob("*.dcm")}
    predicted_refs = {c.ContourImageSequence[0].ReferencedSOPInstanceUID
                      for item in pydicom.dcmread(case / "RS.dcm").ROIContourSequence for c in item.ContourSequence}  # fmt: skip
    decisions = {"structures/Bladder.nii.gz": {"decision": "accept"}}
    assert client.post("/api/cases/SYN001/decisions", json={"reviewer": "a", "decisions": decisions}).status_code == 200
    response = client.post("/api/cases/SYN001/rtstruct", json={"reviewer": "a"})
    assert response.status_code == 200, response.text
    assert {p.name: (p.stat().st_mtime_ns, _sha(p)) for p in (case / "CT").glob("*.dcm")} == written
    ds = pydicom.dcmread(case / response.json()["path"])
    slices = {pydicom.dcmread(case / "CT" / name, stop_before_pixels=True).SOPInstanceUID for name in written}
    refs = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for item in ds.ROIContourSequence for c in item.ContourSequence}
    assert refs <= slices and predicted_refs <= slices

    first = sorted(written)[0]  # another series in CT/ (e.g. a copy of another patient's): replaced by this CT's
    other = pydicom.dcmread(case / "CT" / first)
    other.SeriesInstanceUID = "1.2.3.4"
    other.save_as(case / "CT" / first)
    response = client.post("/api/cases/SYN001/rtstruct", json={"reviewer": "a"})
    assert response.status_code == 200, response.text
    assert {p.name: _sha(p) for p in (case / "CT").glob("*.dcm")} == {name: sha for name, (_, sha) in written.items()}


def test_a_case_without_a_ct_cannot_be_exported(out, client):
    case = out / "SYN001"
    record = json.loads((case / "prediction.json").read_text())
    record["input"]["path"] = str(out / "gone.nii.gz")
    (case / "prediction.json").write_text(json.dumps(record))
    assert client.get("/api/cases/SYN001").json()["ct"] is False
    decisions = {"structures/Bladder.nii.gz": {"decision": "accept"}}
    assert client.post("/api/cases/SYN001/decisions", json={"reviewer": "a", "decisions": decisions}).status_code == 200
    response = client.post("/api/cases/SYN001/rtstruct", json={"reviewer": "a"})
    assert response.status_code == 400 and "no CT" in response.json()["detail"]
    assert not (case / "CT").exists() and not list((case / "review").glob("RS_*"))
