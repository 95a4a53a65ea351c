"""Meta-training the UniverSeg-style network on a labelled cohort (used when no official weights).

A *task* is one label (any structure the cohort has: the five targets and every anatomy label
under ``structures/sub`` — bones, vessels, muscles, organs…) on axial slices. One training
example = a target slice of one patient plus a support set of K labelled slices of the same
label from *other* patients; the loss is soft Dice + BCE on the target's logits.

Sampling, per example (all from one seeded ``numpy`` generator):

* label uniformly among labels present (non-empty) in ≥ 2 patients;
* target patient among those; target slice: with probability ``1 - negative_fraction`` a slice
  showing the label, otherwise any slice of the scan (often empty: teaches "not here");
* K support slices showing the label, from the other patients (with replacement);
* task augmentation (same for target and support): random left-right / antero-posterior flips;
  in-task augmentation: per-slice intensity scale/shift.

Everything runs on CPU in fp32 (``torch.set_num_threads(threads)``). The checkpoint holds the
official-layout ``state_dict``, the resolved config and its SHA-256, and the loss history; it is
written atomically every ``save_every`` steps and at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cervicontour.baselines.universeg import (
    DEFAULT_BLOCKS,
    SIZE_PX,
    UniverSeg,
    axial_slices,
    to_lps_array,
)
from cervicontour.errors import InputError
from cervicontour.io.atomic import atomic_path

CHECKPOINT_FORMAT = "cervicontour-universeg/1"


@dataclass(frozen=True)
class MetaTrainConfig:
    """Every knob of a meta-training run (stored in the checkpoint with its hash).

    Attributes:
        seed: sampling, initialisation and augmentation.
        max_minutes: wall-clock budget (the run stops after the step that crosses it).
        max_steps: step cap (``0``: only the time budget).
        batch_size: tasks per step. support_size: K during training.
        lr: Adam learning rate (the paper's 1e-4).
        negative_fraction: share of target slices drawn from the whole scan (may be empty).
        blocks: network widths (default: the paper's 4 × (64, 64)).
        structures: labels to train on (empty: every label in the cohort).
        threads: ``torch.set_num_threads``. save_every: checkpoint period in steps.
    """

    seed: int = 0
    max_minutes: float = 10.0
    max_steps: int = 0
    batch_size: int = 2
    support_size: int = 4
    lr: float = 1e-4
    negative_fraction: float = 0.25
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS
    structures: tuple[str, ...] = ()
    threads: int = 2
    save_every: int = 25

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass
class TaskBank:
    """Slices held in memory: images ``[n_S, 128, 128]`` float16 per patient; per label a map
    patient → (positive slice indices, bit-packed masks of those slices)."""

    images: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def trainable(self) -> list[str]:
        return sorted(n for n, per in self.labels.items() if len(per) >= 2)

    def mask(self, label: str, pid: str, z: int) -> torch.Tensor:
        positive, packed = self.labels[label].get(pid, (np.empty(0, int), None))
        hit = np.flatnonzero(positive == z)
        if not hit.size:
            return torch.zeros(SIZE_PX, SIZE_PX)
        bits = np.unpackbits(packed[hit[0]], axis=-1)[:, :SIZE_PX]
        return torch.from_numpy(bits.astype(np.float32))


def load_task_bank(cohort_dir: str | os.PathLike, structures: tuple[str, ...] = ()) -> TaskBank:
    """Read every labelled patient's slices (resized to 128×128, LPS axial order).

    Raises:
        InputError: fewer than 2 labelled patients, or no label present in 2 of them.
    """
    from cervicontour.cohort import load_cohort
    from cervicontour.structures import canonical_name

    wanted = {canonical_name(s) for s in structures}
    bank = TaskBank()
    cases = load_cohort(cohort_dir).labelled()
    if len(cases) < 2:
        raise InputError(f"{cohort_dir}: meta-training needs ≥ 2 labelled patients, found {len(cases)}")
    for case in cases:
        bank.images[case.patient_id] = axial_slices(case.load_image()).half()
        for name in case.structure_names:
            if wanted and name not in wanted:
                continue
            volume = case.load_structure(name)
            if not (to_lps_array(volume) > 0).any():
                continue
            slices = axial_slices(volume, label=True) >= 0.5  # [n_S, 128, 128]
            positive = np.flatnonzero(slices.flatten(1).any(dim=1).numpy())
            packed = np.packbits(slices[positive].numpy(), axis=-1)
            bank.labels.setdefault(name, {})[case.patient_id] = (positive, packed)
    if not bank.trainable():
        raise InputError(f"{cohort_dir}: no label is present in 2 labelled patients; nothing to meta-train on")
    return bank


def sample_batch(
    bank: TaskBank, rng: np.random.Generator, batch_size: int, support_size: int, negative_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(target [B,1,H,W], target_label [B,1,H,W], support_images, support_labels [B,K,1,H,W])``."""
    labels = bank.trainable()
    out = ([], [], [], [])
    for _ in range(batch_size):
        label = labels[rng.integers(len(labels))]
        pids = sorted(bank.labels[label])
        pid = pids[rng.integers(len(pids))]
        positive = bank.labels[label][pid][0]
        if rng.random() < negative_fraction:
            z = int(rng.integers(bank.images[pid].shape[0]))
        else:
            z = int(positive[rng.integers(positive.size)])
        images = [bank.images[pid][z].float()]
        masks = [bank.mask(label, pid, z)]
        others = [p for p in pids if p != pid]
        for _ in range(support_size):
            other = others[rng.integers(len(others))]
            pos = bank.labels[label][other][0]
            zs = int(pos[rng.integers(pos.size)])
            images.append(bank.images[other][zs].float())
            masks.append(bank.mask(label, other, zs))
        img, msk = torch.stack(images), torch.stack(masks)
        flips = [d for d, p in ((1, 0.5), (2, 0.5)) if rng.random() < p]
        if flips:
            img, msk = img.flip(flips), msk.flip(flips)
        scale = torch.from_numpy(rng.uniform(0.9, 1.1, (len(images), 1, 1)).astype(np.float32))
        shift = torch.from_numpy(rng.uniform(-0.05, 0.05, (len(images), 1, 1)).astype(np.float32))
        img = (img * scale + shift).clamp(0, 1)
        for bucket, value in zip(out, (img[:1], msk[:1], img[1:, None], msk[1:, None])):
            bucket.append(value)
    return tuple(torch.stack(b) for b in out)  # type: ignore[return-value]


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice (per example, smooth 1) + mean BCE on logits ``[B,1,H,W]``."""
    prob = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    return (1 - dice).mean() + F.binary_cross_entropy_with_logits(logits, target)


@dataclass(frozen=True)
class TrainResult:
    path: Path
    steps: int
    seconds: float
    losses: tuple[float, ...]

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


def save_checkpoint(path: str | os.PathLike, model: UniverSeg, config: MetaTrainConfig, history: dict) -> Path:
    """Write ``{"format", "state_dict", "config", "config_sha256", "history"}`` atomically."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": json.loads(json.dumps(asdict(config))),
        "config_sha256": config.sha256(),
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def meta_train(
    cohort_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    config: MetaTrainConfig = MetaTrainConfig(),
    *,
    on_step: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Meta-train from scratch on ``cohort_dir``'s labels; save the checkpoint at ``out_path``.

    Args:
        on_step: called as ``on_step(step, loss, elapsed_seconds)`` after every step.

    Returns:
        The checkpoint path, steps done, seconds, and the per-step loss history.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP at start-up only
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    bank = load_task_bank(cohort_dir, config.structures)
    model = UniverSeg(config.blocks).float().train()
    optim = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses: list[float] = []
    start = time.perf_counter()
    step = 0
    while True:
        batch = sample_batch(bank, rng, config.batch_size, config.support_size, config.negative_fraction)
        target, label, s_img, s_lab = batch
        loss = dice_bce_loss(model(target, s_img, s_lab), label)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        step += 1
        losses.append(float(loss.detach()))
        elapsed = time.perf_counter() - start
        if on_step:
            on_step(step, losses[-1], elapsed)
        done = (config.max_steps and step >= config.max_steps) or elapsed >= config.max_minutes * 60
        if done or step % config.save_every == 0:
            history = {"loss": losses, "steps": step, "seconds": elapsed, "labels": bank.trainable()}
            save_checkpoint(out_path, model, config, history)
        if done:
            return TrainResult(Path(out_path), step, elapsed, tuple(losses))
