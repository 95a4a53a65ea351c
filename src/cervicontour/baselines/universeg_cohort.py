"""UniverSeg on a cohort: meta-train when no model is given, then predict every test case slice by slice.

Above :mod:`.universeg` (the model, support and slice inference) and :mod:`.universeg_train`
(meta-training); neither imports this module.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cervicontour.baselines.universeg import draw_support, load_model, predict_volume
from cervicontour.baselines.universeg_train import MetaTrainConfig, meta_train
from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name


def predict_cohort(
    model_path: str | os.PathLike | None,
    support_cohort_dir: str | os.PathLike,
    test_cohort_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    structures: tuple[str, ...] = PRIMARY,
    k: int = 8,
    seed: int = 0,
    train_minutes: float = 10.0,
) -> dict:
    """Predict every structure of every test case; write ``OUT/<pid>/structures/<Name>.nii.gz``.

    Args:
        model_path: our meta-trained checkpoint or an official UniverSeg state dict; ``None``
            meta-trains one on the support cohort first (``train_minutes``), saved as
            ``OUT/universeg_model.pt``.
        support_cohort_dir: labelled cohort the support slices come from (a test patient with
            the same id in the same folder is never its own support).
        structures: names to predict (overlaps allowed, each its own binary mask).
        k: support size. seed: support draw (per case and structure: ``[seed, case, structure]``).

    Returns:
        ``{"cases": {pid: {"seconds": s, "structures": [...]}}, "weights": report summary,
        "k": k, "seed": seed}``.
    """
    from cervicontour.cohort import load_cohort
    from cervicontour.io import write_nifti

    if k < 1:
        raise InputError(f"support size k must be ≥ 1, got {k}")
    names = tuple(canonical_name(s) for s in structures)
    support_cohort, test_cohort = load_cohort(support_cohort_dir), load_cohort(test_cohort_dir)
    out = Path(out_dir)
    if model_path is None:
        model_path = out / "universeg_model.pt"
        meta_train(support_cohort_dir, model_path, MetaTrainConfig(seed=seed, max_minutes=train_minutes))
    model, report = load_model(model_path)
    same_root = Path(support_cohort_dir).resolve() == Path(test_cohort_dir).resolve()
    results: dict = {}
    for c_index, case in enumerate(test_cohort.cases()):
        pool = [c for c in support_cohort.labelled() if not (same_root and c.patient_id == case.patient_id)]
        image = case.load_image()
        start = time.perf_counter()
        masks = {}
        for s_index, name in enumerate(names):
            support = draw_support(pool, name, k, np.random.default_rng([seed, c_index, s_index]))
            masks[name] = predict_volume(model, image, support)
        seconds = time.perf_counter() - start
        for name, mask in masks.items():
            write_nifti(mask, out / case.patient_id / "structures" / f"{name}.nii.gz")
        results[case.patient_id] = {"seconds": seconds, "structures": list(names)}
    return {"cases": results, "weights": report.summary() if report else None, "k": k, "seed": seed}
