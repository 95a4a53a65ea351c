"""UniverSeg-style 2D in-context segmenter (Butoi et al., ICCV 2023): network, weights, inference.

The model segments a *target* slice given a *support set* of K (image, label) slice pairs of the
same task; it never sees the task's name. Architecture, as in the paper (our own code):

* **CrossConv**: the target representation ``u`` is concatenated with each support pair's
  representation ``v_k`` and one convolution is applied to every pair, ``z_k = Conv([u ‖ v_k])``.
* **CrossBlock**: ``u' = Conv(mean_k z_k)`` (target) and ``v'_k = Conv(z_k)`` (each support),
  LeakyReLU after the plain convolutions, none after the cross convolution.
* A U-Net of CrossBlocks: 4 encoder levels (max-pool 2) and 3 decoder levels (bilinear ×2 with
  skip connections), width 64 everywhere, a 1×1 output convolution → one logit map (sigmoid
  gives the probability). Inputs are 128×128, intensities in [0, 1]; the support label is an
  extra channel beside the support image. 1,182,785 parameters.

Because the target only ever sees the *mean* over the support set, permuting the support set
leaves the prediction unchanged (up to float rounding), and any K ≥ 1 works.

The state-dict layout (parameter names and shapes) is that of the official ``universeg``
package, so its published ``universeg_v1_nf64_ss64_STA.pt`` loads with :func:`load_weights`
when the user supplies the file (nothing is downloaded here).

Inference (:func:`predict_volume`; a cohort: :func:`.universeg_cohort.predict_cohort`) runs slice by slice on the axial
slices of the CT viewed in LPS order; each slice is resized to 128×128 in-plane, predicted, the
probability resized back to the slice's own size and thresholded at 0.5, and the result is
re-indexed onto the exact input grid. **Support choice**: for each (case, structure) one
support set of K labelled slices (slices where the structure is present), drawn at random —
seeded — from the labelled support patients, spread over as many patients as possible, and used
for every axial slice of the target. Meta-training samples target slices the same way plus a
share of slices without the structure, so the model learns to answer "empty" when the target
slice does not show what the support shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cervicontour.errors import InputError
from cervicontour.structures import canonical_name
from cervicontour.volume import Volume, array_from_lps, array_to_lps

#: In-plane size the network works at (pixels).
SIZE_PX = 128
#: CT window mapped to [0, 1] (HU): soft tissue with bone still distinguishable.
HU_WINDOW = (-200.0, 300.0)
#: The paper's (and official v1 weights') block widths: (cross features, conv features) per level.
DEFAULT_BLOCKS: tuple[tuple[int, int], ...] = ((64, 64),) * 4


# --------------------------------------------------------------------------- network
class _ConvAct(nn.Module):
    """Conv2d ('same' padding) then LeakyReLU; ``conv`` is the only parameterised child."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.act = act
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="leaky_relu" if act else "linear")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x) if self.act else x


class _PerMember(nn.Module):
    """Apply a 2-D module to every member of a ``[B, S, C, H, W]`` group (held as ``vmapped``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.vmapped = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s = x.shape[:2]
        y = self.vmapped(x.reshape(b * s, *x.shape[2:]))
        return y.reshape(b, s, *y.shape[1:])


class _CrossOp(nn.Module):
    """CrossConv: one convolution on every (target, support member) channel concatenation."""

    def __init__(self, target_ch: int, support_ch: int, out_ch: int) -> None:
        super().__init__()
        self.cross_conv = nn.Conv2d(target_ch + support_ch, out_ch, 3, padding=1)
        nn.init.kaiming_normal_(self.cross_conv.weight, nonlinearity="linear")
        nn.init.zeros_(self.cross_conv.bias)

    def forward(self, target: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """``target [B,1,Ct,H,W]``, ``support [B,S,Cs,H,W]`` → pair features ``[B,S,F,H,W]``."""
        b, s = support.shape[:2]
        pairs = torch.cat([target.expand(b, s, *target.shape[2:]), support], dim=2)
        out = self.cross_conv(pairs.reshape(b * s, *pairs.shape[2:]))
        return out.reshape(b, s, *out.shape[1:])


class CrossBlock(nn.Module):
    """CrossConv → mean over the support set for the target; a conv for target and supports."""

    def __init__(self, in_ch: tuple[int, int], cross_features: int, conv_features: int) -> None:
        super().__init__()
        self.cross = _CrossOp(in_ch[0], in_ch[1], cross_features)
        self.target = _PerMember(_ConvAct(cross_features, conv_features))
        self.support = _PerMember(_ConvAct(cross_features, conv_features))

    def forward(
        self, target: torch.Tensor, support: torch.Tensor, *, need_support: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        pairs = self.cross(target, support)
        new_support = self.support(pairs) if need_support else None
        return self.target(pairs.mean(dim=1, keepdim=True)), new_support


def _each(fn, x: torch.Tensor) -> torch.Tensor:
    b, s = x.shape[:2]
    y = fn(x.reshape(b * s, *x.shape[2:]))
    return y.reshape(b, s, *y.shape[1:])


def _up(x: torch.Tensor) -> torch.Tensor:
    # align_corners=True: what nn.UpsamplingBilinear2d (used by the official weights) does
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class UniverSeg(nn.Module):
    """The in-context U-Net of CrossBlocks.

    Args:
        blocks: (cross features, conv features) per encoder level; the decoder mirrors all but
            the deepest. Default: the paper's ``4 × (64, 64)``.

    Forward:
        ``target [B,1,H,W]``, ``support_images [B,K,1,H,W]``, ``support_labels [B,K,1,H,W]``
        (float32 in [0, 1]; H and W divisible by 2**(levels-1)) → logits ``[B,1,H,W]``.

    Example:
        >>> net = UniverSeg()
        >>> net(torch.rand(2, 1, 64, 64), torch.rand(2, 3, 1, 64, 64), torch.rand(2, 3, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS) -> None:
        super().__init__()
        self.blocks = tuple((int(c), int(v)) for c, v in blocks)
        self.enc_blocks = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        in_ch, skips = (1, 2), []
        for cross_f, conv_f in self.blocks:
            self.enc_blocks.append(CrossBlock(in_ch, cross_f, conv_f))
            in_ch = (conv_f, conv_f)
            skips.append(conv_f)
        for (cross_f, conv_f), skip in zip(self.blocks[-2::-1], skips[-2::-1]):
            self.dec_blocks.append(CrossBlock((in_ch[0] + skip, in_ch[1] + skip), cross_f, conv_f))
            in_ch = (conv_f, conv_f)
        self.out_conv = _ConvAct(in_ch[0], 1, kernel_size=1, act=False)

    def forward(
        self, target: torch.Tensor, support_images: torch.Tensor, support_labels: torch.Tensor
    ) -> torch.Tensor:
        t = target.unsqueeze(1)
        s = torch.cat([support_images, support_labels], dim=2)
        skips = []
        for level, block in enumerate(self.enc_blocks):
            t, s = block(t, s)
            if level < len(self.enc_blocks) - 1:
                skips.append((t, s))
                t, s = _each(lambda x: F.max_pool2d(x, 2), t), _each(lambda x: F.max_pool2d(x, 2), s)
        for n, block in enumerate(self.dec_blocks):
            t_skip, s_skip = skips.pop()
            t = torch.cat([_each(_up, t), t_skip], dim=2)
            s = torch.cat([_each(_up, s), s_skip], dim=2)
            # the last block's support output is never used: skip that convolution (~12% of FLOPs)
            t, s = block(t, s, need_support=n < len(self.dec_blocks) - 1)
        return self.out_conv(t[:, 0])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightsReport:
    """What :func:`load_weights` did: tensor names loaded, skipped (and why), missing."""

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shape_mismatch: tuple[str, ...] = ()
    stripped_prefix: str = ""

    @property
    def skipped(self) -> tuple[str, ...]:
        return self.unexpected + self.shape_mismatch

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
            f"(unexpected {len(self.unexpected)}, shape mismatch {len(self.shape_mismatch)}), "
            f"missing {len(self.missing)}"
        )


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a raw state dict (official weights) or our checkpoint → ``(state_dict, checkpoint)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file; pass an official UniverSeg state dict or a "
                         "checkpoint from `cervicontour baseline universeg train`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a weights file"
        raise InputError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return dict(obj["state_dict"]), obj
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), {}
    raise InputError(f"{path}: expected a state dict (name → tensor) or a checkpoint with 'state_dict'")


def load_weights(model: UniverSeg, path: str | os.PathLike, *, strict: bool = True) -> WeightsReport:
    """Load official-layout UniverSeg weights (or our checkpoint) into ``model``.

    A ``module.`` prefix (DataParallel) is stripped. With ``strict`` any missing, unexpected or
    wrongly shaped tensor is an error that lists them; without it the matching tensors load and
    the rest are reported as skipped/missing (missing ones keep their initial values).

    Raises:
        InputError: unreadable file, or (strict) a layout that is not this network's.
    """
    state, _ = read_state_dict(path)
    prefix = "module." if state and all(k.startswith("module.") for k in state) else ""
    state = {k[len(prefix):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    mismatch = tuple(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    bad = {m.split(":")[0] for m in mismatch}
    loadable = {k: v for k, v in state.items() if k in own and k not in bad}
    if strict and (missing or unexpected or mismatch):
        def _list(items: tuple[str, ...]) -> str:
            return ", ".join(items[:12]) + (f" … (+{len(items) - 12})" if len(items) > 12 else "") or "none"
        raise InputError(
            f"{path}: not UniverSeg weights for blocks {list(model.blocks)}: missing keys [{_list(missing)}]; "
            f"unexpected keys [{_list(unexpected)}]; shape mismatches [{_list(mismatch)}]. "
            "Expected the official universeg state dict (e.g. universeg_v1_nf64_ss64_STA.pt)"
        )
    model.load_state_dict(loadable, strict=False)
    return WeightsReport(str(path), tuple(loadable), missing, unexpected, mismatch, prefix)


def load_model(path: str | os.PathLike | None, *, strict: bool = True) -> tuple[UniverSeg, WeightsReport | None]:
    """A model in eval mode: blocks from the checkpoint's config (default widths otherwise)."""
    if path is None:
        return UniverSeg().eval(), None
    _, checkpoint = read_state_dict(path)
    blocks = tuple(tuple(b) for b in checkpoint.get("config", {}).get("blocks", DEFAULT_BLOCKS))
    model = UniverSeg(blocks)
    report = load_weights(model, path, strict=strict)
    return model.eval(), report


# --------------------------------------------------------------------------- slices and geometry
def to_lps_array(volume: Volume) -> np.ndarray:
    """The volume's array indexed [L, P, S] (a view: transposes and flips only)."""
    try:
        return array_to_lps(volume.array, volume.direction)
    except ValueError as exc:
        raise InputError(f"{exc}; resample the CT onto an axial grid first") from None


def from_lps_array(array_lps: np.ndarray, like: Volume) -> np.ndarray:
    """Inverse of :func:`to_lps_array`: an [L, P, S] array back in ``like``'s index order."""
    return np.ascontiguousarray(array_from_lps(array_lps, like.direction))


def normalise_ct(array_hu: np.ndarray) -> np.ndarray:
    """HU → float32 in [0, 1] through :data:`HU_WINDOW`."""
    lo, hi = HU_WINDOW
    return np.clip((np.asarray(array_hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def resize_slices(slices: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W]`` → float32 ``[N, *size]`` (bilinear; identity when the size already matches)."""
    x = torch.as_tensor(np.ascontiguousarray(slices) if isinstance(slices, np.ndarray) else slices)
    x = x.float()
    if tuple(x.shape[-2:]) == tuple(size):
        return x.clone()
    return F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def axial_slices(volume: Volume, *, label: bool = False) -> torch.Tensor:
    """Axial slices ``[n_S, 128, 128]`` in LPS order: CT normalised, masks as 0/1 (bilinear)."""
    array = to_lps_array(volume)
    array = (array > 0).astype(np.float32) if label else normalise_ct(array)
    return resize_slices(np.moveaxis(array, 2, 0), (SIZE_PX, SIZE_PX))


# --------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class Support:
    """K support slice pairs for one task: ``images``/``labels`` float32 ``[K, 1, 128, 128]``."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: tuple[tuple[str, int], ...] = field(default_factory=tuple)  # (patient, LPS slice)


@torch.no_grad()
def predict_volume(
    model: UniverSeg, image: Volume, support: Support, *, batch_slices: int = 4, threshold: float = 0.5
) -> Volume:
    """Segment every axial slice of ``image`` with one support set; uint8 mask on the input grid.

    Args:
        model: an eval-mode :class:`UniverSeg`.
        image: CT in HU, any axis order/orientation that permutations and flips map to LPS.
        support: the task's support set (same structure, other patients).
        batch_slices: target slices per forward pass (memory vs speed).

    Returns:
        A binary uint8 Volume on exactly ``image``'s grid (shape, spacing, origin, direction).
    """
    model.eval()
    lps = to_lps_array(image)
    h, w = lps.shape[:2]
    slices = axial_slices(image)
    k = support.images.shape[0]
    probs = []
    for start in range(0, slices.shape[0], batch_slices):
        target = slices[start : start + batch_slices, None]
        b = target.shape[0]
        logits = model(target, support.images[None].expand(b, k, -1, -1, -1),
                       support.labels[None].expand(b, k, -1, -1, -1))
        probs.append(torch.sigmoid(logits[:, 0]))
    prob = resize_slices(torch.cat(probs), (h, w)).numpy()  # [n_S, h, w]
    mask_lps = np.moveaxis(prob >= threshold, 0, 2).astype(np.uint8)
    return image.with_array(from_lps_array(mask_lps, image), source="universeg")


def draw_support(cases: list, structure: str, k: int, rng: np.random.Generator) -> Support:
    """K random labelled slices of ``structure``, spread round-robin over shuffled patients.

    Args:
        cases: labelled :class:`~cervicontour.cohort.Case` objects (the target excluded).

    Raises:
        InputError: no case has a non-empty ``structure`` mask.
    """
    name = canonical_name(structure)
    pools = []
    for case in cases:
        if not case.has(name):
            continue
        mask = to_lps_array(case.load_structure(name)) > 0
        positive = np.flatnonzero(mask.any(axis=(0, 1)))
        if positive.size:
            pools.append((case, rng.permutation(positive).tolist()))
    if not pools:
        raise InputError(f"no support patient has a non-empty {name!r} mask; add labelled patients")
    order = rng.permutation(len(pools))
    picks: list[tuple[int, int]] = []
    while len(picks) < k:
        for p in order:
            pool = pools[p][1]
            picks.append((int(p), pool[len(picks) // len(pools) % len(pool)]))
            if len(picks) == k:
                break
    images, labels = [], []
    for p in sorted({p for p, _ in picks}):
        case = pools[p][0]
        wanted = [z for q, z in picks if q == p]
        images.append(axial_slices(case.load_image())[wanted])
        labels.append(axial_slices(case.load_structure(name), label=True)[wanted])
    sources = tuple((pools[p][0].patient_id, z) for p in sorted({p for p, _ in picks})
                    for q, z in picks if q == p)
    return Support(torch.cat(images)[:, None], torch.cat(labels)[:, None], sources)
