"""Every tolerance and threshold of validation and cleaning, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValidateOptions:
    """Knobs of ``validate`` and ``clean`` (defaults are what the CLI uses).

    Attributes:
        grid_tolerance_mm: a mask whose spacing or origin differs from its image's by more than
            this (or whose direction cosines differ by more than 1e-5) gets ``grid.mismatch``.
            The same tolerance as :meth:`cervicontour.volume.Volume.same_grid`.
        snap_tolerance_mm: ``clean`` moves a mask onto its image grid only when the shapes match
            and no voxel centre moves further than this — floating-point-level differences, far
            below any CT voxel. Anything larger stays a finding.
        header_tolerance_mm: how far qform and sform may disagree at a field-of-view corner.
        outlier_z: robust z-score (0.6745 · |x − median| / MAD, against the *other* patients)
            above which a value is a cohort outlier.
        min_others: the fewest other patients a cohort comparison needs.
        extent_floor: scan length must also differ from the cohort median by this fraction.
        fov_floor: in-plane field of view, same.
        spacing_floor: slice spacing, same.
        volume_floor_factor: structure volume must also differ by this factor (up or down);
            volumes are compared on a log scale.
        centroid_floor_mm: a structure's position relative to the patient's other primary
            structures must also differ by this many mm.
        hu_air_max: the 0.5th percentile of the image (ignoring padding below -1500 HU) must be
            below this (air is about -1000 HU).
        hu_dense_max: the 99.5th percentile must be below this (dense bone is under 2000 HU).
        workers: threads checking patients in parallel (``None``: up to 2 for 8+ patients).
    """

    grid_tolerance_mm: float = 1e-3
    snap_tolerance_mm: float = 0.01
    header_tolerance_mm: float = 0.01
    outlier_z: float = 3.5
    min_others: int = 3
    extent_floor: float = 0.2
    fov_floor: float = 0.25
    spacing_floor: float = 0.3
    volume_floor_factor: float = 3.0
    centroid_floor_mm: float = 20.0
    hu_air_max: float = -500.0
    hu_dense_max: float = 3000.0
    workers: int | None = None
