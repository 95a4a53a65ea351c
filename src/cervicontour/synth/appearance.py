"""CT appearance: tissue Hounsfield units, bowel gas, bone cortex, partial-volume blur and noise.

Reference values (typical venous-phase pelvic CT): air −1000, fat −100, muscle 40–50, urine
0–15 (contrast-filled bladder several hundred), unenhanced blood ~40, enhanced arteries
150–300, trabecular bone 150–300, cortical bone 800–1200.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def tissue_hu(contrast: bool, rng: np.random.Generator) -> dict[str, float]:
    """Mean HU per tissue class for one patient (small per-patient jitter)."""
    j = lambda mu, sd: float(mu + rng.normal(0, sd))  # noqa: E731
    enh = 1.0 if contrast else 0.0
    return {
        "air": -1000.0,
        "fat": j(-100, 8),
        "muscle": j(45, 4),
        "cortical": j(1000, 80),
        "marrow": j(230, 30),
        "urine": j(8, 4),
        "bowel_wall": j(40 + 25 * enh, 5),
        "bowel_content": j(20, 8),
        "gas": -980.0,
        "stool": j(-60, 30),
        "uterus": j(45 + 50 * enh, 8),
        "cervix": j(45 + 30 * enh, 6),
        "gtv": j(42 + 15 * enh, 5),
        "vagina": j(42 + 20 * enh, 5),
        "artery": j(45 + 170 * enh, 25 * enh + 3),
        "vein": j(42 + 120 * enh, 20 * enh + 3),
        "kidney": j(35 + 140 * enh, 10),
        "contrast_urine": j(600, 150),
    }


def random_field(shape: tuple[int, ...], sigma_vox: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth zero-mean, unit-variance random field (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    sd = float(field.std()) or 1.0
    return field / sd


def finish(hu: np.ndarray, spacing_mm: tuple[float, float, float], rng: np.random.Generator, *,
           noise_hu: float, hu_offset: float = 0.0) -> np.ndarray:
    """Partial-volume blur and correlated noise; returns int16 HU clipped to [-1024, 3071].

    White noise is added before one Gaussian blur (sigma ~0.6 mm in-plane, ~0.35 slice), which
    both blurs edges like a reconstruction kernel and correlates the noise as in real CT.
    ``noise_hu`` scales the noise: its standard deviation after the blur is ``noise_hu`` times
    the ratio of the discrete kernel's noise gain to the continuous-Gaussian ``gain`` below
    (about 1.21 for the small grid's sub-voxel sigmas, 1.11 at full size). ``hu_offset`` (a
    scanner's calibration) is added to every voxel's rounded HU before the clip. ``hu`` (float32)
    is used as the work buffer.
    """
    sigma = (0.75, 0.75, 0.4) if spacing_mm[0] < 2 else (0.45, 0.45, 0.3)
    gain = 1.0 / np.sqrt(np.prod([2 * np.sqrt(np.pi) * max(s, 0.3) for s in sigma]))
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_hu / gain)
    ndimage.gaussian_filter(hu, sigma, output=hu)
    if hu_offset:  # on the rounded HU, so that an integer offset moves every unclipped voxel by exactly itself
        np.rint(hu, out=hu)
        hu += np.float32(hu_offset)
    np.clip(hu, -1024, 3071, out=hu)
    return np.rint(hu).astype(np.int16)
