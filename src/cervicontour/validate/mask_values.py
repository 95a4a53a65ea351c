"""What a mask holds (0/1, 0/255, fractions, several labels) and the stated rule to binarise it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaskValues:
    """What a mask holds: ``binary`` if only 0 and 1; else the fix (if any) and what was found."""

    binary: bool
    found: str
    rule: str | None  # how to binarise safely, None if it cannot be done safely


def mask_values(array: np.ndarray) -> MaskValues:
    """Classify a mask's values (fast path: integer arrays with min >= 0 and max <= 1)."""
    if array.dtype.kind in "ub" or array.dtype.kind == "i":
        hi = int(array.max()) if array.size else 0
        lo = 0 if array.dtype.kind in "ub" or hi > 1 else (int(array.min()) if array.size else 0)
        if lo >= 0 and hi <= 1:
            return MaskValues(True, "0/1", None)
    else:
        if not np.all(np.isfinite(array)):
            return MaskValues(False, "NaN or infinite values", None)
        lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    nonzero = array[array != 0]
    values = np.unique(nonzero)
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
    if values.size == 0 or (values.size == 1 and values[0] == 1):
        return MaskValues(True, "0/1", None)
    found = f"values 0 and {shown} ({array.dtype})"
    if values.size == 1:
        return MaskValues(False, found, f"rule: inside = value != 0, one non-zero value {values[0]:g}")
    if array.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return MaskValues(False, f"{values.size} values in (0, 1] ({array.dtype})", "rule: inside = value >= 0.5 (fractions in [0, 1])")
    return MaskValues(False, found, None)


def binarise(array: np.ndarray, values: MaskValues) -> np.ndarray:
    """Boolean mask by the stated rule (``>= 0.5`` for fractions, else ``!= 0``).

    A uint8 0/1 mask is returned as a boolean *view* (no copy): it must not be written to.
    """
    if values.rule and ">= 0.5" in values.rule:
        return array >= 0.5
    if values.binary and array.dtype == np.uint8:
        return array.view(bool)
    return array != 0
