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

from cervicontour.structures import COMPOUND


def score_model(model, cases, structures: Sequence[str], *, device: str = "cpu", on_case: Callable[[str], None] | None = None) -> dict:
    """Dice and HD95 per structure and patient.

    Returns:
        ``{"per_case": {pid: {structure: {"dice", "hd95_mm"}}}, "dice": {structure: mean},
        "dice_sd": {...}, "hd95_mm": {structure: median of finite}}``. A structure absent from
        both the reference and the prediction of a patient is left out of its mean.
    """
    from cervicontour.metrics import evaluate_pair
    from cervicontour.inference.case import predict_case
    from cervicontour.validate.notes import nodal_groups_for

    per_case: dict[str, dict] = {}
    for case in cases:
        image = case.load_image()
        composes = bool(set(model.plan.structures) & set(COMPOUND["CTVn"]))
        result = predict_case(image, model, device=device, nodal_groups=nodal_groups_for(case.note) if composes else None)
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
    """Per structure, the fitted candidate with the best mean validation Dice, unless the
    zero-shot ``baseline`` should be kept.

    ``fitted``: the fitted candidates, in order of preference on a tie. The baseline (the init,
    zero-shot) is replaced for a structure only on evidence: the best fitted candidate's gain over
    it, paired patient by patient, must be positive and at least its standard error (t ≥ 1); a tie
    or a loss keeps the init's prediction, so a fit never ships a structure below where it started
    on the strength of noise. A structure no candidate scored goes to the first fitted candidate.

    Example:
        >>> pc = lambda *v: {f"P{i}": {"A": {"dice": x}} for i, x in enumerate(v)}  # noqa: E731
        >>> s = {"zero": {"dice": {"A": 0.90}, "per_case": pc(0.90, 0.90, 0.90)},
        ...      "fit": {"dice": {"A": 0.91}, "per_case": pc(0.95, 0.88, 0.90)}}
        >>> choose(s, ["A"], fitted=["fit"], baseline="zero")  # +0.01 ± 0.02: not evidence
        {'A': 'zero'}
        >>> s["fit"]["per_case"] = pc(0.91, 0.91, 0.91)
        >>> choose(s, ["A"], fitted=["fit"], baseline="zero")
        {'A': 'fit'}
    """
    out = {}
    for name in structures:
        best, best_value = fitted[0], -np.inf
        for candidate in fitted:
            value = scores[candidate]["dice"].get(name, float("nan"))
            if np.isfinite(value) and value > best_value:
                best, best_value = candidate, value
        if baseline is not None and np.isfinite(scores[baseline]["dice"].get(name, float("nan"))):
            gain, se = paired_gain(scores[best]["per_case"], scores[baseline]["per_case"], name)
            if not (gain > 0 and gain >= se):
                best = baseline
        out[name] = best
    return out


def paired_gain(candidate: dict, baseline: dict, structure: str) -> tuple[float, float]:
    """Mean and standard error of the per-patient Dice difference ``candidate − baseline`` over
    the patients both scored (standard error 0 with fewer than 2; no patients: ``(-inf, 0)``)."""
    d = np.array([candidate[p][structure]["dice"] - baseline[p][structure]["dice"] for p in candidate if structure in candidate[p] and structure in baseline.get(p, {})])
    if d.size == 0:
        return float("-inf"), 0.0
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0


__all__ = ["choose", "paired_gain", "score_model", "summarise"]
