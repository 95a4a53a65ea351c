"""Scoring candidate models on a fit's validation patients and choosing per structure.

Every candidate (the zero-shot init, stage 1, stage 1 + refiner, the assembled model) is scored
the same way, the way a user meets it: ``predict_case`` on the patient's own CT grid (rules
enforced), each CTVn composed from the nodal groups the patient's note records, against the
cohort's compound masks.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np


def score_model(model, cases, structures: Sequence[str], *, device: str = "cpu", on_case: Callable[[str], None] | None = None) -> dict:
    """Dice and HD95 per structure and patient.

    Returns:
        ``{"per_case": {pid: {structure: {"dice", "hd95_mm"}}}, "dice": {structure: mean},
        "dice_sd": {...}, "hd95_mm": {structure: median of finite}}``. A structure absent from
        both the reference and the prediction of a patient is left out of its mean.
    """
    from cervicontour.metrics import evaluate_pair
    from cervicontour.pipeline import predict_case
    from cervicontour.validate.notes import nodal_groups_for

    per_case: dict[str, dict] = {}
    for case in cases:
        image = case.load_image()
        result = predict_case(image, model, device=device, nodal_groups=nodal_groups_for(case.note))
        row = {}
        for name in structures:
            if not case.has(name) or name not in result.masks:
                continue
            reference = case.load_structure(name)
            predicted = result.masks[name]
            if not reference.array.any() and not predicted.array.any():
                continue
            with warnings.catch_warnings():  # a 2 mm surface tolerance below the slice spacing: known, not repeated per case
                warnings.simplefilter("ignore")
                m = evaluate_pair(reference, predicted, tolerances_mm=(2.0,))
            row[name] = {"dice": float(m["dice"]), "hd95_mm": float(m["hd95_mm"])}
        per_case[case.patient_id] = row
        if on_case:
            on_case(case.patient_id)
    return {"per_case": per_case, **summarise(per_case, structures)}


def summarise(per_case: dict, structures: Sequence[str]) -> dict:
    dice, sd, hd = {}, {}, {}
    for name in structures:
        d = [r[name]["dice"] for r in per_case.values() if name in r]
        h = [r[name]["hd95_mm"] for r in per_case.values() if name in r and np.isfinite(r[name]["hd95_mm"])]
        dice[name] = float(np.mean(d)) if d else float("nan")
        sd[name] = float(np.std(d)) if d else float("nan")
        hd[name] = float(np.median(h)) if h else float("nan")
    finite = [v for v in dice.values() if np.isfinite(v)]
    return {"dice": dice, "dice_sd": sd, "hd95_mm": hd, "mean_dice": float(np.mean(finite)) if finite else float("nan")}


def choose(scores: dict[str, dict], structures: Sequence[str], *, fitted: Sequence[str], baseline: str | None) -> dict[str, str]:
    """Per structure, the candidate with the best mean validation Dice.

    ``fitted``: the fitted candidates, in order of preference on a tie; ``baseline``: the
    zero-shot init (chosen only when strictly better than every fitted candidate, so a fit is
    never shipped below its starting point). A structure no candidate scored goes to the first
    fitted candidate.

    Example:
        >>> s = {"zero": {"dice": {"A": 0.9, "B": 0.5}}, "fit": {"dice": {"A": 0.8, "B": 0.7}}}
        >>> choose(s, ["A", "B"], fitted=["fit"], baseline="zero")
        {'A': 'zero', 'B': 'fit'}
    """
    out = {}
    for name in structures:
        best, best_value = fitted[0], -np.inf
        for candidate in fitted:
            value = scores[candidate]["dice"].get(name, float("nan"))
            if np.isfinite(value) and value > best_value:
                best, best_value = candidate, value
        if baseline is not None:
            value = scores[baseline]["dice"].get(name, float("nan"))
            if np.isfinite(value) and value > best_value:
                best = baseline
        out[name] = best
    return out


__all__ = ["choose", "score_model", "summarise"]
