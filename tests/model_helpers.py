"""Tiny training settings and a tiny cohort shared by the model, train and predict tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cervicontour.training.train_config import TrainConfig

#: 12 k-parameter U-Net, 32×32×16 patches, no validation: a step takes a few milliseconds.
TINY = TrainConfig(network="tiny", patch_budget_voxels=32 * 32 * 16, batch_size=2, steps=3, checkpoint_every=1, folds=1, threads=1, seed=3)


def halve(volume):
    """Every second voxel along each axis: voxel centres stay where they were (spacing doubles)."""
    from cervicontour.volume import Volume

    return Volume(volume.array[::2, ::2, ::2].copy(), tuple(2 * s for s in volume.spacing_mm), volume.origin_mm, volume.direction)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """4 labelled + 1 hold-out phantom patients (seed 11) at half the small resolution (64×64×~26);
    patient SYN004 is stored RAS, as synth does for every fourth patient."""
    from cervicontour.cohort import load_cohort, write_case
    from cervicontour.synth import synthesize_cohort

    full = synthesize_cohort(tmp_path_factory.mktemp("tiny_src") / "c", patients=4, holdout=1, seed=11, size="small")
    out = tmp_path_factory.mktemp("tiny") / "c"
    for case in load_cohort(full).cases():
        masks = {n: halve(case.load_structure(n)) for n in case.structure_names if n in ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium", "Femur_Head_L", "Bone_Pelvic")}
        write_case(out, case.patient_id, halve(case.load_image()), masks)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory) -> Path:
    """A 2-step TINY model trained on the tiny cohort (a run directory with model.pt)."""
    from cervicontour.training.train import train

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train(tiny_cohort, out, TINY.replace(steps=2))
    return out


def lift_head(source, structure: str, out_path: Path, bias: float = 0.5) -> Path:
    """Save ``source``'s model with ``structure``'s head bias set to ``bias`` at ``out_path``: a
    two-step model leaves every probability near the 2 % head prior, so a stage 1 lifted this way
    finds the structure everywhere in the body (what a refiner needs to work on)."""
    import torch

    from cervicontour.networks.bundle import load_model, save_model

    model = load_model(source)
    head = model.network.decoder.seg_layers[-1]
    with torch.no_grad():
        head.bias[model.structures.index(structure)] = bias
    return save_model(out_path, model.network, model.plan, model.arch, name=model.name, version=model.version, config_sha256=model.config_sha256, meta=model.meta)
