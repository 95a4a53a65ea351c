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
    from cervicontour.networks.bundle import load_model

    model = load_model("default")
    # CTVn is composed at predict time from the nodal groups the clinician chooses; the CTVp is split into its parts
    assert model.structures == ("Bladder", "Anorectum", "CTVp", "Parametrium", "GTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic",
                                "Cervix", "GTVp", "Uterus", "Vagina")
    # the five structures (and the nodal groups) come from the network the parts fine-tune did not improve on
    assert set(model.fallback_structures) == {"Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium"}
    assert model.meta["data"]["test"]["seed"] not in (model.meta["data"]["source"]["seed"], model.meta["data"]["target"]["seed"])


def test_predict_a_nifti_out_of_the_box(default_model, tmp_path):
    from cervicontour.io import read_nifti, write_nifti
    from cervicontour.synth import to_ras
    from cervicontour.synth.case import synthesize_case

    case = synthesize_case(np.random.default_rng([9090, 0]), size="small", edge=set(), labelled=False)
    ct = tmp_path / "ct_9090.nii.gz"  # a single file: the case is named after its stem
    write_nifti(to_ras(case.image), ct)
    exe = Path(sys.executable).parent / "cervicontour"
    proc = subprocess.run([str(exe), "predict", str(ct), "--out", str(tmp_path / "o")], capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "o" / "ct_9090" / "prediction.json").read_text())
    assert record["model"]["name"] == "cervicontour-default"
    assert record["out_of_scope"] == []  # a phantom female pelvis: what the model was made for
    image = read_nifti(ct)
    folder = tmp_path / "o" / "ct_9090" / "structures"
    for name in ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium"):
        assert read_nifti(folder / f"{name}.nii.gz").same_grid(image)
    # CTVn = the default groups (no para-aortic extension unless asked for); each group lies inside it
    assert record["composed"] == {"CTVn": ["GTVn", "LN_CommonIliac", "LN_Pelvic"]}
    ctvn = read_nifti(folder / "CTVn.nii.gz").array > 0
    for group in record["composed"]["CTVn"]:
        part = read_nifti(folder / "sub" / f"{group}.nii.gz")
        assert part.same_grid(image) and not (part.array.astype(bool) & ~ctvn).any()
    assert read_nifti(folder / "sub" / "LN_ParaAortic.nii.gz").same_grid(image)  # drafted for the reviewer
