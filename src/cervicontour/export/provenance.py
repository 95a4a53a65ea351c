"""Where a case's masks came from: the engine's ``prediction.json`` when there is one.

The segmentation engine writes ``prediction.json`` beside a predicted case's ``structures/``.
Its exact fields are the engine's; this module only *reads* it, tolerating missing keys, so the
RTSTRUCT export and the QA report can name the model, its version and hashes — or say that the
masks are "not a model prediction" when the file is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cervicontour.errors import InputError

PREDICTION_FILE = "prediction.json"
#: what ``predict`` writes as ``prediction.json``'s ``schema``; files from before it carry none and
#: are read as schema 1 (the same fields)
PREDICTION_SCHEMA = "cervicontour-prediction/1"

#: Display label → keys the engine may use for it (first present wins; dots walk into objects).
#: The engine (``cervicontour.inference.cohort.predict``) writes the dotted ones.
KNOWN_FIELDS: dict[str, tuple[str, ...]] = {
    "model": ("model.name", "model_name", "model"),
    "model version": ("model.version", "model_version", "version"),
    "config hash": ("model.config_sha256", "config_sha256", "config_hash"),
    "input": ("input.path", "input_path"),
    "input hash": ("input.sha256", "input_sha256", "input_hash"),
    "created": ("created", "created_at", "timestamp"),
}
UNCERTAINTY_KEYS = ("uncertainty_flags", "flags", "warnings")


def _get(info: dict[str, Any], dotted: str) -> Any:
    value: Any = info
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def find_prediction_json(folder: str | os.PathLike) -> Path | None:
    """``prediction.json`` in ``folder`` or, when ``folder`` is a ``structures/`` folder, its parent."""
    folder = Path(folder)
    for candidate in (folder / PREDICTION_FILE, folder.parent / PREDICTION_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_prediction_json(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed ``prediction.json`` beside a case's masks, or ``None`` when absent.

    Raises:
        InputError: the file exists but is not a JSON object.
    """
    path = find_prediction_json(folder)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: expected the engine's JSON record of the prediction, cannot parse it ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", PREDICTION_SCHEMA)
    if not isinstance(schema, str) or schema.rpartition("/")[0] != PREDICTION_SCHEMA.rpartition("/")[0] or schema.rpartition("/")[2] != "1":
        raise InputError(f"{path}: prediction record schema {schema!r}; this cervicontour reads {PREDICTION_SCHEMA!r} (re-run `cervicontour predict`, or upgrade cervicontour)")
    return data


def field(info: dict[str, Any] | None, label: str) -> str:
    """The value of a :data:`KNOWN_FIELDS` label as text ("" when absent).

    Example:
        >>> field({"model": {"name": "unet", "version": 3}}, "model version")
        '3'
    """
    if not info:
        return ""
    for key in KNOWN_FIELDS[label]:
        value = _get(info, key)
        if value in (None, "") or isinstance(value, (dict, list)):
            continue
        return value if isinstance(value, str) else json.dumps(value)
    return ""


def uncertainty_flags(info: dict[str, Any] | None) -> list[str]:
    """The prediction's flags as lines of text (``[]`` when none or no prediction).

    Reads the engine's per-structure records (``structures.<name>.review_closely`` with its
    ``reasons`` and ``uncertainty``) and any flat list under ``uncertainty_flags``/``flags``/``warnings``.

    Example:
        >>> uncertainty_flags({"structures": {"CTVn": {"uncertainty": 0.41, "review_closely": True,
        ...                                            "reasons": ["uncertainty 0.41 > 0.3"]}}})
        ['CTVn: review closely — uncertainty 0.41 > 0.3']
    """
    if not info:
        return []
    lines = []
    structures = info.get("structures")
    if isinstance(structures, dict):
        for name, record in structures.items():
            if isinstance(record, dict) and (record.get("review_closely") or record.get("reasons")):
                reasons = "; ".join(str(r) for r in record.get("reasons") or []) or "flagged"
                lines.append(f"{name}: review closely — {reasons}")
    for key in UNCERTAINTY_KEYS:
        value = info.get(key)
        if isinstance(value, dict):
            lines += [f"{k}: {v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            lines += [v if isinstance(v, str) else json.dumps(v) for v in value]
        elif value:
            lines.append(str(value))
    return lines


def structure_uncertainty(info: dict[str, Any] | None) -> dict[str, float]:
    """Structure → the model's uncertainty score (``structures.<name>.uncertainty``), where recorded."""
    structures = (info or {}).get("structures")
    if not isinstance(structures, dict):
        return {}
    return {n: float(r["uncertainty"]) for n, r in structures.items()
            if isinstance(r, dict) and isinstance(r.get("uncertainty"), (int, float))}


def rule_changes(info: dict[str, Any] | None) -> list[str]:
    """The edits the rules made to the prediction, in words (``rule_changes[].detail``)."""
    changes = (info or {}).get("rule_changes")
    if not isinstance(changes, list):
        return []
    out = []
    for change in changes:
        if isinstance(change, dict):
            out.append(f"{change.get('structure', '?')}: {change.get('detail') or change.get('rule', '')}")
    return out


def image_path(case_dir: str | os.PathLike, info: dict[str, Any] | None, *, own: bool = True) -> Path | None:
    """The case's CT: ``CASE_DIR/image.nii.gz`` (unless ``own`` is false), else the prediction's
    ``input.path`` if it exists."""
    own_path = Path(case_dir) / "image.nii.gz"
    if own and own_path.is_file():
        return own_path
    recorded = _get(info or {}, "input.path")
    if isinstance(recorded, str) and recorded and Path(recorded).exists():
        return Path(recorded)
    return None
