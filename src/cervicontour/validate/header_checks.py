"""Header checks: does a NIfTI header describe 3-D scalar data in mm with a known orientation?"""

from __future__ import annotations

import math

import numpy as np

from cervicontour.rules.findings import Finding, Severity
from cervicontour.validate.header import DATATYPES, OTHER_DATATYPES, NiftiHeader


def check_header(
    header: NiftiHeader,
    *,
    role: str,
    patient_id: str | None = None,
    structure: str | None = None,
    file: str | None = None,
    tolerance_mm: float = 0.01,
) -> list[Finding]:
    """Check a header for what cervicontour needs: 3-D scalar data in mm with an orientation.

    Args:
        header: from :func:`read_header`.
        role: ``"image"`` or ``"mask"`` (masks must not be scaled).
        tolerance_mm: how far apart qform and sform may put any corner of the field of view.

    Returns:
        Findings ``header.dim``, ``header.datatype``, ``header.pixdim``, ``header.units``,
        ``header.orientation``, ``header.qform_sform`` and ``header.scaling`` (empty if fine).
        A ``header.dim`` or ``header.datatype`` error means the data cannot be used at all.
    """

    def finding(check: str, severity: Severity, expected: str, actual: str, hint: str, **kw) -> Finding:
        return Finding(check, patient_id, structure, severity, expected, actual, hint, file=file, **kw)

    out: list[Finding] = []
    n = header.ndim
    spatial = header.dim[1:4]
    extra = [int(d) for d in header.dim[4 : 1 + n]] if 3 < n <= 7 else []
    if n < 3 or n > 7 or any(d < 1 for d in spatial) or any(d > 1 for d in extra):
        out.append(
            finding(
                "header.dim",
                Severity.ERROR,
                "a 3-D volume (dim[0] = 3, dim[1..3] >= 1)",
                f"dim = {list(header.dim)}: {n}-D, shape {' x '.join(str(int(d)) for d in header.dim[1 : 1 + max(0, min(n, 7))])}",
                "export one 3-D volume per file (split 4-D series; cervicontour cannot choose a time point)",
                value=n,
                unit="dimensions",
            )
        )
    known = DATATYPES.get(header.datatype)
    if known is None:
        name = OTHER_DATATYPES.get(header.datatype, (f"code {header.datatype}", 0))[0]
        out.append(
            finding(
                "header.datatype",
                Severity.ERROR,
                f"a scalar integer or float datatype ({', '.join(v[0] for v in DATATYPES.values())})",
                f"datatype {header.datatype} ({name})",
                "re-export the file as int16 (CT) or uint8 (mask)",
            )
        )
    elif known[1] != header.bitpix:
        out.append(
            finding(
                "header.datatype",
                Severity.ERROR,
                f"bitpix {known[1]} for datatype {header.datatype} ({known[0]})",
                f"bitpix {header.bitpix}",
                "the header contradicts itself: re-export the file from the source system",
            )
        )
    pix = header.pixdim[1:4]
    if not all(math.isfinite(p) and p > 0 for p in pix):
        out.append(
            finding(
                "header.pixdim",
                Severity.ERROR,
                "pixdim[1..3] > 0 (voxel size in mm)",
                f"pixdim[1..3] = {[round(float(p), 6) for p in pix]}",
                "the voxel size is missing: re-export the file with its spacing",
            )
        )
    qfac = header.pixdim[0]
    if header.qform_code > 0 and not (qfac in (-1.0, 0.0, 1.0)):
        out.append(
            finding(
                "header.pixdim",
                Severity.WARNING,
                "pixdim[0] (qfac) = 1 or -1",
                f"pixdim[0] = {qfac:g}",
                "readers treat it as 1; check the slice order against the image",
            )
        )
    unit = header.xyzt_units & 0x07
    if unit == 0:
        out.append(
            finding(
                "header.units",
                Severity.INFO,
                "xyzt_units spatial unit mm (code 2)",
                "unit code 0 (unknown): read as mm, as every NIfTI reader does",
                "nothing to do if the voxel sizes look like mm",
            )
        )
    elif unit != 2:
        out.append(
            finding(
                "header.units",
                Severity.ERROR,
                "xyzt_units spatial unit mm (code 2)",
                f"unit {header.spatial_unit} (code {unit}): spacing {[float(p) for p in pix]} would be off by a factor of 1000",
                "re-export with spacing in mm",
            )
        )
    if header.qform_code <= 0 and header.sform_code <= 0:
        out.append(
            finding(
                "header.orientation",
                Severity.ERROR,
                "qform_code or sform_code > 0 (the header says where the voxels are)",
                f"qform_code = {header.qform_code}, sform_code = {header.sform_code}: no orientation",
                "left/right cannot be known: re-export from the source system (DICOM → NIfTI with dcm2niix or SimpleITK)",
            )
        )
    elif header.qform_code > 0 and header.sform_code > 0 and not unusable(out):
        shift = _corner_distance_mm(header)
        if shift > tolerance_mm:
            out.append(
                finding(
                    "header.qform_sform",
                    Severity.ERROR,
                    f"qform and sform agree within {tolerance_mm:g} mm at every corner of the field of view",
                    f"they differ by up to {shift:.3f} mm",
                    "different programs pick different ones: re-export the file, or set one from the other "
                    "after checking which matches the DICOM",
                    value=shift,
                    unit="mm",
                )
            )
    slope, inter = header.scl_slope, header.scl_inter
    if math.isfinite(slope) and slope != 0 and not math.isfinite(inter):
        out.append(finding("header.scaling", Severity.ERROR, "finite scl_inter", f"scl_inter = {inter}", "re-export the file"))
    elif math.isinf(slope):
        out.append(finding("header.scaling", Severity.ERROR, "finite scl_slope", f"scl_slope = {slope}", "re-export the file"))
    elif role == "mask" and header.scaled:
        out.append(
            finding(
                "header.scaling",
                Severity.WARNING,
                "an unscaled mask (scl_slope 0 or 1, scl_inter 0)",
                f"scl_slope = {slope:g}, scl_inter = {inter:g}",
                "mask values are rescaled on reading; `cervicontour clean` rewrites the mask unscaled if its values are binary",
            )
        )
    return out


def unusable(findings: list[Finding]) -> bool:
    """True when the header findings mean the voxel data cannot be used (dim/datatype/pixdim)."""
    return any(f.is_error and f.check in ("header.dim", "header.datatype", "header.pixdim") for f in findings)


def _corner_distance_mm(header: NiftiHeader) -> float:
    shape = [max(int(d), 1) for d in header.dim[1:4]]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    q = corners @ header.qform_affine().T
    s = corners @ header.sform_affine().T
    return float(np.max(np.linalg.norm(q[:, :3] - s[:, :3], axis=1)))
