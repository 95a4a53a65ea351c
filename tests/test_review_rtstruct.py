"""The accepted set of a case predicted from a DICOM series goes out as an RTSTRUCT on that series."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pydicom = pytest.importorskip("pydicom")

from fastapi.testclient import TestClient  # noqa: E402

from cervicontour.review.server import create_app  # noqa: E402

TOKEN = "rtstruct-token-0123456789"


@pytest.fixture(scope="module")
def dicom_out(tmp_path_factory):
    from review_case import make_dicom_predict_output

    return make_dicom_predict_output(tmp_path_factory.mktemp("review_dicom"))


def test_accepted_structures_are_exported_as_rtstruct(dicom_out):
    out, series = dicom_out
    (case,) = [p.parent for p in out.glob("*/prediction.json")]
    client = TestClient(create_app(out, token=TOKEN), headers={"X-Review-Token": TOKEN})
    assert client.get("/api/cases").json()["cases"][0]["dicom"] is True
    before = client.post(f"/api/cases/{case.name}/rtstruct", json={"reviewer": "a"})
    assert before.status_code == 400 and "no accepted structure" in before.json()["detail"]

    decisions = {"structures/Bladder.nii.gz": {"decision": "accept"}, "structures/Anorectum.nii.gz": {"decision": "accept"},
                 "structures/CTVn.nii.gz": {"decision": "reject", "comment": "misses the common iliac nodes"}}
    assert client.post(f"/api/cases/{case.name}/decisions", json={"reviewer": "a", "decisions": decisions}).status_code == 200
    # a later decision overrides an earlier one: Anorectum is no longer accepted
    assert client.post(f"/api/cases/{case.name}/decisions", json={"reviewer": "b", "decisions": {"structures/Anorectum.nii.gz": {"decision": "needs-edit"}}}).status_code == 200
    response = client.post(f"/api/cases/{case.name}/rtstruct", json={"reviewer": "b"})
    assert response.status_code == 200, response.text
    written = case / response.json()["path"]
    ds = pydicom.dcmread(written)
    assert [roi.ROIName for roi in ds.StructureSetROISequence] == ["Bladder"]
    assert ds.RTROIObservationsSequence[0].RTROIInterpretedType == "ORGAN"
    assert ds.StructureSetROISequence[0].ROIGenerationAlgorithm == "SEMIAUTOMATIC"
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    referenced = {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in ds.ROIContourSequence[0].ContourSequence}
    assert referenced and referenced <= uids
    log = json.loads((case / "review.json").read_text())["entries"]
    assert log[-1]["action"] == "export-rtstruct" and log[-1]["reviewer"] == "b" and list(log[-1]["structures"]) == ["Bladder"]
