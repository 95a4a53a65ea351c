"""Inference: the model applied to CTs, back on their own grids, with the clinicians' rules.

- :mod:`.case` — one CT in memory → draft masks and their record (:func:`~.case.predict_case`);
- :mod:`.targets` — compound targets composed from predicted parts (CTVn from nodal groups);
- :mod:`.cohort` — ``predict`` over files (NIfTI, DICOM series, cohorts) → the cohort layout.
"""

from cervicontour.inference.case import CasePrediction, predict_case
from cervicontour.inference.cohort import find_inputs, predict

__all__ = ["CasePrediction", "find_inputs", "predict", "predict_case"]
