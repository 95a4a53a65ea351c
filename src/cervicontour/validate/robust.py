"""The robust z-score the cohort checks, the clinical-choice detection and the case report share."""

from __future__ import annotations

import math

import numpy as np


def robust_z(value: float, others: np.ndarray) -> tuple[float, float]:
    """``(z, median)`` of ``value`` against ``others``; ``z`` is ±inf when the MAD is 0 and value ≠ median.

    Example:
        >>> z, median = robust_z(10.0, np.array([1.0, 2.0, 3.0]))   # MAD = 1
        >>> round(z, 3), median
        (5.396, 2.0)
    """
    median = float(np.median(others))
    mad = float(np.median(np.abs(others - median)))
    if mad == 0:
        return (0.0 if value == median else math.copysign(math.inf, value - median)), median
    return 0.6745 * (value - median) / mad, median
