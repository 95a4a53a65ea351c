"""Preprocessing: plan from a cohort fingerprint; map images to the working grid and back.

Example:
    >>> from cervicontour.preprocess import make_plan, prepare_image   # doctest: +SKIP
    >>> plan = make_plan(cohort.labelled(), PRIMARY)                  # doctest: +SKIP
    >>> prepared = prepare_image(ct, plan)                            # doctest: +SKIP
    >>> back = prepared.back_to_input(probabilities)                  # doctest: +SKIP
"""

from cervicontour.preprocess.grid import (
    WorkingGrid,
    body_box,
    paste,
    resample_to_working,
    to_input_grid,
    working_grid_of,
)
from cervicontour.preprocess.plan import (
    Normalization,
    Plan,
    fingerprint_cohort,
    load_plan,
    make_plan,
    patch_size_for,
    save_plan,
    target_spacing,
)
from cervicontour.preprocess.prepare import Prepared, prepare_case, prepare_image

__all__ = [
    "Normalization",
    "Plan",
    "Prepared",
    "WorkingGrid",
    "body_box",
    "fingerprint_cohort",
    "load_plan",
    "make_plan",
    "paste",
    "patch_size_for",
    "prepare_case",
    "prepare_image",
    "resample_to_working",
    "save_plan",
    "target_spacing",
    "to_input_grid",
    "working_grid_of",
]
