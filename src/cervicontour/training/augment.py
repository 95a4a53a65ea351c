"""Data augmentation on torch tensors: spatial (rotation, scaling, elastic, mirroring) and intensity
(gamma, noise, brightness, contrast, low-resolution simulation).

Each sample draws its own parameters from a ``numpy`` generator the caller seeds, so augmentation
is reproducible step by step. Labels are warped with the image (linear, then ≥ 0.5 unless soft).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cervicontour.training.train_config import Augmentation


def _rotation(angles) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, aug: Augmentation, spacing_mm, *, soft: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``images (B, 1, X, Y, Z)`` float and ``labels (B, C, X, Y, Z)`` float in [0, 1].

    Returns new tensors (inputs are not modified). Rotation is mostly about the cranio-caudal
    axis (full angle) with a third of it about the other two, in physical (mm) space. Warped
    labels are thresholded at 0.5 unless ``soft`` (partial-volume targets stay fractions).
    """
    out_i, out_l = [], []
    spacing = np.asarray(spacing_mm, float)
    for b in range(images.shape[0]):
        img, lab = images[b : b + 1], labels[b : b + 1]
        matrix = np.eye(3)
        spatial = False
        if rng.random() < aug.rotation_p:
            deg = np.deg2rad(aug.rotation_deg)
            matrix = _rotation(rng.uniform(-deg, deg, 3) * np.array([1 / 3, 1 / 3, 1.0])) @ matrix
            spatial = True
        if rng.random() < aug.scale_p:
            matrix = matrix * rng.uniform(*aug.scale_range)
            spatial = True
        elastic = rng.random() < aug.elastic_p
        elastic_field = rng.standard_normal((3, 4, 4, 4)) if elastic else None
        if spatial or elastic:
            img, lab = _warp(img, lab, matrix, spacing, elastic_field, aug.elastic_voxels, soft=soft)
        for axis in aug.mirror_axes:
            if rng.random() < 0.5:
                img, lab = img.flip(2 + axis), lab.flip(2 + axis)
        img = _intensity(img, rng, aug)
        out_i.append(img)
        out_l.append(lab)
    return torch.cat(out_i), torch.cat(out_l)


def _warp(img, lab, matrix, spacing, elastic_field, elastic_voxels, *, soft: bool = False):
    shape = img.shape[2:]
    # grid_sample works in normalised coordinates (-1..1) ordered (z, y, x) of a (D, H, W) tensor:
    # our tensor axes are (X, Y, Z) = (D, H, W), so normalised coord order is (Z, Y, X).
    extent = spacing * (np.asarray(shape) - 1) / 2  # half-extent in mm per axis
    # sample point p_out (mm) -> p_in = A^-1 p_out, in normalised units per axis
    inv = np.linalg.inv(matrix)
    a = (inv * extent[None, :]) / extent[:, None]  # normalised: n_in = diag(1/e) inv diag(e) n_out
    theta = np.zeros((1, 3, 4))
    rev = [2, 1, 0]
    theta[0, :, :3] = a[np.ix_(rev, rev)]
    grid = F.affine_grid(torch.as_tensor(theta, dtype=img.dtype, device=img.device), [1, 1, *shape], align_corners=True)
    if elastic_field is not None:
        disp = torch.as_tensor(elastic_field[rev], dtype=img.dtype, device=img.device)[None]
        disp = F.interpolate(disp, size=tuple(shape), mode="trilinear", align_corners=True)[0]
        scale = torch.as_tensor([elastic_voxels * 2 / max(n - 1, 1) for n in np.asarray(shape)[rev]], dtype=img.dtype, device=img.device)
        grid = grid + (disp.permute(1, 2, 3, 0) * scale)[None]
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
    lab = F.grid_sample(lab, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if not soft:
        lab = (lab >= 0.5).to(lab.dtype)
    return img, lab


def _intensity(img: torch.Tensor, rng: np.random.Generator, aug: Augmentation) -> torch.Tensor:
    if rng.random() < aug.lowres_p:
        factor = rng.uniform(*aug.lowres_range)
        if factor > 1.05:
            shape = img.shape[2:]
            small = [max(int(round(n / factor)), 1) for n in shape]
            img = F.interpolate(F.interpolate(img, size=small, mode="nearest"), size=tuple(shape), mode="trilinear", align_corners=False)
    if rng.random() < aug.noise_p:
        noise = torch.as_tensor(rng.standard_normal(tuple(img.shape)).astype(np.float32), device=img.device) * float(rng.uniform(0, aug.noise_std))
        img = img + noise.to(img.dtype)
    if rng.random() < aug.brightness_p:
        img = img * float(rng.uniform(0.75, 1.25))
    if rng.random() < aug.contrast_p:
        mean = img.mean()
        img = (img - mean) * float(rng.uniform(0.75, 1.25)) + mean
    if rng.random() < aug.gamma_p:
        lo, hi = img.min(), img.max()
        span = (hi - lo).clamp_min(1e-6)
        img = ((img - lo) / span) ** float(rng.uniform(*aug.gamma_range)) * span + lo
    return img
