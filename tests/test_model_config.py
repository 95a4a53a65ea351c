"""Training config: TOML in, resolved TOML out, stable hash, helpful errors; network presets."""

from __future__ import annotations

import pytest

from cervicontour.errors import InputError
from cervicontour.training.train_config import TrainConfig, load_config, source_structures, to_toml


def test_toml_round_trip_keeps_the_hash(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('steps = 7\nstructures = ["rectum", "Bladder"]\npatch_size = [32, 32, 16]\n[augmentation]\nmirror_axes = []\n')
    config = load_config(path, seed=4, fold=None)  # None overrides keep the file's value
    assert config.steps == 7 and config.seed == 4 and config.structures == ("Anorectum", "Bladder")
    assert config.augmentation.mirror_axes == ()
    again = tmp_path / "resolved.toml"
    again.write_text(to_toml(config))
    assert load_config(again) == config and load_config(again).sha256() == config.sha256()
    assert TrainConfig().sha256() != config.sha256()


def test_unknown_keys_and_bad_values_say_what_to_do(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text("step = 7\n")
    with pytest.raises(InputError, match="did you mean 'steps'"):
        load_config(path)
    with pytest.raises(InputError, match="strategy"):
        TrainConfig(strategy="freeze")
    with pytest.raises(InputError, match="fold 5"):
        TrainConfig(fold=5, folds=5)


def test_source_task_is_anatomy_plus_bladder():
    names = source_structures()
    assert names[0] == "Bladder" and "Bone_Pelvic" in names and "CTVn" not in names and "Cervix" not in names


def test_presets_build_with_their_parameter_counts_and_strides():
    torch = pytest.importorskip("torch")
    from cervicontour.networks.network import build_network, count_parameters, preset, total_stride

    net = build_network(preset("cpu-small"), 1, 5)
    assert 1.3e6 < count_parameters(net) < 1.5e6
    assert total_stride(preset("cpu-small")) == (16, 16, 4)
    out = net(torch.zeros(1, 1, 32, 32, 8))
    assert out.shape == (1, 5, 32, 32, 8)
    with pytest.raises(InputError, match="cpu-small"):
        preset("huge")
