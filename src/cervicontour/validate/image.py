"""Image checks: does the CT look like CT in Hounsfield units, and what are its scan dimensions?"""

from __future__ import annotations

import numpy as np

from cervicontour.rules.findings import Finding, Severity
from cervicontour.validate.options import ValidateOptions
from cervicontour.volume import Volume


def check_hu(image: Volume, *, patient_id: str | None, file: str | None, options: ValidateOptions) -> list[Finding]:
    """``image.hu``: does the image look like CT in Hounsfield units?

    Looks at about a million voxels (a regular subsample). Values below -1500 are taken as
    padding outside the reconstruction circle and ignored.
    """
    array = image.array
    step = max(1, int(round((array.size / 1e6) ** (1 / 3))))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float64).ravel()

    def finding(severity, expected, actual, hint):
        return Finding("image.hu", patient_id, None, severity, expected, actual, hint, file=file)

    if not np.all(np.isfinite(sample)):
        return [finding(Severity.ERROR, "finite voxel values", "NaN or infinite values", "re-export the CT")]
    body = sample[sample > -1500]
    if body.size == 0 or body.min() == body.max():
        value = float(sample[0]) if sample.size else float("nan")
        return [finding(Severity.ERROR, "a CT with varying values", f"every voxel is {value:g}", "re-export the CT")]
    low, high = np.percentile(body, [0.5, 99.5])
    out = []
    if low > options.hu_air_max:
        hint = (
            "the values look unrescaled (stored values without RescaleIntercept ≈ -1024): re-export with rescaling"
            if low >= 0
            else "check that this is a CT in HU and that the body is not cropped to the skin"
        )
        out.append(finding(Severity.WARNING, f"air near -1000 HU (0.5th percentile below {options.hu_air_max:g} HU)",
                           f"0.5th percentile {low:.0f} HU", hint))
    if high > options.hu_dense_max:
        out.append(finding(Severity.WARNING, f"99.5th percentile below {options.hu_dense_max:g} HU (dense bone)",
                           f"99.5th percentile {high:.0f} HU",
                           "check the rescale slope/intercept; large metal implants also do this"))
    return out


def check_gate(image: Volume, *, patient_id: str | None, file: str | None) -> list[Finding]:
    """``image.slices`` and ``image.body``: what the input gate (:mod:`cervicontour.io.gate`) would
    refuse at ``predict`` and :func:`check_hu` does not already say (too few slices; no body)."""
    from cervicontour.io.gate import ct_problems

    return [Finding(f"image.{p.check}", patient_id, None, Severity.ERROR, p.expected, p.actual, p.hint, file=file)
            for p in ct_problems(image) if p.check in ("slices", "body")]


def slice_axis(image: Volume) -> int:
    """The array axis closest to the patient's superior-inferior direction."""
    return int(np.argmax(np.abs(image.direction[2, :])))


def image_features(image: Volume) -> dict[str, float]:
    axis = slice_axis(image)
    inplane = [a for a in range(3) if a != axis]
    return {
        "slice_spacing_mm": image.spacing_mm[axis],
        "n_slices": float(image.shape[axis]),
        "scan_length_mm": image.shape[axis] * image.spacing_mm[axis],
        "fov_mm": max(image.extent_mm[a] for a in inplane),
    }
