"""Transfer learning: own source models and nnU-Net v2 folders, with a report of every tensor."""

from __future__ import annotations

import json

import pytest

from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")

SOURCE_LABELS = ("Femur_Head_L", "Bone_Pelvic")


@pytest.fixture(scope="module")
def source_run(tiny_cohort, tmp_path_factory):
    from cervicontour.training.train import train

    out = tmp_path_factory.mktemp("source") / "run"
    train(tiny_cohort, out, TINY.replace(structures=SOURCE_LABELS, steps=2))
    return out


def test_fine_tune_loads_everything_but_the_head(tiny_cohort, source_run, tmp_path):
    from cervicontour.training.train import train

    result = train(tiny_cohort, tmp_path / "fine", TINY.replace(steps=1), init=source_run)
    report = result.transfer
    skipped = {name for name, _ in report["skipped"]}
    assert skipped == {"decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias", "decoder.seg_layers.1.weight", "decoder.seg_layers.1.bias"}
    assert report["counts"]["reshaped"] == 0 and report["counts"]["loaded"] > 20
    info = json.loads((tmp_path / "fine" / "run.json").read_text())
    assert info["transfer"]["counts"] == report["counts"]
    # the fine-tune keeps the source plan's spacing and normalisation, with its own structures
    src_plan = json.loads((source_run / "plan.json").read_text())
    plan = json.loads((tmp_path / "fine" / "plan.json").read_text())
    assert plan["spacing_mm"] == src_plan["spacing_mm"] and plan["normalization"] == src_plan["normalization"]
    assert plan["structures"] == list(TINY.structures)


def test_a_configured_spacing_overrides_the_source_plan(tiny_cohort, source_run, tmp_path):
    from cervicontour.training.train import train

    train(tiny_cohort, tmp_path / "fine", TINY.replace(steps=1, spacing_mm=(9.0, 9.0, 12.0)), init=source_run)
    src_plan = json.loads((source_run / "plan.json").read_text())
    plan = json.loads((tmp_path / "fine" / "plan.json").read_text())
    assert src_plan["spacing_mm"] != [9.0, 9.0, 12.0]
    assert plan["spacing_mm"] == [9.0, 9.0, 12.0] and plan["spacing_rule"] == "fixed"
    assert plan["normalization"] == src_plan["normalization"]  # the source's intensity model is kept


def test_frozen_encoder_stays_exactly_the_source_encoder(tiny_cohort, source_run, tmp_path):
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import train

    train(tiny_cohort, tmp_path / "frozen", TINY.replace(steps=2, strategy="frozen-encoder"), init=source_run)
    src = load_model(source_run).network.state_dict()
    new = load_model(tmp_path / "frozen").network.state_dict()
    enc = [k for k in src if k.startswith("encoder.")]
    assert enc and all(torch.equal(src[k], new[k]) for k in enc)
    dec = [k for k in src if k.startswith("decoder.stages") and k.endswith("weight")]
    assert any(not torch.equal(src[k], new[k]) for k in dec)


def test_discriminative_lr_scales_the_encoder_group():
    from cervicontour.networks.network import build_network, preset
    from cervicontour.training.transfer import parameter_groups

    net = build_network(preset("tiny"), 1, 2)
    groups = parameter_groups(net, "discriminative-lr", 1e-3, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    n_encoder = sum(p.numel() for n, p in net.named_parameters() if n.startswith("encoder."))
    assert sum(p.numel() for p in groups[1]["params"]) == n_encoder


def _nnunet_folder(tmp_path, in_channels=1):
    """An nnU-Net v2 results folder in nnU-Net's own layout and axis order (z, y, x), with an
    anisotropic architecture so that a wrong axis mapping cannot go unnoticed."""
    from cervicontour.networks.network import build_network

    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }  # fmt: skip
    torch.manual_seed(0)
    theirs = build_network(arch, in_channels, 3, deep_supervision=True)
    plans = {
        "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
        "foreground_intensity_properties_per_channel": {"0": {"mean": 40.0, "std": 120.0, "percentile_00_5": -900.0, "percentile_99_5": 600.0}},
        "configurations": {"3d_fullres": {"spacing": [10.0, 7.5, 7.5], "patch_size": [16, 32, 32], "normalization_schemes": ["CTNormalization"], "architecture": arch}},
    }  # fmt: skip
    folder = tmp_path / "Dataset900_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "bladder": 1, "rectum": 2}}))
    torch.save({"network_weights": theirs.state_dict(), "init_args": {"configuration": "3d_fullres"}, "trainer_name": "nnUNetTrainer"}, folder / "fold_0" / "checkpoint_final.pth")
    return folder, theirs


def test_nnunet_folder_rebuilds_the_same_network_in_our_axis_order(tmp_path):
    from cervicontour.networks.network import build_network
    from cervicontour.training.transfer import load_into, open_source

    folder, theirs = _nnunet_folder(tmp_path)
    source = open_source(folder)
    assert source.kind == "nnunetv2"
    assert source.arch["arch_kwargs"]["kernel_sizes"][0] == [3, 3, 1]  # (z, y, x) → (X, Y, Z)
    assert source.plan.spacing_mm == (7.5, 7.5, 10.0) and source.plan.patch_size == (32, 32, 16)
    assert source.plan.normalization.lower_hu == -900.0
    ours = build_network(source.arch, 1, 3)
    report = load_into(ours, source)
    assert {n for n, _ in report.skipped} == {f"decoder.seg_layers.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    assert all(how.startswith("spatial axes permuted") for _, _, _, how in report.reshaped)
    # copy the head too, then the two networks must agree on the same data in their own axis orders
    ours.decoder.seg_layers.load_state_dict(source.state_dict and {k.removeprefix("decoder.seg_layers."): v for k, v in source.state_dict.items() if k.startswith("decoder.seg_layers.")})
    x_ours = torch.randn(1, 1, 32, 32, 16)  # (X, Y, Z)
    theirs.eval(), ours.eval()
    theirs.decoder.deep_supervision = False
    with torch.no_grad():
        a = ours(x_ours)
        b = theirs(x_ours.permute(0, 1, 4, 3, 2))  # nnU-Net sees (z, y, x)
    torch.testing.assert_close(a, b.permute(0, 1, 4, 3, 2), rtol=1e-4, atol=1e-5)


def test_nnunet_source_with_more_input_channels_is_summed_and_reported(tmp_path):
    from cervicontour.networks.network import build_network
    from cervicontour.training.transfer import load_into, open_source

    folder, _ = _nnunet_folder(tmp_path, in_channels=2)
    source = open_source(folder)
    report = load_into(build_network(source.arch, 1, 5), source)
    summed = [r for r in report.reshaped if r[3] == "summed over input channels"]
    # the first convolution, under each of its state-dict aliases (the decoder holds the encoder too)
    assert "encoder.stages.0.0.convs.0.conv.weight" in [r[0] for r in summed]
    assert all("stages.0.0.convs.0." in r[0] for r in summed)
    assert summed[0][1][1] == 2 and summed[0][2][1] == 1
