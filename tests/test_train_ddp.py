"""DistributedDataParallel on 2 CPU processes (gloo): ranks stay in lock-step, rank 0 writes the run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cohort: str, out: str, config: dict, results: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank), "CERVICONTOUR_DDP_BACKEND": "gloo"})
    import torch.distributed as dist

    from cervicontour.training.train import train
    from cervicontour.training.train_config import config_from_dict

    result = train(cohort, out, config_from_dict(config))
    Path(results, f"rank{rank}.json").write_text(json.dumps({"sha": result.weights_sha256, "steps": result.steps_done}))
    dist.destroy_process_group()


@pytest.mark.slow  # ~45 s: two fresh processes import torch and train
def test_two_gloo_ranks_end_with_identical_weights(tiny_cohort, tmp_path):
    import torch.multiprocessing as mp

    config = TINY.replace(steps=3).to_dict()
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_cohort), str(out), config, str(results)), nprocs=2, join=True)
    r0, r1 = (json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 3
    assert r0["sha"] == r1["sha"]  # gradients were all-reduced: both replicas made the same updates
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and (out / "model.pt").is_file()
    # each rank drew its own patches, so DDP trained on different data than one process would
    from cervicontour.training.train import train

    single = train(tiny_cohort, tmp_path / "single", TINY.replace(steps=3))
    assert single.weights_sha256 != r0["sha"]
