"""A real nnU-Net v2 checkpoint, made by nnunetv2 itself (plan, preprocess, one training iteration)
on a tiny synthetic dataset in this test run, then loaded into our network and fine-tuned.

Slow (~1-2 min) and needs `pip install nnunetv2 torch==2.13.0`; skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

TRAIN_SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # imported directly: the
    # trainer-class search imports torchvision, which cannot load beside the CPU torch here

    class OneIterationTrainer(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device=device)
            self.num_epochs = 1
            self.num_iterations_per_epoch = 1
            self.num_val_iterations_per_epoch = 1

    pre = sys.argv[1]
    plans = json.load(open(f"{pre}/nnUNetPlans.json"))
    plans["continue_training"] = False  # what nnunetv2.run.run_training sets before building a trainer
    dataset = json.load(open(f"{pre}/dataset.json"))
    trainer = OneIterationTrainer(plans, "3d_fullres", 0, dataset, device=torch.device("cpu"))
    trainer.run_training()
    print(trainer.output_folder)
''')


def _dataset(raw: Path) -> None:
    import SimpleITK as sitk

    folder = raw / "Dataset900_Tiny"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        ct = np.full((16, 24, 24), -1000, np.int16)  # (z, y, x) as SimpleITK arrays are
        ct[2:14, 3:21, 3:21] = rng.normal(40, 20, (12, 18, 18)).astype(np.int16)
        label = np.zeros(ct.shape, np.uint8)
        label[5:10, 8:14 + i % 2, 9:15] = 1
        ct[label > 0] = 10
        for array, path in ((ct, folder / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz"), (label, folder / "labelsTr" / f"tiny_{i:03d}.nii.gz")):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((7.5, 7.5, 10.0))
            sitk.WriteImage(image, str(path))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "bladder": 1}, "numTraining": 5, "file_ending": ".nii.gz"}))


@pytest.fixture(scope="module")
def nnunet_results(tmp_path_factory) -> Path:
    pytest.importorskip("nnunetv2")
    root = tmp_path_factory.mktemp("nnunet")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"), "nnUNet_results": str(root / "results"),
           "nnUNet_compile": "f", "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    _dataset(root / "raw")
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "900", "-c", "3d_fullres", "-np", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    pre = root / "pre" / "Dataset900_Tiny"
    # no augmentation worker processes while training (planning needs the variable unset)
    proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(pre)], env={**env, "nnUNet_n_proc_DA": "0"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fold = Path(proc.stdout.strip().splitlines()[-1])
    assert (fold / "checkpoint_final.pth").is_file()
    return fold.parent


def test_nnunet_checkpoint_loads_into_our_network_with_the_same_outputs(nnunet_results):
    import torch

    from cervicontour.networks.network import build_network
    from cervicontour.training.transfer import load_into, nnunet_architecture, open_source

    source = open_source(nnunet_results)
    assert source.kind == "nnunetv2" and source.plan is not None
    ours = build_network(source.arch, 1, 2)
    report = load_into(ours, source)
    assert report.skipped and all(name.startswith("decoder.seg_layers.") for name, _ in report.skipped)
    assert report.loaded or report.reshaped
    # nnU-Net's own network with its own weights, fed the same CT in its (z, y, x) order
    plans = json.loads((nnunet_results / "plans.json").read_text())
    theirs = build_network(nnunet_architecture(plans["configurations"]["3d_fullres"]), 1, 2, deep_supervision=False)
    checkpoint = torch.load(nnunet_results / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    theirs.load_state_dict(checkpoint["network_weights"])
    head = {k.removeprefix("decoder.seg_layers."): v for k, v in source.state_dict.items() if k.startswith("decoder.seg_layers.")}
    ours.decoder.seg_layers.load_state_dict(head)
    patch = list(source.plan.patch_size)
    x = torch.randn(1, 1, *patch)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2), rtol=1e-4, atol=1e-4)


def test_fine_tune_from_the_nnunet_checkpoint(nnunet_results, tiny_cohort, tmp_path):
    from cervicontour.training.train import train

    result = train(tiny_cohort, tmp_path / "fine", TINY.replace(steps=1), init=nnunet_results)
    counts = result.transfer["counts"]
    assert counts["skipped"] >= 2 and counts["loaded"] + counts["reshaped"] > 10
    plan = json.loads((tmp_path / "fine" / "plan.json").read_text())
    assert plan["normalization"]["lower_hu"] == pytest.approx(json.loads((nnunet_results / "plans.json").read_text())["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"])
