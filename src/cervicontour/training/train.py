"""Training: seeded, resumable, one sigmoid channel per structure (Dice + BCE).

Run directory::

    RUN/config.toml          resolved config (its sha256 on the first line and in run.json)
    RUN/run.json             config hash, cohort, split, init source, transfer report, timings
    RUN/plan.json            preprocessing plan
    RUN/log.csv              one row per step (loss) and per validation (Dice/HD95 per structure)
    RUN/curves.png           loss and validation Dice
    RUN/checkpoint_last.pt   model + optimizer + step (resume point), written atomically
    RUN/model.pt             the trained model (what `predict --model RUN` reads)
    RUN/cache/               the training cases on the working grid

Determinism: the batch and augmentation of step ``s`` come from ``default_rng([seed, s, rank])``
and torch runs with deterministic algorithms, so on CPU a run killed at any moment and resumed
ends with bit-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour import __version__ as MODEL_VERSION  # a trained model is stamped with the package version: one version number
from cervicontour.errors import InputError
from cervicontour.io.atomic import atomic_path
from cervicontour.training.train_config import TrainConfig, to_toml
from cervicontour.networks.losses import _loss
from cervicontour.training.run_files import RUN_FILE, LogWriter, RunRecord, plot_curves, read_run_record, write_run_record
from cervicontour.preprocess import Plan, load_plan, make_plan, save_plan



@dataclass
class TrainResult:
    """What :func:`train` returns (also summarised in ``run.json``)."""

    run_dir: Path
    model_path: Path
    steps_done: int
    seconds: float
    last_loss: float
    validation: dict = field(default_factory=dict)
    stopped_by_time: bool = False
    transfer: dict | None = None
    weights_sha256: str = ""


def _dist():
    """``(rank, world_size)``; initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("CERVICONTOUR_DDP_BACKEND") != "gloo" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _labelled_cases(cohort, structures):
    from cervicontour.cohort import load_cohort

    loaded = load_cohort(cohort)
    cases = [c for c in loaded.labelled() if any(c.has(n) for n in structures)]
    if not cases:
        raise InputError(f"{cohort}: no labelled patient has any of {', '.join(structures)}; nothing to train on")
    return cases


def _prepare_run(run_dir: Path, resume: bool) -> None:
    ckpt = run_dir / "checkpoint_last.pt"
    if resume:
        if not ckpt.is_file():
            raise InputError(f"{run_dir}: nothing to resume (no checkpoint_last.pt); start the run without --resume")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir} exists and is not empty; pass --resume to continue it or choose a new folder")
    run_dir.mkdir(parents=True, exist_ok=True)


def train(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    *,
    init: str | os.PathLike | None = None,
    resume: bool = False,
    on_progress=None,
    cache_dir: str | os.PathLike | None = None,
) -> TrainResult:
    """Train (or fine-tune, or resume) a per-structure sigmoid U-Net on a labelled cohort.

    Args:
        cohort: cohort folder (any layout :func:`~cervicontour.cohort.load_cohort` reads).
        out: run directory (new, or an existing run with ``resume=True``).
        config: see :class:`~cervicontour.training.train_config.TrainConfig`.
        init: transfer-learning source — a cervicontour model/run, an nnU-Net v2 results folder
            (``plans.json`` + ``dataset.json`` + ``checkpoint_final.pth``), or a Merlin-family
            encoder (``"astra"``, ``"merlin"``, ``"merlin:PATH"``: the network is then a
            :class:`~cervicontour.networks.merlin.MerlinSegmenter`). ``None``: from scratch.
            See :func:`cervicontour.training.transfer.open_source`.
        resume: continue from ``out/checkpoint_last.pt`` (config, plan and architecture are read
            from the run; the init source is not read again: the checkpoint holds every weight).
        on_progress: called ``(step, total, loss, val_dice_or_None)`` after each step.
        cache_dir: where the working-grid cases are cached (default ``out/cache``; runs of one
            ``fit`` share one).

    Returns:
        :class:`TrainResult`.

    Raises:
        InputError: unusable cohort, run directory or init source.
    """
    import torch

    from cervicontour.training import transfer
    from cervicontour.training.data import load_arrays, split_cases
    from cervicontour.networks.infer import validate
    from cervicontour.networks.network import (
        build_network,
        is_merlin,
        load_state,
        preset,
        total_stride,
    )

    run_dir = Path(out)
    run_info: RunRecord | None = None
    rank, world = _dist()
    if rank == 0:
        _prepare_run(run_dir, resume)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # the other ranks write into the run directory only once it is checked
    if resume:
        run_info = read_run_record(run_dir)
        from cervicontour.training.train_config import config_from_dict

        config = config_from_dict(run_info.config, source=str(run_dir / RUN_FILE))
        init = run_info.init
    device = config.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    if device == "cuda" and world > 1:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    if device == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch size: let cuDNN pick the fastest 3D convolutions
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)

    structures = config.structures
    cases = _labelled_cases(cohort, structures)
    train_cases, val_cases = split_cases(cases, fold=config.fold, folds=config.folds, seed=config.seed)
    from cervicontour.structures import ABSENT_MEANS_EMPTY

    unlabelled = [n for n in structures if n not in ABSENT_MEANS_EMPTY and n not in config.unlabelled_ok and not any(c.has(n) for c in train_cases)]
    if unlabelled:
        raise InputError(
            f"{', '.join(unlabelled)}: no training patient has this contour, so its channel would train on nothing "
            f"(the loss leaves it out, or learns 'empty'); drop it from --structures, or run `cervicontour fit`, "
            "which derives the nodal groups from the compound CTVn and holds other source channels to the source's predictions"
        )
    source = transfer.open_source(init) if init and not resume else None

    # ---- plan and architecture
    if resume:
        arch = (run_info.arch if run_info is not None else None) or preset(config.network)
    else:
        arch = source.arch if source and source.arch else preset(config.network)
    stride = total_stride(arch)
    if resume:
        plan = load_plan(run_dir / "plan.json")
    elif source is not None and source.plan is not None:
        plan = source.plan.with_structures(structures)
        from dataclasses import replace

        plan = replace(plan, patch_size=_fit_patch(plan.patch_size, stride))
        if config.spacing_mm is not None:  # a fixed working spacing set in the config wins over the source's
            plan = replace(plan, spacing_mm=tuple(config.spacing_mm), spacing_rule="fixed")
    else:
        spacing = config.spacing_mm if config.spacing_mm is not None else (source.spacing_mm if source is not None else None)
        plan = make_plan(train_cases, structures, spacing_mm=spacing, budget_voxels=config.patch_budget_voxels, divisor=stride)
    if config.patch_size is not None and not resume:
        from dataclasses import replace

        plan = replace(plan, patch_size=_fit_patch(config.patch_size, stride))
    if is_merlin(arch) and not resume:  # the segmenter maps our normalised input back to HU: part of its arch
        from dataclasses import asdict

        arch = json.loads(json.dumps(arch))
        arch["arch_kwargs"]["normalization"] = asdict(plan.normalization)
    if rank == 0 and not resume:
        save_plan(plan, run_dir / "plan.json")
        (run_dir / "config.toml").write_text(to_toml(config))

    # ---- data
    cache = Path(cache_dir) if cache_dir is not None else run_dir / "cache"
    train_data = load_arrays(train_cases, plan, structures, cache_dir=cache, soft=config.soft_labels)
    val_data = load_arrays(val_cases[: config.val_cases], plan, structures, cache_dir=cache, soft=config.soft_labels) if rank == 0 else []
    pad_value = float(plan.normalization.apply(np.array([-1024.0]))[0])

    # ---- network, transfer, optimiser
    # a Merlin encoder whose every tensor is loaded next is built on the meta device (no 117 M-value random init)
    empty_encoder = resume or (source is not None and source.kind == "merlin")
    network = build_network(arch, 1, len(structures), empty_encoder=empty_encoder)
    report = None
    rows = transfer.head_row_map(source, structures) if source is not None else None
    ckpt = None
    if resume:  # every weight from the checkpoint (before the optimiser takes the parameters)
        ckpt = torch.load(run_dir / "checkpoint_last.pt", map_location=device, weights_only=False)
        load_state(network, ckpt["network"])
    elif source is not None:
        report = transfer.load_into(network, source, structures=structures)
    network.to(device)
    if not resume and (rows is None or None in rows):  # channels the source has no row for start at the prior
        transfer.init_new_head_rows(network, rows, config.head_prior)
    param_groups = transfer.parameter_groups(network, config.strategy, config.lr, config.encoder_lr_factor)
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    use_amp = device == "cuda" and config.amp
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_step, elapsed_before = 0, 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if "scaler" in ckpt and use_amp:
            scaler.load_state_dict(ckpt["scaler"])
        start_step, elapsed_before = int(ckpt["step"]), float(ckpt["seconds"])
    model = network
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(network, device_ids=[torch.cuda.current_device()] if device == "cuda" else None)

    if rank == 0 and not resume:
        write_run_record(run_dir, RunRecord(
            config=config.to_dict(), config_sha256=config.sha256(), cohort=str(Path(cohort).resolve()),
            init=str(init) if init else None, transfer=report.to_dict() if report else None,
            train_cases=tuple(c.patient_id for c in train_cases), val_cases=tuple(c.patient_id for c in val_cases[: config.val_cases]),
            arch=arch, plan_sha256=plan.sha256(), world_size=world, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        ))  # fmt: skip
    log = LogWriter(run_dir / "log.csv", structures, truncate_after=start_step) if rank == 0 else None

    loss_fn = _loss()
    t0 = time.perf_counter()
    step, last_loss, last_val = start_step, float("nan"), {}
    stopped_by_time = False
    while step < config.steps:
        elapsed = _elapsed(elapsed_before + time.perf_counter() - t0, world, device)  # the same on every rank
        if config.max_minutes is not None and elapsed >= config.max_minutes * 60:
            stopped_by_time = True
            break
        rng = np.random.default_rng([config.seed, step, rank])
        images, labels, known = _batch(train_data, plan, config, rng, pad_value, device)
        lr_scale = (1 - _progress(config, step, elapsed)) ** 0.9
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", enabled=use_amp):
            logits = model(images)
        loss, dice_l, bce_l = loss_fn(logits.float(), labels, known)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        last_loss = float(loss.detach())
        val = None
        if rank == 0:
            log.step(step, elapsed_before + time.perf_counter() - t0, optimizer.param_groups[0]["lr"], last_loss, float(dice_l), float(bce_l))
            if val_data and (step % config.val_every == 0 or step == config.steps):
                last_val = validate(network, val_data, plan, device=device, pad_value=pad_value)
                log.validation(step, elapsed_before + time.perf_counter() - t0, last_val)
                val = last_val["mean_dice"]
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(run_dir, network, optimizer, scaler, step, elapsed_before + time.perf_counter() - t0)
        if on_progress:
            on_progress(step, config.steps, last_loss, val)
    seconds = elapsed_before + time.perf_counter() - t0
    model_path = run_dir / "model.pt"
    if rank == 0:
        if stopped_by_time:
            _save_checkpoint(run_dir, network, optimizer, scaler, step, seconds)
            if val_data:
                last_val = validate(network, val_data, plan, device=device, pad_value=pad_value)
                log.validation(step, seconds, last_val)
        from cervicontour.networks.bundle import save_model

        save_model(model_path, network, plan, arch, name=run_dir.name, version=MODEL_VERSION, config_sha256=config.sha256(), meta={
            "steps": step, "seconds": round(seconds, 1), "cohort": str(Path(cohort).resolve()), "init": str(init) if init else None,
            "train_cases": len(train_cases), "validation": last_val,
        })  # fmt: skip
        log.close()
        plot_curves(run_dir / "log.csv", run_dir / "curves.png", structures)
        info = read_run_record(run_dir)
        info.steps_done, info.seconds, info.last_loss, info.validation, info.stopped_by_time = step, round(seconds, 1), last_loss, last_val, stopped_by_time
        write_run_record(run_dir, info)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    transfer_record = report.to_dict() if report else run_info.transfer if run_info is not None else None
    return TrainResult(run_dir, model_path, step, seconds, last_loss, last_val, stopped_by_time, transfer_record, weights_sha256(network))


def weights_sha256(network) -> str:
    """Hash of every tensor of the state dict (names, dtypes, shapes and bytes), in key order."""
    import hashlib

    h = hashlib.sha256()
    for key, tensor in network.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.float() if t.dtype.is_floating_point else t).numpy().tobytes())
    return h.hexdigest()


def _fit_patch(patch, stride) -> tuple[int, int, int]:
    return tuple(max(int(np.ceil(p / s)) * s, s) for p, s in zip(patch, stride))  # type: ignore[return-value]


def _progress(config: TrainConfig, step: int, seconds: float) -> float:
    """Fraction of the schedule spent: by steps, or (``lr_schedule = "time"``) by steps or
    training time, whichever is further along."""
    done = step / config.steps
    if config.lr_schedule == "time":
        done = max(done, seconds / (config.max_minutes * 60))
    return min(done, 1.0)


def _elapsed(seconds: float, world: int, device: str) -> float:
    """Training time so far; under DDP the largest over the ranks, so that every rank stops at
    the same step and a time-based schedule gives every rank the same learning rate."""
    if world > 1:
        import torch
        import torch.distributed as dist

        value = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        seconds = float(value.item())
    return seconds


def _batch(data, plan: Plan, config: TrainConfig, rng, pad_value: float, device: str):
    import torch

    from cervicontour.training.augment import augment_batch
    from cervicontour.training.data import sample_batch

    images, labels, known = sample_batch(data, plan.patch_size, config.batch_size, rng, fg_oversample=config.fg_oversample, pad_value=pad_value)
    # augmentation runs where the network does (on a GPU the CPU would otherwise be the bottleneck);
    # the random draws stay on the numpy generator, so a CPU run is unchanged
    labels_t = torch.from_numpy(labels).to(device).float()
    if data[0].label_max != 1:
        labels_t /= data[0].label_max
    images_t, labels_t = augment_batch(torch.from_numpy(images).to(device), labels_t, rng, config.augmentation, plan.spacing_mm, soft=config.soft_labels)
    if device == "cpu":
        images_t = images_t.contiguous(memory_format=torch.channels_last_3d)
    return images_t, labels_t, torch.from_numpy(known).to(device)


def _save_checkpoint(run_dir: Path, network, optimizer, scaler, step: int, seconds: float) -> None:
    import torch

    payload = {"network": network.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step, "seconds": seconds}
    with atomic_path(run_dir / "checkpoint_last.pt") as tmp:
        torch.save(payload, tmp)
