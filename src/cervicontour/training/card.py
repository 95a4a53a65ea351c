"""The model card of a fitted model: ``card.json`` (data) and ``card.md`` (rendered from it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CARD_SCHEMA = "cervicontour-card/1"


def card_data(record, model) -> dict:
    """Everything ``card.md`` says, as data (read by one function: this one writes it)."""
    stages = record.stages
    plan = stages["plan"]
    select = stages["select"]
    export = stages["export"]
    zero = stages["zeroshot"]
    targets = stages["targets"]
    para = [pid for pid, v in targets["per_patient"].items() if v["para_aortic"]]
    transfer = (stages["stage1"].get("transfer") or {})
    return {
        "schema": CARD_SCHEMA,
        "model": {"name": model.name, "version": model.version, "path": export["model"], "structures": list(model.plan.structures),
                  "refined": list(export["refined"]),
                  "fallback_structures": list(model.fallback_structures)},
        "data": {"cohort": record.cohort, "train_patients": plan["train_patients"], "val_patients": plan["val_patients"],
                 "split": plan["split"], "structures": plan["cohort_structures"], "para_aortic_patients": para,
                 "excluded": "hold-out patients (no contours) are never used; patients without any of the five structures neither",
                 "gate": {"counts": stages["gate"]["counts"], "warnings": len(stages["gate"]["warnings"])},
                 "cohort_spacing_mm": plan["cohort_fingerprint"]["spacing_mm"],
                 "cohort_foreground_hu": plan["cohort_fingerprint"]["fingerprint"].get("foreground_hu")},
        "init": {"spec": record.init, "transfer_counts": transfer.get("counts"), "channels": plan["channels"],
                 "plan_used": plan["plan_used"], "plan_provenance": plan["plan_provenance"]},
        "stages": {name: {k: stages[name].get(k) for k in ("steps", "steps_done", "seconds", "train_seconds", "budget_seconds", "step_seconds_measured", "start", "skipped") if k in stages[name]}
                   for name in ("gate", "plan", "targets", "zeroshot", "stage1", "refiner", "select", "export") if name in stages},
        "budget_minutes": record.config["budget_minutes"],
        "seconds_total": round(sum(s.get("seconds", 0.0) for s in stages.values()), 1),
        "validation": {"zeroshot": {k: zero.get(k) for k in ("dice", "dice_sd", "hd95_mm", "mean_dice")} if zero.get("applicable") else None,
                       "candidates": select["candidates"], "choice": select["choice"], "final": export["validation"]},
    }  # fmt: skip


def write_card(out: Path, record, model) -> dict:
    """Write ``out/card.json`` and ``out/card.md`` (atomically); returns the data."""
    from cervicontour.io.atomic import write_text_atomic
    from cervicontour.io.json_object import write_json

    data = card_data(record, model)
    write_json(out / "card.json", data)
    write_text_atomic(out / "card.md", render(data))
    return data


def _f(v, digits=3) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _parts_method(targets: dict) -> str:
    """The card's sentence on where the part channels come from (``targets``: channel → source)."""
    from cervicontour.structures import COMPOUND

    learned = {c: [p for p in parts if targets.get(p) == "parts"] for c, parts in COMPOUND.items()}
    if not any(learned.values()):
        return "none: this model predicts no CTV parts, so the clinician's choice of parts cannot be offered."
    named = "; ".join(f"{c}: {', '.join(ps)}" for c, ps in learned.items() if ps)
    return (f"{named}. The cohort labels the compound only; each patient's compound mask was split among its parts by "
            "the init model's part probabilities (`cervicontour.contours.parts.partition_compound`: the anatomical parts "
            "tile the compound by their most probable part, gross disease lies on them where its probability reaches 0.5), "
            "and those splits trained the part channels beside the compound. `predict` splits each predicted compound by "
            "the same rule: every part lies inside its compound and their union is the compound, voxel for voxel "
            "(LN_ParaAortic outside a CTVn composed without it is the one extension). The para-aortic group trained only "
            "on patients whose note says the nodes were included.")


def render(data: dict) -> str:
    m, d, i, v = data["model"], data["data"], data["init"], data["validation"]
    final, zero = v["final"], v["zeroshot"]
    rows = []
    for name in d["structures"]:
        z = zero["dice"].get(name) if zero else None
        delta = "" if z is None or not np.isfinite(z) else f"{final['dice'][name] - z:+.3f}"
        rows.append(f"| {name} | {_f(final['dice'][name])} ± {_f(final['dice_sd'][name])} | {_f(final['hd95_mm'][name], 2)} | {_f(z)} | {delta} | {v['choice'].get(name, '')} |")
    targets = i["channels"]["targets"]
    how = {"label": "the cohort's own masks", "parts": "the cohort's compound partitioned by the init's part probabilities",
           "distilled": "the init's own prediction (held to the source)", "new": "new channel (prior-initialised head row)"}  # fmt: skip
    channel_lines = "\n".join(f"  - `{n}`: {how[t]}" for n, t in targets.items())
    stage_lines = "\n".join(
        f"| {name} | {s.get('seconds', 0):.0f} | {s.get('steps_done', s.get('steps', '')) if ('steps' in s or 'steps_done' in s) else ''} | {s.get('start', s.get('skipped', ''))} |"
        for name, s in data["stages"].items()
    )
    prov = "\n".join(f"  - {k}: from the {src} ({why})" for k, (src, why) in i["plan_provenance"].items())
    counts = i.get("transfer_counts") or {}
    below = [n for n in d["structures"] if zero and np.isfinite(zero["dice"].get(n, np.nan)) and final["dice"][n] < zero["dice"][n]]
    never_worse = all(c != "zeroshot" for c in v["choice"].values()) if zero else None
    return f"""# Model card: {m['name']} {m['version']}

**A draft-contouring model for clinician review. Not for clinical use without review.** Every contour it
draws must be checked and edited by a clinician before planning.

## What it is
- Fitted by `cervicontour fit` from `{i['spec']}` to the cohort `{d['cohort']}`.
- Outputs: {', '.join(m['structures'])}{' (CTVn composed from the nodal groups the clinician chooses)' if any(n.startswith('LN_') for n in m['structures']) else ''}.
- CTV parts (how they are learned without part labels): {_parts_method(targets)}
- Second stage: {', '.join(m['refined']) or 'none'}. Structures kept from the zero-shot init (the fit showed no gain beyond its standard error on validation): {', '.join(m['fallback_structures']) or 'none'}{" — model.pt holds the init whole (with its own fallback, if any), and a kept compound's parts come from the init as the compound does; predict runs each network whose channels it uses" if m['fallback_structures'] else ''}.

## Data
- {len(d['train_patients'])} training and {len(d['val_patients'])} validation patients ({d['split']}); labelled structures: {', '.join(d['structures'])}.
- Para-aortic nodes included (from the notes): {len(d['para_aortic_patients'])} patients.
- Validation gate: {d['gate']['counts']} ({d['gate']['warnings']} warnings recorded in fit.json). Excluded: {d['excluded']}.
- Cohort median spacing {d['cohort_spacing_mm']} mm; foreground HU {d['cohort_foreground_hu']}.

## Transfer
- Tensors: {counts.get('loaded', '–')} loaded, {counts.get('reshaped', '–')} reshaped (head rows matched by structure name), {counts.get('skipped', '–')} skipped (fit.json lists each).
- What each output channel trained on:
{channel_lines}
- Plan (working grid and normalisation):
{prov}

## Stages (budget {data['budget_minutes']:g} min; {data['seconds_total'] / 60:.1f} min used)
| stage | seconds | steps | note |
|---|---|---|---|
{stage_lines}

## Validation ({len(d['val_patients'])} held-out patients, input grid, rules enforced, CTVn with each patient's recorded nodal groups)
| structure | Dice mean ± sd | HD95 median (mm) | zero-shot Dice | change | chosen from |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Five-structure mean Dice: {_f(final['mean_dice'])} (zero-shot {_f(zero['mean_dice']) if zero else '–'}).
{'Per structure the fitted model replaces the zero-shot init only where its paired validation gain is at least its standard error; elsewhere the init predicts.' if zero else 'The init predicts none of these structures: no zero-shot comparison.'}{(' Measured on these patients, no structure is below zero-shot.' if not below else f" Measured on these patients, below zero-shot: {', '.join(below)} (float16 storage, or a kept structure next to a refined one).") if zero else ''}{'' if never_worse is None else (' The fitted model won every structure.' if never_worse else ' Some structures keep the zero-shot prediction (fallback).')}

## Limitations
- Validated on {len(d['val_patients'])} patients of the same cohort: the spread is wide and the numbers say how the model
  reproduces this hospital's contouring, not how it does elsewhere.
- Structures, nodal groups and CTVp parts it was not given labels for come from the init model (partitioned or distilled).
- Not for clinical use without review; `prediction.json` flags structures to review closely.
"""


__all__ = ["CARD_SCHEMA", "card_data", "render", "write_card"]
