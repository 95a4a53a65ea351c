""""Review closely" flags: which predicted structures a clinician should check first.

A structure is flagged when

* nothing is predicted for it (not for an optional structure, :data:`~cervicontour.structures.ABSENT_MEANS_EMPTY`:
  an empty GTVn or GTVp says "none predicted", it is not a reason to review; one the model found
  but post-processing removed is);
* its uncertainty score (:func:`uncertainty`) is above that structure's calibrated threshold
  (:data:`THRESHOLDS`; :data:`UNCERTAINTY_FLAG` for a structure without one), or, for a structure
  whose predictions were mostly wrong on the calibration cases (:data:`UNRELIABLE`), whenever the
  model finds it;
* the clinicians' rules removed more than :data:`RULE_CHANGE_FLAG` of its predicted voxels.

The thresholds are chosen by ``benchmarks/flag_calibration.py`` on held-out phantom cases
(:data:`CALIBRATION`): per structure, the one that flags the most uncertain tenth of the cases
(:func:`choose_threshold`); what that catches of the worst-Dice tenth (:func:`worst_decile`) is
in ``benchmarks/results/flag_calibration.json``.

Pure numpy: no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from cervicontour.structures import ABSENT_MEANS_EMPTY

#: Threshold (mean binary entropy, bits) for a structure without a calibrated one in :data:`THRESHOLDS`.
UNCERTAINTY_FLAG = 0.25
#: A structure is also flagged when the rules removed more than this fraction of its predicted voxels.
RULE_CHANGE_FLAG = 0.10
#: Only probabilities above this count towards the uncertainty score.
REGION_P = 0.05

#: What :data:`THRESHOLDS` and :data:`UNRELIABLE` were measured on (``benchmarks/flag_calibration.py``;
#: every number in ``benchmarks/results/flag_calibration.json``). Synthetic phantoms only.
CALIBRATION: dict[str, object] = {
    "model": "cervicontour-default 0.5.0",
    "data": "synthetic phantom 2 (small), seed 7171, 80 labelled patients, held out from training and model choice",
    "seed": 7171,
    "patients": 80,
    "rate": 0.1,
    "results": "benchmarks/results/flag_calibration.json",
}
#: Structure → uncertainty threshold (bits): on the calibration cases, the one that flags that
#: structure's most uncertain tenth (see :data:`CALIBRATION`). Calibrated for the shipped default
#: model; another model's scores may sit elsewhere.
THRESHOLDS: dict[str, float] = {
    "Bladder": 0.1082,
    "Anorectum": 0.09965,
    "CTVp": 0.0996,
    "Parametrium": 0.1238,
    "CTVn": 0.17225,
    "LN_CommonIliac": 0.2003,
    "LN_Pelvic": 0.1714,
    "LN_ParaAortic": 0.21505,
}
#: Structure → why it is flagged whenever the model finds it: on the calibration cases at least half
#: of what the model found of it had Dice < 0.5, so its uncertainty cannot pick out the bad ones.
UNRELIABLE: dict[str, str] = {
    "GTVn": (
        "GTVn found, and cervicontour-default 0.5.0's GTVn is unreliable"
        ": on held-out phantoms 42 of the 43 GTVns it found (p >= 0.5) had Dice < 0.5, and it overlapped 1 of the 33 in the references"
    ),
}


def uncertainty(p: np.ndarray) -> float | None:
    """Mean binary entropy (bits) of the voxels with probability above :data:`REGION_P`.

    Args:
        p: probabilities in [0, 1], any shape (the model's working grid). Never modified.

    Returns:
        A value in [0, 1]: 0 when every such voxel is certain (p near 1), 1 when they are all 0.5.
        ``None`` when no voxel is above :data:`REGION_P` (nothing to score).

    Example:
        >>> uncertainty(np.full((2, 2, 2), 0.5))
        1.0
        >>> uncertainty(np.zeros((2, 2, 2))) is None
        True
    """
    region = np.asarray(p)[np.asarray(p) > REGION_P].astype(np.float64)
    if not region.size:
        return None
    q = np.clip(region, 1e-6, 1 - 1e-6)
    return float(np.mean(-(q * np.log2(q) + (1 - q) * np.log2(1 - q))))


def threshold(name: str | None, thresholds: Mapping[str, float] | None = None) -> float:
    """The uncertainty threshold (bits) of a structure: calibrated (``thresholds``, default
    :data:`THRESHOLDS`), or :data:`UNCERTAINTY_FLAG`."""
    table = THRESHOLDS if thresholds is None else thresholds
    return table.get(name, UNCERTAINTY_FLAG) if name is not None else UNCERTAINTY_FLAG


def review_reasons(
    name: str | None,
    score: float | None,
    voxels: int,
    voxels_before_rules: int,
    *,
    thresholds: Mapping[str, float] | None = None,
    unreliable: Mapping[str, str] | None = None,
) -> list[str]:
    """Why a predicted structure should be reviewed closely (empty: it need not be).

    Args:
        name: canonical structure name (``None``: uncalibrated, the default threshold).
        score: its :func:`uncertainty` (``None``: no probability above :data:`REGION_P`).
        voxels: voxels of the final mask.
        voxels_before_rules: voxels at p >= 0.5 before the rules (and before a part is cut to its target).
        thresholds: structure → threshold (bits) instead of :data:`THRESHOLDS`.
        unreliable: structure → measured reason instead of :data:`UNRELIABLE`.

    An optional structure (GTVp, GTVn) the model does not find is not flagged: "none predicted" is
    its answer, not a doubt. One it finds but post-processing removes is. A structure in
    :data:`UNRELIABLE` is flagged whenever the model finds it, with the measured reason.

    Example:
        >>> review_reasons("GTVn", None, 0, 0, unreliable={})        # optional and none predicted: no flag
        []
        >>> review_reasons("Bladder", None, 0, 0)
        ['nothing predicted']
    """
    table = THRESHOLDS if thresholds is None else thresholds
    measured = UNRELIABLE if unreliable is None else unreliable
    reasons = []
    if voxels == 0 and name in ABSENT_MEANS_EMPTY:
        if not voxels_before_rules:
            return []
        reasons.append(f"{voxels_before_rules} voxels at p >= 0.5, none kept (outside its target or removed by the rules)")
    elif voxels == 0:
        reasons.append("nothing predicted")
    if name in measured:
        if voxels or voxels_before_rules:
            reasons.append(measured[name])
    elif voxels == 0 and name in ABSENT_MEANS_EMPTY:
        pass  # what uncertainty there is lies in probabilities it did not keep
    elif score is not None and score > threshold(name, table):
        where = f"{name}'s calibrated threshold" if name in table else "the default threshold"
        reasons.append(f"uncertainty {score:.2f} bits > {threshold(name, table):.2f} ({where})")
    removed = (voxels_before_rules - voxels) / voxels_before_rules if voxels_before_rules else 0.0
    if removed > RULE_CHANGE_FLAG and not (voxels == 0 and name in ABSENT_MEANS_EMPTY):  # said above
        reasons.append(f"rules removed {100 * removed:.0f}% of it")
    return reasons


def structure_record(p: np.ndarray, voxels: int, voxels_before_rules: int, voxel_cc: float, *, name: str | None = None) -> dict:
    """``prediction.json``'s record of one structure: volume, uncertainty, flag and reasons.

    ``uncertainty`` is the :func:`uncertainty` of ``p``; with no voxel above :data:`REGION_P` it is
    1.0 for a required structure (nothing found where something must be) and 0.0 for an optional
    one (the model is sure there is none). ``none_predicted`` is True for an empty optional structure.
    """
    score = uncertainty(p)
    reasons = review_reasons(name, score, voxels, voxels_before_rules)
    optional = name in ABSENT_MEANS_EMPTY
    shown = score if score is not None else (0.0 if optional else 1.0)
    record = {"volume_cc": round(voxels * voxel_cc, 3), "uncertainty": round(shown, 4), "review_closely": bool(reasons), "reasons": reasons}
    if optional:
        record["none_predicted"] = voxels == 0
    return record


def choose_threshold(scores: Sequence[float], *, rate: float) -> float:
    """The threshold that flags (strictly above it) at most ``rate`` of ``scores``: the highest ones.

    It lies halfway between the last score flagged and the first one not flagged; with ties at
    that boundary fewer are flagged. When ``rate`` allows none (``rate * len(scores) < 1``) it is
    the highest score: only a case beyond everything measured is flagged.

    Args:
        scores: uncertainty scores (bits) of held-out cases, any order; at least one.
        rate: the largest fraction of those cases to flag, in [0, 1].

    Example:
        >>> choose_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], rate=0.2)   # flags 0.9, 1.0
        0.85
        >>> choose_threshold([0.1, 0.2, 0.3], rate=0.1)   # 0.3 cases: none
        0.3
    """
    ranked = sorted((float(s) for s in scores), reverse=True)
    if not ranked:
        raise ValueError("choose_threshold needs at least one score")
    k = math.floor(rate * len(ranked) + 1e-9)
    if k == 0:
        return ranked[0]
    if k >= len(ranked):
        return ranked[-1] - 1e-9  # every case
    edge = ranked[k]  # the highest score that stays below the threshold
    above = [s for s in ranked[:k] if s > edge]
    return round((edge + min(above)) / 2, 6) if above else edge


def worst_decile(dice: Sequence[float]) -> list[int]:
    """Indices of the worst-Dice tenth of the cases: the ``ceil(n / 10)`` lowest, plus every case tied
    with the highest of them (so a tie never depends on the order).

    Example:
        >>> worst_decile([0.9, 0.5, 0.95, 0.8, 0.92, 0.93, 0.94, 0.96, 0.97, 0.98, 0.99])   # n = 11: two
        [1, 3]
        >>> worst_decile([0.0, 0.0, 0.0, 1.0])   # n = 4: one, and the two tied with it
        [0, 1, 2]
    """
    values = np.asarray(dice, float)
    if not values.size:
        return []
    k = math.ceil(values.size / 10)
    edge = np.sort(values)[k - 1]
    return [int(i) for i in np.flatnonzero(values <= edge)]
