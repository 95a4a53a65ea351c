"""Per-structure summaries of metric rows: mean, median, IQR and a bootstrap 95 % CI of the mean.

Non-finite values are never silently folded in: NaN (undefined, e.g. Dice of two empty masks)
and ±inf (e.g. HD to an empty prediction) are counted in ``n_nan`` / ``n_inf`` and the
statistics are taken over the finite values only (``n``). A structure whose HD is ``inf`` for
one patient therefore shows ``n_inf = 1`` beside the finite mean of the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SUMMARY_COLUMNS = (
    "structure", "metric", "n", "n_nan", "n_inf", "mean", "median", "q1", "q3", "iqr", "ci95_low", "ci95_high",
)


def bootstrap_ci(
    values: Sequence[float], *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Args:
        values: finite numbers.
        n_resamples: bootstrap resamples (with replacement, same size as ``values``).
        confidence: e.g. 0.95 for a 95 % interval.
        seed: random seed; the same seed gives the same interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no values; ``(x, x)`` for one value or constant values.

    Example:
        >>> bootstrap_ci([2.0, 2.0, 2.0])
        (2.0, 2.0)
    """
    x = np.asarray(values, float)
    if x.size == 0:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def describe(values: Iterable[float], *, seed: int = 0) -> dict[str, float | int]:
    """Summary statistics of one metric over patients (see the module docstring for non-finite values).

    Example:
        >>> d = describe([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
        >>> d["n"], d["n_nan"], d["median"], d["q1"], d["q3"]
        (5, 1, 3.0, 2.0, 4.0)
    """
    x = np.asarray(list(values), float)
    finite = x[np.isfinite(x)]
    out: dict[str, float | int] = {
        "n": int(finite.size),
        "n_nan": int(np.isnan(x).sum()),
        "n_inf": int(np.isinf(x).sum()),
    }
    if finite.size == 0:
        out.update({k: float("nan") for k in ("mean", "median", "q1", "q3", "iqr", "ci95_low", "ci95_high")})
        return out
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    low, high = bootstrap_ci(finite, seed=seed)
    out.update(
        {
            "mean": float(finite.mean()),
            "median": float(median),
            "q1": float(q1),
            "q3": float(q3),
            "iqr": float(q3 - q1),
            "ci95_low": low,
            "ci95_high": high,
        }
    )
    return out


def summarize(rows: Sequence[Mapping[str, object]], metrics: Sequence[str], *, seed: int = 0) -> list[dict]:
    """One summary row per (structure, metric), structures in order of first appearance.

    Args:
        rows: metric rows with a ``structure`` key (see :func:`cervicontour.metrics.evaluate_cohort`).
        metrics: the metric columns to summarise.
        seed: bootstrap seed.

    Returns:
        dicts with the keys of :data:`SUMMARY_COLUMNS`.
    """
    structures = list(dict.fromkeys(str(r["structure"]) for r in rows))
    out = []
    for structure in structures:
        subset = [r for r in rows if r["structure"] == structure]
        for metric in metrics:
            values = [float(r[metric]) for r in subset if metric in r]  # type: ignore[arg-type]
            out.append({"structure": structure, "metric": metric, **describe(values, seed=seed)})
    return out
