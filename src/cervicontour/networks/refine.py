"""Second stage: refine one structure's probability map near its native resolution.

nnU-Net's cascade idea (a full-resolution network that sees the CT *and* the coarse stage's
segmentation), applied to the one structure where the coarse stage falls short: CTVn, a shell
about two working voxels thick (vessels + 7 mm), whose errors are one-voxel boundary errors along
its whole length. Why ours and not nnU-Net's cascade: nnU-Net's stage 2 re-segments every class
from a softmax label map (no overlaps, see the issue), and re-trains the whole image; here a small
U-Net (dynamic-network-architectures' ``PlainConvUNet``) sees only the box around the coarse CTVn
and adds a correction to its logit (``logit(p_coarse) + net(x)``, the last layer zero-initialised,
so an untrained refiner returns the coarse map unchanged).

Inputs (channels, in order): the normalised CT, the coarse probability of the refined structure,
the coarse probabilities of the context structures (CTVn excludes CTVp and the Anorectum and may
overlap the Bladder), and two constant channels with the grid's in-plane and through-plane
spacing (the 7 mm margin is a different number of voxels on each patient's grid).

Grid: the input's own grid reoriented to LPS (axis permutations and flips only), where its spacing
lies inside the range the refiner was trained on; outside it (e.g. a 0.8 mm CT for a refiner
trained at 3.3-3.8 mm), the box is resampled linearly to the nearest spacing inside the range
and the result mapped back (:mod:`cervicontour.preprocess.grid`, the same map as the working grid).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.preprocess.grid import WorkingGrid, resample_to_working, to_input_grid, working_grid_of
from cervicontour.preprocess.plan import Normalization
from cervicontour.volume import Volume, lps_axes, to_lps

#: The refiner's architecture (parameters: 0.34 M for 7 input channels).
REFINER_FEATURES = (16, 32, 64)


def refiner_arch() -> dict:
    """``PlainConvUNet``, three stages (16/32/64 features, strides 1/2/2), two convolutions each."""
    from cervicontour.networks.network import _preset

    return _preset(REFINER_FEATURES, ((1, 1, 1), (2, 2, 2), (2, 2, 2)), ((3, 3, 3),) * 3)


@dataclass
class Refiner:
    """A trained second stage for one structure.

    Attributes:
        structure: the structure it refines (e.g. ``"CTVn"``).
        context: coarse probability maps it also reads (e.g. CTVp, Anorectum, Bladder).
        network: maps ``(B, C, X, Y, Z)`` to the refined logit ``(B, 1, X, Y, Z)``
            (:class:`ResidualLogit` around the U-Net).
        spacing_min_mm, spacing_max_mm: LPS spacing range of its training grids (the box is
            resampled into it when the input lies outside).
        patch_size: sliding-window size (voxels).
        region_threshold: the box is where the coarse probability reaches this ...
        region_margin_vox: ... grown by this many voxels.
        meta: provenance (data, steps, validation Dice).
    """

    structure: str
    context: tuple[str, ...]
    network: object
    arch: dict
    spacing_min_mm: tuple[float, float, float]
    spacing_max_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int] = (48, 48, 32)
    region_threshold: float = 0.02
    region_margin_vox: int = 4
    meta: dict = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The coarse maps it reads: the refined structure first, then the context."""
        return (self.structure, *self.context)

    def to_payload(self, *, half: bool = False) -> dict:
        from cervicontour.networks.network import storable_state

        state = storable_state(self.network.unet, half=half)
        return {
            "structure": self.structure, "context": list(self.context), "arch": self.arch,
            "spacing_min_mm": list(self.spacing_min_mm), "spacing_max_mm": list(self.spacing_max_mm),
            "patch_size": list(self.patch_size), "region_threshold": self.region_threshold,
            "region_margin_vox": self.region_margin_vox, "meta": self.meta, "state_dict": state,
        }  # fmt: skip

    @classmethod
    def from_payload(cls, payload: dict, *, device: str = "cpu") -> "Refiner":
        from cervicontour.networks.network import build_network, load_state

        arch = payload["arch"]
        unet = build_network(arch, _in_channels(payload["context"]), 1)
        load_state(unet, {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
        return cls(
            payload["structure"], tuple(payload["context"]), ResidualLogit(unet).to(device).eval(), arch,
            tuple(payload["spacing_min_mm"]), tuple(payload["spacing_max_mm"]), tuple(payload["patch_size"]),
            float(payload["region_threshold"]), int(payload["region_margin_vox"]), dict(payload.get("meta", {})),
        )  # fmt: skip


def _in_channels(context) -> int:
    """CT + the refined structure's coarse map + one per context structure + two spacing channels."""
    return 1 + 1 + len(context) + 2


@functools.cache
def _residual_logit_class():
    import torch

    class ResidualLogit(torch.nn.Module):
        """``logit(p_coarse) + unet(x)``; channel 1 of ``x`` is the coarse probability."""

        def __init__(self, unet) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x):
            p = x[:, 1:2].clamp(1e-4, 1 - 1e-4)
            return torch.log(p / (1 - p)) + self.unet(x)

    return ResidualLogit


def ResidualLogit(unet):  # noqa: N802 - a class built lazily (torch is imported only when used)
    return _residual_logit_class()(unet)


def new_refiner(structure: str, context, spacing_min_mm, spacing_max_mm, *, seed: int = 0, patch_size=(48, 48, 32)) -> Refiner:
    """An untrained refiner (it returns the coarse map unchanged until trained)."""
    import torch

    from cervicontour.networks.network import build_network

    torch.manual_seed(seed)
    arch = refiner_arch()
    unet = build_network(arch, _in_channels(context), 1)
    head = unet.decoder.seg_layers[-1]
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    spacing_min = tuple(float(v) for v in spacing_min_mm)
    spacing_max = tuple(float(v) for v in spacing_max_mm)
    return Refiner(structure, tuple(context), ResidualLogit(unet), arch, spacing_min, spacing_max, tuple(int(v) for v in patch_size))


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class RefineInputs:
    """A box on the refine grid.

    Attributes:
        x: ``(C, X, Y, Z)`` float32 network input over the whole box (LPS axes).
        grid: the map between the input box and the refine grid.
        region: the part of the box the network runs on (slices of the refine grid).
        pad_values: per-channel value for padding a region smaller than the patch.
    """

    x: np.ndarray
    grid: WorkingGrid
    region: tuple[slice, ...]
    pad_values: tuple[float, ...]


def refine_spacing(lps_spacing_mm, spacing_min_mm, spacing_max_mm) -> tuple[float, float, float]:
    """The input's LPS spacing clipped into the trained range, per axis."""
    return tuple(float(v) for v in np.clip(np.asarray(lps_spacing_mm, float), spacing_min_mm, spacing_max_mm))


def spacing_channels(spacing_mm) -> tuple[float, float]:
    """The two constant spacing channels: in-plane and through-plane, centred and scaled to ~unit
    range on the synthetic cohort's 3.3-4.1 mm / 4.5-6 mm spacings. Fixed numbers, not the training
    cohort's statistics, so the channels mean the same thing in every refiner (a refiner trained on
    finer CT sees larger constant offsets, which its first layer absorbs)."""
    s = np.asarray(spacing_mm, float)
    return float((0.5 * (s[0] + s[1]) - 3.6) / 0.3), float((s[2] - 5.2) / 0.5)


def build_inputs(refiner: Refiner, ct_box: Volume, coarse: Mapping[str, np.ndarray], normalization: Normalization) -> RefineInputs:
    """The refiner's input for one box of the input grid.

    Args:
        ct_box: the CT (HU) over the box, with the box's geometry (any orientation).
        coarse: structure → coarse probabilities over the box (the box's array order), for
            every name in ``refiner.inputs``.
    """
    missing = [n for n in refiner.inputs if n not in coarse]
    if missing:
        raise InputError(f"the {refiner.structure} refiner needs the coarse maps of {', '.join(missing)}; the model does not predict them")
    order, _ = lps_axes(ct_box.direction)
    lps_spacing = [ct_box.spacing_mm[a] for a in order]
    spacing = refine_spacing(lps_spacing, refiner.spacing_min_mm, refiner.spacing_max_mm)
    grid, cropped = working_grid_of(ct_box, spacing, body_threshold_hu=None)
    channels = [normalization.apply(resample_to_working(cropped, grid, order=1))]
    channels += [np.clip(_onto(grid, ct_box, coarse[name]), 0.0, 1.0) for name in refiner.inputs]
    sp = spacing_channels(grid.spacing_mm)
    channels += [np.full(grid.shape, v, np.float32) for v in sp]
    x = np.stack(channels).astype(np.float32)
    pads = (float(normalization.apply(np.array([-1024.0]))[0]), *([0.0] * len(refiner.inputs)), *sp)
    return RefineInputs(x, grid, _region(x[1], refiner.region_threshold, refiner.region_margin_vox), pads)


def _onto(grid: WorkingGrid, box: Volume, array: np.ndarray) -> np.ndarray:
    """An array over the box (the box's order) on the refine grid: reoriented to LPS, then linear."""
    return resample_to_working(to_lps(box.with_array(np.asarray(array, np.float32))), grid, order=1)


def _region(p: np.ndarray, threshold: float, margin: int) -> tuple[slice, ...]:
    hot = np.argwhere(p >= threshold)
    if hot.size == 0:
        return (slice(0, 0),) * 3
    lo = np.maximum(hot.min(0) - margin, 0)
    hi = np.minimum(hot.max(0) + 1 + margin, p.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def refine(refiner: Refiner, ct_box: Volume, coarse: Mapping[str, np.ndarray], normalization: Normalization, *, device: str = "cpu", mirror_axes: tuple[int, ...] = ()) -> np.ndarray:
    """Refined probabilities of ``refiner.structure`` over the box (the box's shape and order).

    Outside the region (coarse probability below ``region_threshold``, grown by the margin) the
    coarse map is kept.
    """
    from cervicontour.networks.infer import predict_probabilities

    inp = build_inputs(refiner, ct_box, coarse, normalization)
    refined = inp.x[1].copy()
    if inp.x[(1, *inp.region)].size:
        x = inp.x[(slice(None), *inp.region)]
        out = predict_probabilities(refiner.network, x, refiner.patch_size, pad_value=inp.pad_values, overlap=0.5, device=device, mirror_axes=mirror_axes)
        refined[inp.region] = out[0]
    values, _ = to_input_grid(refined, inp.grid)
    return values


# ----------------------------------------------------------------------------- training
@dataclass
class RefineCase:
    """One training case on its refine grid: input region, label, and the label's voxels outside
    the region (counted as missed in the validation Dice)."""

    patient_id: str
    x: np.ndarray
    y: np.ndarray
    missed_outside: int
    pad_values: tuple[float, ...]


def refine_case(refiner: Refiner, ct_box: Volume, coarse: Mapping[str, np.ndarray], reference_box: np.ndarray, normalization: Normalization, patient_id: str) -> RefineCase:
    """A labelled case's training input: ``reference_box`` (the reference mask over the box) goes
    onto the refine grid like the probabilities (linear, then ≥ 0.5)."""
    inp = build_inputs(refiner, ct_box, coarse, normalization)
    y = _onto(inp.grid, ct_box, reference_box > 0) >= 0.5
    inside = y[inp.region]
    return RefineCase(patient_id, np.ascontiguousarray(inp.x[(slice(None), *inp.region)]), inside.astype(np.float32), int(y.sum() - inside.sum()), inp.pad_values)


def _padded(case: RefineCase, patch) -> tuple[np.ndarray, np.ndarray]:
    shape = np.asarray(case.y.shape)
    target = np.maximum(shape, patch)
    if np.all(target == shape):
        return case.x, case.y
    x = np.empty((case.x.shape[0], *target), np.float32)
    for c, v in enumerate(case.pad_values):
        x[c] = v
    lo = (target - shape) // 2
    sl = tuple(slice(a, a + n) for a, n in zip(lo, shape))
    x[(slice(None), *sl)] = case.x
    y = np.zeros(target, np.float32)
    y[sl] = case.y
    return x, y


def _patch(case: RefineCase, patch, rng) -> tuple[np.ndarray, np.ndarray]:
    x, y = _padded(case, patch)
    start = [int(rng.integers(0, n - p + 1)) for n, p in zip(y.shape, patch)]
    sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
    x, y = x[(slice(None), *sl)], y[sl]
    if rng.random() < 0.5:  # left-right mirror: the only flip that keeps the anatomy plausible
        x, y = x[:, ::-1], y[::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def dice_on_grid(refiner: Refiner, cases: list[RefineCase], *, device: str = "cpu") -> float:
    """Mean Dice (threshold 0.5) of the refined maps on the refine grids of ``cases``."""
    from cervicontour.networks.infer import predict_probabilities

    scores = []
    for case in cases:
        p = predict_probabilities(refiner.network, case.x, refiner.patch_size, pad_value=case.pad_values, overlap=0.5, device=device)[0]
        m, y = p >= 0.5, case.y > 0
        scores.append(2 * np.logical_and(m, y).sum() / max(m.sum() + y.sum() + case.missed_outside, 1))
    return float(np.mean(scores))


def train_refiner(
    refiner: Refiner,
    train_cases: list[RefineCase],
    val_cases: list[RefineCase],
    *,
    steps: int | None = None,
    minutes: float | None = None,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    validate_every: int = 100,
    device: str = "cpu",
    progress: Callable[[int, float, float, float | None], None] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
) -> dict:
    """Fit the refiner: AdamW, poly learning-rate decay over ``steps`` or over ``minutes`` of
    training time, soft Dice + BCE (the main model's loss), random patches with left-right mirroring.

    ``checkpoint``: a file written (atomically) every ``checkpoint_every`` steps with the weights,
    the optimiser, the step, the patch generator's state and the curve; when it exists at the
    start the run continues from it, so with ``steps`` a run killed and restarted ends with the
    same weights as an uninterrupted one (on the CPU).

    Returns:
        a record: steps, seconds, validation Dice before/after, and the curve.
    """
    import torch

    from cervicontour.networks.losses import _loss

    if (steps is None) == (minutes is None):
        raise InputError("train_refiner: give exactly one of steps or minutes")
    if not train_cases:
        raise InputError("train_refiner: no training cases")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = refiner.network.to(device).train()
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    loss_fn = _loss()
    curve, step, before = [], 0, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        net.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        curve, step, before, start_dice = state["curve"], int(state["step"]), float(state["seconds"]), state["start_dice"]
    else:
        start_dice = dice_on_grid(refiner, val_cases, device=device) if val_cases else None
    t0 = time.perf_counter() - before
    budget = None if minutes is None else 60.0 * minutes
    while True:
        elapsed = time.perf_counter() - t0
        done = step / steps if steps is not None else elapsed / budget
        if done >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - done) ** 0.9
        batch = [_patch(train_cases[int(rng.integers(len(train_cases)))], refiner.patch_size, rng) for _ in range(batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(device)
        y = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].to(device)
        net.train()
        loss, _, _ = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        val = None
        if val_cases and step % validate_every == 0:
            val = dice_on_grid(refiner, val_cases, device=device)
            curve.append({"step": step, "seconds": round(time.perf_counter() - t0, 1), "loss": round(float(loss.detach()), 5), "val_dice": round(val, 4)})
        if checkpoint is not None and step % checkpoint_every == 0:
            _save_refiner_checkpoint(Path(checkpoint), net, optimizer, rng, step, time.perf_counter() - t0, curve, start_dice)
        if progress is not None:
            progress(step, time.perf_counter() - t0, float(loss.detach()), val)
    net.eval()
    end_dice = dice_on_grid(refiner, val_cases, device=device) if val_cases else None
    return {
        "steps": step, "seconds": round(time.perf_counter() - t0, 1), "batch_size": batch_size, "lr": lr, "seed": seed,
        "train_patients": [c.patient_id for c in train_cases], "val_patients": [c.patient_id for c in val_cases],
        "val_dice_refine_grid": {"coarse": start_dice, "refined": end_dice}, "curve": curve,
    }  # fmt: skip


def _save_refiner_checkpoint(path: Path, net, optimizer, rng, step: int, seconds: float, curve: list, start_dice) -> None:
    import torch

    from cervicontour.io.atomic import atomic_path

    payload = {"network": net.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
               "step": step, "seconds": seconds, "curve": curve, "start_dice": start_dice}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


__all__ = ["RefineCase", "RefineInputs", "Refiner", "build_inputs", "new_refiner", "refine", "refine_case", "refine_spacing", "train_refiner"]
