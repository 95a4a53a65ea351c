"""The review log across processes, and the review server's edges: corrupt files, links, big or
wrong-shape bodies. Every bad request is a 4xx with a message, never a 500.

Cases here are tiny hand-made output folders (a 16 × 16 × 8 box), so the server's own code is
what is tested, not the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cervicontour.io import write_nifti  # noqa: E402
from cervicontour.review.decisions import read_log, record_decisions  # noqa: E402
from cervicontour.review.server import MAX_BODY_BYTES, create_app  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

TOKEN = "edges-0123456789abcdef"
BLADDER = "structures/Bladder.nii.gz"


def _case(out: Path, patient_id: str) -> Path:
    """OUT/<patient_id>: image.nii.gz, structures/Bladder.nii.gz (a 4 × 4 × 2 box) and prediction.json."""
    case = out / patient_id
    image = np.full((16, 16, 8), -1000, np.int16)
    image[4:12, 4:12, 2:6] = 40
    ct = Volume(image, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    write_nifti(ct, case / "image.nii.gz")
    mask = np.zeros(image.shape, np.uint8)
    mask[6:10, 6:10, 3:5] = 1
    write_nifti(ct.with_array(mask), case / BLADDER)
    (case / "prediction.json").write_text(json.dumps({"patient_id": patient_id, "review_closely": [], "out_of_scope": ["no pelvis in the field of view"] if patient_id == "P2" else [], "structures": {}}))
    return case


@pytest.fixture
def out(tmp_path) -> Path:
    root = tmp_path / "pred"
    for pid in ("P1", "P2"):
        _case(root, pid)
    return root


@pytest.fixture
def client(out) -> TestClient:
    return TestClient(create_app(out, token=TOKEN), headers={"X-Review-Token": TOKEN}, raise_server_exceptions=False)


def _decide(reviewer: str) -> dict:
    return {"reviewer": reviewer, "decisions": {BLADDER: {"decision": "accept", "comment": ""}}}


# ----------------------------------------------------------------------------- across processes
_SERVER = """
import sys
from cervicontour.review.server import serve
serve(sys.argv[1], port=0, token=sys.argv[2], on_ready=lambda url: print(url, flush=True))
"""

_CLI_WRITER = """
import sys
from typer.testing import CliRunner
from cervicontour.cli import app
runner = CliRunner()
for k in range(int(sys.argv[2])):
    result = runner.invoke(app, ["decide", sys.argv[1], "structures/Bladder.nii.gz=reject", "--who", "cli", "--comment", str(k)])
    assert result.exit_code == 0, result.output
"""


def _post(url: str, body: dict) -> int:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", "X-Review-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status


def test_two_servers_and_a_cli_writer_lose_no_decision(out):
    """3 × 50 concurrent decisions on one case (two server processes, one CLI process): 150 kept, chain valid."""
    n = 50
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    servers = [subprocess.Popen([sys.executable, "-c", _SERVER, str(out), TOKEN], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        urls = [s.stdout.readline().strip().split("/?")[0] for s in servers]
        assert all(u.startswith("http://127.0.0.1:") for u in urls), urls
        writer = subprocess.Popen([sys.executable, "-c", _CLI_WRITER, str(out / "P1"), str(n)], env=env)
        statuses: list[int] = []

        def post_all(url: str, reviewer: str) -> None:
            statuses.extend(_post(f"{url}/api/cases/P1/decisions", _decide(reviewer)) for _ in range(n))

        threads = [threading.Thread(target=post_all, args=(url, f"server{k}")) for k, url in enumerate(urls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert writer.wait(timeout=600) == 0
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=30)
    assert statuses == [200] * (2 * n)
    entries = read_log(out / "P1")  # raises when the hash chain is broken
    assert len(entries) == 3 * n
    assert sorted(e["reviewer"] for e in entries) == sorted(["cli"] * n + ["server0"] * n + ["server1"] * n)
    assert [e["structures"][BLADDER]["comment"] for e in entries if e["reviewer"] == "cli"] == [str(k) for k in range(n)]


def test_the_out_of_scope_flag_is_shown(client):
    listing = {c["patient_id"]: c for c in client.get("/api/cases").json()["cases"]}
    assert listing["P1"]["out_of_scope"] == [] and listing["P2"]["out_of_scope"] == ["no pelvis in the field of view"]
    assert client.get("/api/cases/P2").json()["out_of_scope"] == ["no pelvis in the field of view"]
    script = client.get("/static/review.js").text
    assert "Outside what this model was made for" in script and "out_of_scope" in script


def test_threads_in_one_process_lose_no_decision(out):
    threads = [threading.Thread(target=lambda k=k: [record_decisions(out / "P2", f"r{k}", _decide("x")["decisions"]) for _ in range(10)]) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_log(out / "P2")) == 40


# ----------------------------------------------------------------------------- corrupt files
def test_a_corrupt_log_is_reported_for_its_case_only(out, client):
    (out / "P1" / "review.json").write_text("{not json")
    listing = {c["patient_id"]: c for c in client.get("/api/cases").json()["cases"]}
    assert "review log" in listing["P1"]["log_error"] and listing["P1"]["reviews"] == 0
    assert listing["P2"]["log_error"] is None
    summary = client.get("/api/cases/P1")
    assert summary.status_code == 200 and "move it aside" in summary.json()["log_error"]
    response = client.post("/api/cases/P1/decisions", json=_decide("a"))
    assert response.status_code == 400 and "review log" in response.json()["detail"]
    assert (out / "P1" / "review.json").read_text() == "{not json"
    response = client.post("/api/cases/P1/compose", json={"reviewer": "a", "choices": {"CTVn": ["LN_Pelvic"]}})
    assert response.status_code == 400 and "review log" in response.json()["detail"]
    assert not (out / "P1" / "review").exists()  # no composed mask without its log entry
    assert client.post("/api/cases/P2/decisions", json=_decide("a")).status_code == 200


def test_a_corrupt_mask_is_a_400_with_a_message(out, client):
    (out / "P1" / BLADDER).write_bytes(b"\x1f\x8b not really gzip")
    for path in (f"/api/cases/P1/preview/{BLADDER}.preview.nii", "/api/cases/P1/findings"):
        response = client.get(path)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert "Bladder" in response.json()["detail"]


# ----------------------------------------------------------------------------- links out of OUT_DIR
def test_links_out_of_the_output_folder_are_not_served(out, tmp_path, client):
    outside = _case(tmp_path / "elsewhere", "SECRET")
    (out / "LINKED").symlink_to(outside, target_is_directory=True)
    (out / "P1" / "structures" / "Secret.nii.gz").symlink_to(outside / BLADDER)
    assert [c["patient_id"] for c in client.get("/api/cases").json()["cases"]] == ["P1", "P2"]
    assert client.get("/api/cases/LINKED").status_code == 404
    assert "structures/Secret.nii.gz" not in [m["id"] for m in client.get("/api/cases/P1").json()["masks"]]
    assert client.get("/api/cases/P1/masks/structures/Secret.nii.gz").status_code == 404
    (out / "P2" / "image.nii.gz").unlink()
    (out / "P2" / "image.nii.gz").symlink_to(outside / "image.nii.gz")
    assert client.get("/api/cases/P2/ct.nii.gz").status_code == 400  # no CT: the link is not followed
    assert client.get("/api/cases/P2").json()["ct"] is False


# ----------------------------------------------------------------------------- bodies
def test_a_body_over_the_cap_is_413(out, client):
    big = {"reviewer": "a", "decisions": {BLADDER: {"decision": "accept", "comment": "x" * (MAX_BODY_BYTES + 1)}}}
    response = client.post("/api/cases/P1/decisions", json=big)
    assert response.status_code == 413 and "bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    response = client.post("/api/cases/P1/decisions", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert not (out / "P1" / "review.json").exists()


@pytest.mark.parametrize("path, body", [
    ("decisions", [1, 2]),
    ("decisions", "text"),
    ("decisions", {"reviewer": "a", "decisions": [BLADDER]}),
    ("decisions", {"reviewer": "a", "decisions": {BLADDER: "accept"}}),
    ("decisions", {"reviewer": ["a"], "decisions": {BLADDER: {"decision": "accept"}}}),
    ("decisions", {"reviewer": "a", "decisions": {BLADDER: {"decision": None}}}),
    ("compose", {"reviewer": "a", "choices": "CTVn"}),
    ("compose", {"reviewer": "a", "choices": {"CTVn": 3}}),
    ("compose", {"reviewer": "a", "choices": {"NotATarget": ["LN_Pelvic"]}}),
    ("compose", {"reviewer": "a", "choices": {"CTVn": ["Pelvicc"]}}),
    ("rtstruct", None),
    ("rtstruct", {"reviewer": 5}),
])
def test_wrong_shape_bodies_are_4xx_with_a_message(out, client, path, body):
    response = client.post(f"/api/cases/P1/{path}", json=body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json()["detail"]
    assert not (out / "P1" / "review.json").exists()


def test_a_body_that_is_not_json_is_4xx(client):
    response = client.post("/api/cases/P1/decisions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500 and response.json()["detail"]


def test_decide_from_the_terminal(out):
    from typer.testing import CliRunner

    from cervicontour.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["decide", str(out / "P1"), f"{BLADDER}=accept", "--who", "Dr B", "--comment", "fine"])
    assert ok.exit_code == 0, ok.output
    (entry,) = read_log(out / "P1")
    assert entry["reviewer"] == "Dr B" and entry["structures"][BLADDER]["decision"] == "accept" and entry["structures"][BLADDER]["comment"] == "fine"
    for args, message in (([BLADDER], "expected MASK=DECISION"), ([f"{BLADDER}=maybe"], "accept, reject, needs-edit"),
                          (["structures/Nope.nii.gz=accept"], "not a mask of P1")):
        result = runner.invoke(app, ["decide", str(out / "P1"), *args, "--who", "x"])
        assert result.exit_code == 2 and message in result.output, result.output
    assert len(read_log(out / "P1")) == 1


def test_the_bad_input_corpus_is_4xx_on_the_review_page(out, tmp_path):
    """Every damaged file of the corpus, as a case's CT and as a mask: 4xx with a message, never 500."""
    import shutil

    from bad_inputs import build_corpus

    items = [c for c in build_corpus(tmp_path / "corpus") if "info" in c.commands or c.name == "truncated_gzip"]
    client = TestClient(create_app(out, token=TOKEN), headers={"X-Review-Token": TOKEN}, raise_server_exceptions=False)
    failures = []
    for item in items:
        shutil.copyfile(item.path, out / "P1" / "image.nii.gz")
        shutil.copyfile(item.path, out / "P2" / BLADDER)
        for path in ("/api/cases/P1/ct-preview.nii", "/api/cases/P1/ct.nii.gz", f"/api/cases/P2/preview/{BLADDER}.preview.nii", "/api/cases/P2/findings"):
            response = client.get(path)
            if path.endswith("ct.nii.gz") and response.status_code == 200:
                continue  # a .nii.gz CT is streamed as its bytes, unread (the viewer then says it cannot read it)
            if not (400 <= response.status_code < 500 and response.json().get("detail")):
                failures.append(f"{item.name} {path}: {response.status_code}")
    assert not failures, "\n".join(failures)
