"""The shipped default model: small enough, documented, and `predict ct.nii.gz --out o` works out of the box."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def default_model() -> Path:
    from cervicontour.errors import InputError
    from cervicontour.models import default_model_path

    try:
        return default_model_path()
    except InputError as exc:
        pytest.skip(str(exc))


def test_default_model_is_small_and_has_a_card_naming_its_data(default_model):
    assert default_model.stat().st_size <= 25 * 1024**2
    card = (default_model.parent / "MODEL_CARD.md").read_text()
    assert "Not for clinical use" in card and "seed 1001" in card and "seed 2002" in card
    from cervicontour.model import load_model

    model = load_model("default")
    assert model.structures == ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
    assert model.meta["data"]["test"]["seed"] not in (model.meta["data"]["source"]["seed"], model.meta["data"]["target"]["seed"])


def test_predict_a_nifti_out_of_the_box(default_model, tmp_path):
    from cervicontour.io import read_nifti, write_nifti
    from cervicontour.synth import to_ras
    from cervicontour.synth.case import synthesize_case

    case = synthesize_case(np.random.default_rng([9090, 0]), size="small", edge=set(), labelled=False)
    ct = tmp_path / "ct.nii.gz"
    write_nifti(to_ras(case.image), ct)
    exe = Path(sys.executable).parent / "cervicontour"
    proc = subprocess.run([str(exe), "predict", str(ct), "--out", str(tmp_path / "o")], capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "o" / "ct" / "prediction.json").read_text())
    assert record["model"]["name"] == "cervicontour-default"
    image = read_nifti(ct)
    for name in record["model"]["structures"]:
        assert read_nifti(tmp_path / "o" / "ct" / "structures" / f"{name}.nii.gz").same_grid(image)
