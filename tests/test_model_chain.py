"""A model's fallback may carry its own fallback (a chain): a model fitted from the shipped default
keeps the default whole for what it kept, so a kept compound's parts come from the default as the
compound does. Expected channels are each network's own output, computed separately."""

from __future__ import annotations

import numpy as np
import pytest

from model_helpers import lift_head, tiny_cohort, tiny_run  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def three(tiny_run, tmp_path_factory):  # noqa: F811
    """Three tiny networks told apart by their CTVp and Bladder head biases."""
    from cervicontour.networks.bundle import load_model

    folder = tmp_path_factory.mktemp("chain")
    models = []
    for name, ctvp, bladder in (("a", 2.0, -1.0), ("b", -1.0, 1.5), ("c", 0.5, 0.5)):
        lift_head(tiny_run, "CTVp", folder / f"{name}_ctvp.pt", bias=ctvp)
        models.append(load_model(lift_head(folder / f"{name}_ctvp.pt", "Bladder", folder / f"{name}.pt", bias=bladder)))
    return models


def _own(image, model):
    from cervicontour.inference.case import working_probabilities

    return working_probabilities(image, model, tta=False, device="cpu")


def _chain(tmp_path, three):
    """a → b for CTVp; b → c for Bladder and CTVp; saved in one file and read back."""
    from cervicontour.networks.bundle import save_model
    from cervicontour.networks.bundle import load_model

    a, b, c = three
    b_chain = load_model(save_model(tmp_path / "b_chain.pt", b.network, b.plan, b.arch, name="b", version="0", config_sha256="-", fallback=c, fallback_structures=("Bladder", "CTVp")))
    path = save_model(tmp_path / "a_chain.pt", a.network, a.plan, a.arch, name="a", version="0", config_sha256="-", fallback=b_chain, fallback_structures=("CTVp",))
    return load_model(path)


def test_a_chain_is_stored_in_one_file_and_read_back(three, tmp_path):
    import torch

    chain = _chain(tmp_path, three)
    assert chain.fallback is not None and chain.fallback.fallback is not None and chain.fallback.fallback.fallback is None
    assert chain.fallback_structures == ("CTVp",) and chain.fallback.fallback_structures == ("Bladder", "CTVp")
    assert (chain.name, chain.fallback.name) == ("a", "b")
    for key, value in three[2].network.state_dict().items():  # float32 stored as is (not half)
        assert torch.equal(chain.fallback.fallback.network.state_dict()[key], value), key


def test_each_channel_comes_from_the_deepest_model_that_keeps_it(three, tiny_cohort, tmp_path):  # noqa: F811
    from cervicontour.cohort import load_cohort

    image = load_cohort(tiny_cohort)["SYN001"].load_image()
    a, b, c = (_own(image, m) for m in three)
    names = list(three[0].plan.structures)
    for name in ("CTVp", "Bladder"):  # the test can tell the three apart on these channels
        channel = names.index(name)
        assert not np.allclose(a[channel], b[channel]) and not np.allclose(a[channel], c[channel]) and not np.allclose(b[channel], c[channel])
    got = _own(image, _chain(tmp_path, three))
    for name in names:
        # CTVp: a keeps b's, b keeps c's; Bladder: only b keeps c's, a does not keep b's; the rest: a's own
        expected = c if name == "CTVp" else a
        np.testing.assert_allclose(got[names.index(name)], expected[names.index(name)], atol=1e-3, err_msg=name)


def test_a_network_none_of_whose_channels_is_needed_is_not_run(three, tiny_cohort, tmp_path, monkeypatch):  # noqa: F811
    """a keeps all five structures from b: a's network never runs; b runs for its own channels and
    c only for Bladder and CTVp."""
    import cervicontour.networks.infer as infer
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import save_model
    from cervicontour.networks.bundle import load_model

    a, b, c = three
    b_chain = load_model(save_model(tmp_path / "b_chain.pt", b.network, b.plan, b.arch, name="b", version="0", config_sha256="-", fallback=c, fallback_structures=("Bladder", "CTVp")))
    every = tuple(a.plan.structures)
    chain = load_model(save_model(tmp_path / "all.pt", a.network, a.plan, a.arch, name="a", version="0", config_sha256="-", fallback=b_chain, fallback_structures=every))
    ran, real = [], infer.predict_probabilities
    monkeypatch.setattr(infer, "predict_probabilities", lambda network, *args, **kwargs: ran.append(network) or real(network, *args, **kwargs))
    _own(load_cohort(tiny_cohort)["SYN001"].load_image(), chain)
    assert ran == [chain.fallback.fallback.network, chain.fallback.network]  # c (deepest first), then b; never a


@pytest.fixture
def parts_chain(three, tmp_path):
    """A network for the CTVp's parts only (Cervix, Uterus), falling back on b for the CTVp."""
    import dataclasses

    from cervicontour.networks.bundle import save_model
    from cervicontour.networks.bundle import load_model
    from cervicontour.networks.network import build_network

    b = three[1]
    plan = dataclasses.replace(b.plan, structures=("CTVp", "Cervix", "Uterus"))
    return load_model(save_model(tmp_path / "parts.pt", build_network(b.arch, 1, 3), plan, b.arch, name="parts", version="0", config_sha256="-", fallback=b, fallback_structures=("CTVp",)))


def test_a_parts_only_network_runs_over_its_compounds_box_only(three, parts_chain, tiny_cohort, monkeypatch):  # noqa: F811
    """A network kept only for the CTVp's parts (the shipped default's parts network) is run
    over the box parts_region gives only; its channels are 0 outside the box and
    the compound comes from the fallback."""
    import cervicontour.networks.infer as infer
    from cervicontour.inference import case as pipeline
    from cervicontour.cohort import load_cohort
    from cervicontour.preprocess import prepare_image

    a, b = parts_chain, three[1]
    image = load_cohort(tiny_cohort)["SYN001"].load_image()
    prepared = prepare_image(image, a.plan)
    box = (slice(3, 21), slice(5, 30), slice(2, 13))
    seen = []
    monkeypatch.setattr(pipeline, "parts_region", lambda own, taken, theirs, patch, spacing: seen.append((set(own), dict(taken), tuple(patch), tuple(spacing))) or box)
    ran, real = [], infer.predict_probabilities
    monkeypatch.setattr(infer, "predict_probabilities", lambda network, array, patch, **kw: ran.append((network, np.shape(array), tuple(patch))) or real(network, array, patch, **kw))
    got = _own(image, a)
    patch = tuple(a.plan.patch_size)
    assert seen == [({"Cervix", "Uterus"}, {"CTVp": b.plan.structures.index("CTVp")}, patch, tuple(a.plan.spacing_mm))]
    assert [r[0] for r in ran] == [a.fallback.network, a.network] and ran[1][1:] == ((18, 25, 11), patch)
    expected = real(a.network, prepared.image[box], patch, pad_value=float(a.plan.normalization.apply(np.array([-1024.0]))[0]), overlap=pipeline.PREDICT_OVERLAP)
    for c in (1, 2):
        np.testing.assert_allclose(got[(c, *box)], expected[c], atol=1e-6)
        outside = got[c].copy()
        outside[box] = 0
        assert not outside.any()
    np.testing.assert_allclose(got[0], _own(image, b)[b.plan.structures.index("CTVp")], atol=1e-6)


def _hot(shape, region):
    theirs = np.zeros((1, *shape), np.float32)
    theirs[(0, *region)] = 0.9
    return theirs


@pytest.mark.parametrize("shape,region,expected", [
    # 30 mm at 2 mm = 15 voxels each side; grown to one (64, 64, 40) patch, slid back inside the grid
    ((100, 100, 100), (slice(0, 2),) * 3, ((0, 64), (0, 64), (0, 40))),
    ((100, 100, 100), (slice(98, 100),) * 3, ((36, 100), (36, 100), (60, 100))),
    ((100, 100, 100), (slice(40, 45), slice(40, 45), slice(50, 52)), ((11, 75), (11, 75), (31, 71))),  # 25:60 grown by 29: 14 below, 15 above
    ((20, 20, 20), (slice(0, 3),) * 3, ((0, 20), (0, 20), (0, 20))),  # a grid smaller than the patch: whole
    ((100, 100, 100), (slice(10, 90), slice(40, 45), slice(50, 52)), ((0, 100), (11, 75), (31, 71))),  # longer than a patch
])
def test_parts_region_by_hand(shape, region, expected):
    from cervicontour.inference.case import parts_region

    box = parts_region({"Cervix", "Vagina"}, {"CTVp": 0}, _hot(shape, region), (64, 64, 40), (2.0, 2.0, 2.0))
    assert tuple((b.start, b.stop) for b in box) == expected


def test_parts_region_covers_the_whole_grid_for_nodal_groups_or_no_compound():
    from cervicontour.inference.case import parts_region

    hot = _hot((100, 100, 100), (slice(40, 45),) * 3)
    assert parts_region({"LN_Pelvic"}, {"CTVn": 0}, hot, (64, 64, 40), (2.0, 2.0, 2.0)) is None  # groups compose or extend a CTVn
    assert parts_region({"Cervix"}, {"CTVp": 0}, np.zeros_like(hot), (64, 64, 40), (2.0, 2.0, 2.0)) is None  # no CTVp found
    assert parts_region({"Cervix", "Bladder"}, {"CTVp": 0}, hot, (64, 64, 40), (2.0, 2.0, 2.0)) is None  # not only parts


def test_fit_targets_see_the_parts_over_the_whole_grid(parts_chain, tiny_cohort, monkeypatch):
    """fit's source probabilities: a hospital's CTVp may reach beyond the predicted one, so the
    parts network runs over the whole grid there (parts_region is never asked)."""
    from cervicontour.inference import case as pipeline
    from cervicontour.cohort import load_cohort
    from cervicontour.training.targets import source_probabilities

    def refuse(*args, **kwargs):
        raise AssertionError("parts_region asked for fit's targets")

    monkeypatch.setattr(pipeline, "parts_region", refuse)
    image = load_cohort(tiny_cohort)["SYN001"].load_image()
    probabilities = source_probabilities(parts_chain, image)
    assert set(probabilities) == {"CTVp", "Cervix", "Uterus"} and probabilities["Cervix"].any()
