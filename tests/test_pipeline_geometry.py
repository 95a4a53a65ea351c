"""predict_case end to end with a hand-made 'network' whose answer is known: the masks must land
exactly where the input says, whatever the input grid (LPS, RAS, permuted, oblique)."""

from __future__ import annotations

import numpy as np
import pytest

from cervicontour.preprocess import Normalization, Plan
from cervicontour.volume import Volume, to_lps

torch = pytest.importorskip("torch")


class ThresholdNet(torch.nn.Module):
    """Logit +20 where the normalised input exceeds 0.5 (HU > 50 with the plan below), else -20,
    for every output channel. Not a learned model: its correct output is known by hand."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return ((x > 0.5).float() * 40 - 20).repeat(1, self.channels, 1, 1, 1)


def _model(spacing, structures=("CTVp", "Parametrium")):
    from cervicontour.networks.bundle import Model

    plan = Plan(tuple(structures), tuple(spacing), (16, 16, 8), Normalization(-1000.0, 1000.0, 0.0, 100.0))
    return Model(ThresholdNet(len(structures)), plan, {}, "threshold", "test", "-")


def _image(direction):
    hu = np.full((30, 26, 14), -1000, np.int16)
    hu[3:27, 2:24, 1:13] = 0  # body
    hu[8:15, 6:12, 4:9] = 200  # the bright 'organ' the ThresholdNet finds
    hu[20:22, 15:17, 9:10] = 200  # a 4-voxel stray blob: the rules remove it
    return Volume(hu, (1.5, 2.0, 3.0), (-20.0, 30.0, 100.0), direction)


def _directions():
    a = np.deg2rad(10)
    oblique = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    return {"LPS": np.eye(3), "RAS": np.diag([-1.0, -1.0, 1.0]), "permuted": np.eye(3)[:, [1, 2, 0]], "oblique": oblique}


@pytest.mark.parametrize("name", list(_directions()))
def test_masks_come_back_on_the_exact_input_grid(name):
    from cervicontour.inference.case import predict_case

    image = _image(_directions()[name])
    result = predict_case(image, _model(to_lps(image).spacing_mm))
    expected = np.zeros(image.shape, np.uint8)
    expected[8:15, 6:12, 4:9] = 1
    for structure in ("CTVp", "Parametrium"):
        mask = result.masks[structure]
        assert mask.same_grid(image) and mask.dtype == np.uint8
    np.testing.assert_array_equal(result.masks["CTVp"].array, expected)  # stray blob removed by the rules
    # Parametrium may overlap CTVp (allowed by the rules): it keeps the same organ
    np.testing.assert_array_equal(result.masks["Parametrium"].array, expected)
    changes = [(c.rule, c.structure, c.voxels) for c in result.changes]
    assert ("components", "CTVp", 4) in changes
    rec = result.structures["CTVp"]
    assert rec["volume_cc"] == pytest.approx(7 * 6 * 5 * 1.5 * 2.0 * 3.0 / 1000)
    assert rec["uncertainty"] < 0.01  # logits ±20: probabilities 0 or 1
    assert set(result.timings_s) >= {"preprocess", "model", "resample_back", "rules"}


def test_a_structure_found_nowhere_is_empty_and_flagged():
    from cervicontour.inference.case import predict_case

    image = _image(np.eye(3)).with_array(np.full((30, 26, 14), -1000, np.int16))
    result = predict_case(image, _model((1.5, 2.0, 3.0)))
    assert all(m.array.sum() == 0 for m in result.masks.values())
    assert result.structures["CTVp"]["review_closely"] and "nothing predicted" in result.structures["CTVp"]["reasons"]


def test_mirror_tta_of_a_mirror_symmetric_network_changes_nothing():
    from cervicontour.inference.case import predict_case

    image = _image(np.diag([-1.0, -1.0, 1.0]))
    model = _model(to_lps(image).spacing_mm)
    plain, tta = predict_case(image, model), predict_case(image, model, tta=True)
    for name in plain.masks:
        np.testing.assert_array_equal(plain.masks[name].array, tta.masks[name].array)
