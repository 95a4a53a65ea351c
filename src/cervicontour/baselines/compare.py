"""``cervicontour compare``: several methods trained and scored on the same unseen test cases, one record.

Each method (:data:`METHODS`) trains on the TRAIN cohort where it trains (with the same wall-clock
budget), predicts every TEST case (or, for MedSAM, the chosen cases), and is scored against the
TEST references by :func:`score_predictions` (Dice mean, HD95 median, surface Dice at 2 mm mean,
per structure). The TotalSegmentator-style rule (:data:`RULE`) is added whenever test cases carry
the phantom's vessel labels. ``use={NAME: DIR}`` scores an existing run instead of training: a
predictions folder, or a trained model (ours: a model folder / run / ``model.pt``; nnU-Net: a work
or results folder with a checkpoint; UniverSeg: its ``model.pt``).

Output folder::

    OUT/comparison.json             the record (:data:`SCHEMA`, read by :func:`read_comparison`)
    OUT/comparison.md, .png         the table and the figure
    OUT/methods/<name>/result.json  a finished method: its setting, scores, per-case rows, timings
    OUT/methods/<name>/pred/        its predictions, <patient_id>/structures/<Name>.nii.gz
    OUT/methods/<name>/...          its model and work files

Resumable per method: a method whose ``result.json`` holds the same setting (cohorts, budget, its
options, ``use``) is not run again; one with another setting is refused, naming the difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from cervicontour.baselines.compare_options import CompareOptions, MethodResult
from cervicontour.errors import InputError

SCHEMA = "cervicontour-comparison/1"
METHODS = ("default", "fit", "scratch", "nnunet", "atlas", "universeg", "medsam-oracle", "medsam-auto")
RULE = "totalseg-rule"
#: surface-Dice tolerance of the record's ``nsd_2mm``
NSD_TOLERANCE_MM = 2.0


# --------------------------------------------------------------------------- the record
def read_comparison(path: str | os.PathLike) -> dict:
    """Read ``comparison.json`` (a file or its folder); :class:`InputError` for another schema."""
    path = Path(path)
    path = path / "comparison.json" if path.is_dir() else path
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read a comparison record ({exc})") from None
    if record.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema {record.get('schema')!r}; expected {SCHEMA!r} (written by `cervicontour compare`)")
    return record


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"default,fit"`` → ``["default", "fit"]``; unknown names refused with the known ones."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        import difflib

        hints = [f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, METHODS, 1)) else "") for u in unknown]
        raise InputError(f"unknown method {', '.join(hints)}; expected some of {', '.join(METHODS)}")
    if not names:
        raise InputError(f"no method chosen; expected some of {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def commit_of(path: str | os.PathLike) -> str | None:
    """``git describe --always --dirty`` of the checkout holding ``path``; None outside one."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(path).resolve().parent,
                             capture_output=True, text=True, timeout=20, check=False)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _write_json(path: Path, record: Mapping) -> None:
    from cervicontour.io import write_text_atomic

    write_text_atomic(path, json.dumps(record, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- scoring
def score_predictions(test_dir: str | os.PathLike, pred_dir: str | os.PathLike,
                      structures: Sequence[str]) -> tuple[dict[str, dict], list[dict], list[str]]:  # fmt: skip
    """Score one method's predictions: per structure Dice mean, HD95 median, surface Dice at 2 mm mean.

    Only the patients with a prediction folder and the structures some prediction has are scored
    (a method restricted to some cases or structures is scored on those); a structure missing from
    one predicted case is scored as empty there. Each row is :func:`~cervicontour.metrics.evaluate_pair`'s.

    Returns:
        ``(summary, rows, messages)``: ``summary = {structure: {"dice", "hd95_mm", "nsd_2mm"}}``, a
        value None where it is not finite (HD95 of an empty prediction is infinite; Dice of two
        empty masks is NaN and left out of the mean); ``rows`` one per (patient, structure);
        ``messages`` the evaluation's distinct warnings.
    """
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort

    pred_dir = Path(pred_dir)
    present = {p.name.split(".")[0] for p in pred_dir.glob("*/structures/*.nii.gz")}
    names = [s for s in structures if s in present]
    if not names:
        return {}, [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_cohort(test_dir, pred_dir, structures=names, settings=EvaluationSettings(tolerances_mm=(NSD_TOLERANCE_MM,)))
    nsd = f"nsd_{NSD_TOLERANCE_MM:g}mm"
    summary = {}
    for name in names:
        rows = [r for r in result.rows if r["structure"] == name]
        if not rows:
            continue
        dice, hd, surface = (np.array([float(r[k]) for r in rows]) for k in ("dice", "hd95_mm", nsd))
        summary[name] = {"dice": _finite(np.nanmean(dice)) if np.isfinite(dice).any() else None,
                         "hd95_mm": _finite(np.median(hd)),
                         "nsd_2mm": _finite(np.nanmean(surface)) if np.isfinite(surface).any() else None}  # fmt: skip
    keep = ("patient_id", "structure", "dice", "hd95_mm", nsd, "note")
    return summary, [{k: (_finite(r[k]) if isinstance(r[k], float) else r[k]) for k in keep} for r in result.rows], result.warnings


# --------------------------------------------------------------------------- the run
def _cohort_info(train: Path, test: Path, options: CompareOptions) -> tuple[dict, list[str]]:
    from cervicontour.cohort import load_cohort

    train_ids = sorted(c.patient_id for c in load_cohort(train).labelled())
    test_ids = sorted(c.patient_id for c in load_cohort(test).labelled())
    if not train_ids:
        raise InputError(f"--train {train}: no labelled patient; expected <patient_id>/image.nii.gz + structures/<Name>.nii.gz")
    if not test_ids:
        raise InputError(f"--test {test}: no labelled patient; the test cases need reference masks to be scored")
    info = {"cohort": str(train.resolve()), "patients": len(train_ids), "ids": train_ids, "data": options.data or "not described (pass --data)",
            "test_cohort": str(test.resolve()), "budget_minutes": options.budget_minutes, "structures": list(options.structures),
            "threads": options.threads, "device": options.device, "machine": f"{os.uname().machine}, {os.cpu_count()} CPUs"}  # fmt: skip
    return info, test_ids


def _setting(name: str, info: dict, test_ids: list[str], options: CompareOptions, use: Path | None) -> dict:
    """What a method's result depends on: refused as stale when it changes."""
    setting = {"method": name, "train": info["cohort"], "train_ids": info["ids"], "test": info["test_cohort"], "test_ids": test_ids,
               "structures": list(options.structures), "use": str(use.resolve()) if use else None}  # fmt: skip
    if name in ("fit", "scratch", "nnunet", "universeg") and use is None:
        setting["budget_minutes"] = options.budget_minutes
    if name.startswith("medsam"):
        setting.update(medsam_structures=list(options.medsam_structures or options.structures), medsam_cases=list(options.medsam_cases or []),
                       medsam_margin_px=options.medsam_margin_px)  # fmt: skip
    if name == "atlas":
        setting["atlas_k"] = options.atlas_k
    if name == "universeg":
        setting["universeg_k"] = options.universeg_k
    return setting


def _finished(folder: Path, setting: dict) -> dict | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    done = json.loads(path.read_text(encoding="utf-8"))
    if done.get("setting") != setting:
        diff = sorted(k for k in set(setting) | set(done.get("setting", {})) if setting.get(k) != done.get("setting", {}).get(k))
        raise InputError(f"{folder} holds {setting['method']} run with another setting (differs in {', '.join(diff)}): "
                         f"use a new --out, or delete {folder} to run it again")  # fmt: skip
    return done


def compare(
    train: str | os.PathLike,
    test: str | os.PathLike,
    out: str | os.PathLike,
    *,
    methods: Sequence[str],
    options: CompareOptions,
    use: Mapping[str, str | os.PathLike] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> dict:
    """Run, score and record each method (see the module docstring); return the record.

    Args:
        train: labelled cohort the methods train on (and the atlases / support set).
        test: labelled cohort never trained on; every method predicts it (MedSAM: the chosen cases).
        out: output folder (created; an earlier comparison there is resumed).
        methods: names from :data:`METHODS`, in the table's order.
        options: :class:`CompareOptions`.
        use: ``{method: folder}``: score that existing run instead of training it.
        on_event: called with one line per step (progress).

    Returns:
        The record written to ``OUT/comparison.json``: ``{"schema", "commit", "train": {...},
        "test": [patient ids], "methods": {name: {"structures": {S: {"dice", "hd95_mm", "nsd_2mm"}},
        "train_seconds", "predict_seconds_per_case", "notes"}}}``.

    Raises:
        InputError: unknown methods, unusable cohorts or ``use`` folders, a stale method result.
    """
    from cervicontour.baselines import compare_methods
    from cervicontour.baselines.compare_report import write_figure, write_table

    train, test, out = Path(train), Path(test), Path(out)
    names = parse_methods(methods)
    use = {k: Path(v) for k, v in (use or {}).items()}
    stray = sorted(set(use) - set(names))
    if stray:
        raise InputError(f"--use names {stray}, which are not among the chosen --methods {names}")
    for name, folder in use.items():
        if not folder.exists():
            raise InputError(f"--use {name}={folder}: no such folder")
    info, test_ids = _cohort_info(train, test, options)
    emit = on_event or (lambda _line: None)
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    record = {"schema": SCHEMA, "commit": commit_of(__file__), "train": info, "test": test_ids, "methods": {}}
    settings = {n: _setting(n, info, test_ids, options, use.get(n)) for n in [*names, RULE]}
    results = {n: _finished(out / "methods" / n, settings[n]) for n in settings}
    pending = [n for n in [*names, RULE] if results[n] is None]
    context = compare_methods.Context(train=train, test=test, out=out, options=options, use=use, emit=emit, finished=results)
    for name in pending:
        if results[name] is not None:  # done together with an earlier one (the two MedSAM settings)
            continue
        emit(f"{name}: start")
        group = [n for n in pending if n.startswith("medsam") and results[n] is None] if name.startswith("medsam") else [name]
        t0, load0, cpu0 = time.time(), os.getloadavg()[0], _cpu_seconds()
        produced = compare_methods.run(group, context)
        cpu = _cpu_seconds() - cpu0  # this process and its finished subprocesses (nnU-Net's stages)
        for n, result in produced.items():
            if result is None:  # nothing to compare (the rule without vessel labels): recorded, not retried
                results[n] = {"setting": settings[n], "skipped": True}
                _write_json(out / "methods" / n / "result.json", results[n])
                emit(f"{n}: nothing to compare (no test case has the labels it needs)")
                continue
            summary, rows, messages = score_predictions(test, result.pred, result.extra.get("structures") or options.structures)
            results[n] = {"setting": settings[n], "structures": summary, "rows": rows, "warnings": messages,
                          "train_seconds": _finite(result.train_seconds), "predict_seconds_per_case": _finite(result.predict_seconds_per_case),
                          "notes": result.notes, "pred": str(result.pred), "extra": result.extra,
                          "wall_s": time.time() - t0, "cpu_s": cpu, "load_average": [load0, os.getloadavg()[0]], "commit": record["commit"],
                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
            _write_json(out / "methods" / n / "result.json", results[n])
            emit(f"{n}: done " + ", ".join(f"{s} {v['dice']:.3f}" for s, v in summary.items() if v["dice"] is not None))
        record["methods"] = _methods_table(results, [*names, RULE])
        _write_json(out / "comparison.json", record)
    record["methods"] = _methods_table(results, [*names, RULE])
    _write_json(out / "comparison.json", record)
    write_table(record, out / "comparison.md")
    write_figure(record, out / "comparison.png")
    return record


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _measured(result: Mapping) -> str:
    """What the method's run took on this machine, for its notes (the machine is often shared)."""
    if "wall_s" not in result:
        return ""
    cpu = f", {result['cpu_s']:.0f} s process CPU" if result.get("cpu_s") is not None else ""
    load = result.get("load_average") or []
    busy = f", load average {load[0]:.1f} → {load[1]:.1f} on {os.cpu_count()} CPUs" if len(load) == 2 else ""
    return f" [this run: {result['wall_s']:.0f} s wall{cpu}{busy}]"


def _methods_table(results: Mapping[str, dict | None], order: Sequence[str]) -> dict:
    keys = ("structures", "train_seconds", "predict_seconds_per_case")
    return {n: {**{k: results[n][k] for k in keys}, "notes": results[n]["notes"] + _measured(results[n])}
            for n in order if results.get(n) and not results[n].get("skipped")}  # fmt: skip


__all__ = ["METHODS", "RULE", "SCHEMA", "CompareOptions", "MethodResult", "commit_of", "compare", "parse_methods",
           "read_comparison", "score_predictions"]  # fmt: skip
