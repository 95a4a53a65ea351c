"""The network: nnU-Net's ``PlainConvUNet`` (dynamic-network-architectures), one sigmoid channel per structure.

Architectures are described exactly as nnU-Net v2 ``plans.json`` describes them
(``network_class_name`` + ``arch_kwargs``), so our presets and nnU-Net / TotalSegmentator
checkpoints are built by the same function. One other class is known by name: the pretrained
Merlin-family encoder + U-Net decoder (:data:`MERLIN_SEGMENTER`, see :mod:`cervicontour.networks.merlin`).
Axes: ours are ``(X, Y, Z)`` = LPS-reoriented ``[i, j, k]``; nnU-Net's are ``(z, y, x)`` (see
:mod:`cervicontour.training.transfer`).
"""

from __future__ import annotations

import importlib
from copy import deepcopy

from cervicontour.errors import InputError

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
#: :data:`cervicontour.networks.merlin.NETWORK_CLASS` (spelled out: this module does not import torch).
MERLIN_SEGMENTER = "cervicontour.networks.merlin.MerlinSegmenter"
#: the same class under the package's name before issue 23 (``model/``): runs and models saved then still load
LEGACY_MERLIN_SEGMENTERS = ("cervicontour.model.merlin.MerlinSegmenter",)

_COMMON = {
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
_IMPORT_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def _preset(features, strides, kernels, n_conv=2) -> dict:
    n = len(features)
    return {
        "network_class_name": PLAIN_UNET,
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides],
            "n_conv_per_stage": [n_conv] * n,
            "n_conv_per_stage_decoder": [n_conv] * (n - 1),
            **deepcopy(_COMMON),
        },
        "_kw_requires_import": list(_IMPORT_KEYS),
    }


#: Architecture presets (parameters counted for 5 output channels). ``tiny``: 12 k, for tests.
#: ``cpu-small``: 1.4 M, total stride (16, 16, 4) — sized for this project's 2-core CPU (measured
#: ~0.75 s per step, batch 2 of 64×64×32). ``cpu``: 5.5 M. ``gpu``: nnU-Net-like 3d_fullres, 31 M.
PRESETS: dict[str, dict] = {
    "tiny": _preset((4, 8, 16), ((1, 1, 1), (2, 2, 2), (2, 2, 2)), ((3, 3, 3),) * 3, n_conv=1),
    "cpu-small": _preset(
        (8, 16, 32, 64, 128),
        ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1)),
        ((3, 3, 3),) * 5,
    ),
    "cpu": _preset(
        (16, 32, 64, 128, 256),
        ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1)),
        ((3, 3, 3),) * 5,
    ),
    "gpu": _preset(
        (32, 64, 128, 256, 320, 320),
        ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 1)),
        ((3, 3, 3),) * 6,
    ),
}


def preset(name: str) -> dict:
    """A deep copy of a named architecture (``cpu-small``, ``cpu``, ``gpu``)."""
    if name not in PRESETS:
        raise InputError(f"unknown network preset {name!r}; choose one of {', '.join(PRESETS)}")
    return deepcopy(PRESETS[name])


def is_merlin(arch: dict | None) -> bool:
    """Whether ``arch`` describes a :class:`cervicontour.networks.merlin.MerlinSegmenter`."""
    return bool(arch) and arch.get("network_class_name") in (MERLIN_SEGMENTER, *LEGACY_MERLIN_SEGMENTERS)


def total_stride(arch: dict) -> tuple[int, ...]:
    """Product of the strides per axis (or the description's own ``total_stride``): patch sizes
    must be multiples of it."""
    if "total_stride" in arch:
        return tuple(int(v) for v in arch["total_stride"])
    out = [1, 1, 1]
    for s in arch["arch_kwargs"]["strides"]:
        s = [s] * 3 if isinstance(s, int) else s
        out = [a * int(b) for a, b in zip(out, s)]
    return tuple(out)


def _import(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_network(arch: dict, in_channels: int, out_channels: int, *, deep_supervision: bool = False, empty_encoder: bool = False):
    """Instantiate an architecture description (ours or an nnU-Net plans ``architecture`` entry).

    Args:
        arch: ``{"network_class_name", "arch_kwargs", "_kw_requires_import"}``.
        in_channels: image channels (1 for CT).
        out_channels: one per structure (sigmoid) — or nnU-Net's label count for its checkpoints.
        empty_encoder: the caller loads every encoder tensor next (with :func:`load_state` or
            the Merlin loader): a large pretrained encoder (Merlin's 117 M parameters) is then built
            on the ``meta`` device instead of being randomly initialised. Other networks ignore it.

    Returns:
        a ``torch.nn.Module`` mapping ``(B, in, X, Y, Z)`` to logits ``(B, out, X, Y, Z)``.

    Raises:
        InputError: dynamic-network-architectures is missing, or the class is unknown.
    """
    if is_merlin(arch):
        from cervicontour.networks.merlin import build_from_arch

        return build_from_arch(arch, in_channels, out_channels, empty_encoder=empty_encoder)
    try:
        cls = _import(arch["network_class_name"])
    except ModuleNotFoundError as exc:
        raise InputError(
            f"cannot build {arch['network_class_name']}: {exc}; install the model extra: "
            "pip install 'cervicontour[model]' torch==2.13.0"
        ) from None
    kwargs = deepcopy(arch["arch_kwargs"])
    for key in arch.get("_kw_requires_import", _IMPORT_KEYS):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _import(kwargs[key])
    network = cls(input_channels=in_channels, num_classes=out_channels, deep_supervision=deep_supervision, **kwargs)
    if not deep_supervision and hasattr(network, "decoder") and hasattr(network.decoder, "seg_layers"):
        # the lower-resolution heads exist (nnU-Net checkpoints have them) but are never used:
        # freeze them so DistributedDataParallel does not wait for their gradients
        for layer in network.decoder.seg_layers[:-1]:
            layer.requires_grad_(False)
    return network


def load_state(network, state: dict) -> None:
    """``network.load_state_dict(state)`` (strict); when some tensors are still on the ``meta``
    device (``build_network(..., empty_encoder=True)``) the stored tensors are assigned instead of copied."""
    empty = any(t.is_meta for t in network.state_dict().values())
    network.load_state_dict(state, strict=True, assign=empty)


def count_parameters(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))


def head_prefixes(network) -> tuple[str, ...]:
    """State-dict key prefixes of the segmentation head (what transfer learning never loads)."""
    return ("decoder.seg_layers.",)


def encoder_prefixes(network) -> tuple[str, ...]:
    return ("encoder.",)


def storable_state(network, *, half: bool = False) -> dict:
    """``network.state_dict()`` on the CPU, optionally float16, aliases stored once (the decoder of
    a ``PlainConvUNet`` holds the encoder too: 3× smaller file)."""
    state, seen = {}, {}
    for key, value in network.state_dict().items():
        ptr = (value.data_ptr(), tuple(value.shape), value.dtype)
        if ptr not in seen:
            seen[ptr] = (value.half() if half and value.is_floating_point() else value).detach().cpu().clone()
        state[key] = seen[ptr]
    return state
