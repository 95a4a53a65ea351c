"""Clinical outputs: DICOM RT Structure Sets out of and into our masks, and DICOM folders to cohorts.

Import-light: pydicom is imported inside the functions that need it (``pip install
"cervicontour[dicom]"``). Modules: :mod:`~cervicontour.export.contours` (planar contours, pure
NumPy), :mod:`~cervicontour.export.masks` (finding masks, placing them on the CT's voxels),
:mod:`~cervicontour.export.rtstruct` (writing), :mod:`~cervicontour.export.rtstruct_import`
(reading and rasterising), :mod:`~cervicontour.export.ct_series` (a NIfTI CT as the DICOM CT series
an RTSTRUCT references), :mod:`~cervicontour.export.dicom_cohort` (folders of patients) and
:mod:`~cervicontour.export.provenance` (reading the engine's ``prediction.json``).
"""
