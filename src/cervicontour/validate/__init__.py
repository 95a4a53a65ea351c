"""Dataset QA: headers, grids, masks, presence, the clinicians' rules, cohort outliers, de-identification.

Validation returns :class:`Finding` objects (data, never printed text); the CLI, the HTML report
and the review page only render them. :func:`clean_cohort` writes a cleaned copy of a cohort and
leaves what it cannot fix safely as findings.

Check ids (severity when not explained by a note):

=====================  ========  ==============================================================
``file.unreadable``    error     truncated, not NIfTI, or geometry no reader accepts
``header.dim``         error     not one 3-D volume (4-D series, zero-length axis)
``header.datatype``    error     complex/RGB/unknown datatype, or bitpix contradicting it
``header.pixdim``      error     voxel size missing (warning: odd qfac)
``header.units``       error     spatial unit not mm (info: unit unknown, read as mm)
``header.orientation`` error     neither qform nor sform set
``header.qform_sform`` error     qform and sform disagree at a field-of-view corner
``header.scaling``     warning   a mask with scl_slope/scl_inter (error: non-finite scaling)
``image.missing``      error     a labelled patient without a CT
``image.hu``           warning   no air near -1000 HU, or implausibly dense (error: NaN, constant)
``image.slices``       error     fewer than 8 voxels along an axis (``predict`` refuses it)
``image.body``         error     no body: under 0.5 % of voxels above -500 HU (``predict`` refuses it)
``grid.mismatch``      error     mask not on its image's grid (the hint says if clean can fix it)
``mask.binary``        error     values other than 0/1 (the hint gives the binarising rule, if safe)
``mask.dtype``         info      binary but stored as another type
``mask.empty``         error     no voxel
``structure.missing``  error     required by ``[presence]`` in the rules ("no GTVp" note: info)
``structure.unknown``  warning   a NIfTI file whose name is not in the vocabulary
``rules.*``            per rule  overlap, compound, position, laterality, components, volume
``cohort.*``           warning   spacing, extent (scan length), fov, volume, centroid outliers
``deid.header``        error     a free-text header field looks like a name, date or number
``deid.filename``      error     a patient folder or file name does
``deid.dicom``         error     PS3.15 Basic Profile attributes with a value in DICOM files
``deid.notes``         warning   a notes.csv comment does
``validate.crashed``   error     an unexpected failure on one patient (the others are checked)
=====================  ========  ==============================================================

Example:
    >>> from cervicontour.validate import validate_cohort
    >>> result = validate_cohort("out/cohort")     # doctest: +SKIP
    >>> [f.check for f in result.errors]           # doctest: +SKIP
"""

from cervicontour.rules.findings import (
    Finding,
    Severity,
    count_by_severity,
    read_findings_json,
    sort_findings,
    write_findings_json,
)
from cervicontour.validate.clean import CleanResult, FileChange, clean_cohort
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.runner import ValidationResult, validate_cohort

__all__ = [
    "CleanResult",
    "FileChange",
    "Finding",
    "Severity",
    "ValidateOptions",
    "ValidationResult",
    "clean_cohort",
    "count_by_severity",
    "read_findings_json",
    "sort_findings",
    "validate_cohort",
    "write_findings_json",
]
