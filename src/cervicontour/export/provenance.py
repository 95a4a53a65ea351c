"""Where a case's masks came from: the engine's ``prediction.json`` (:class:`PredictionRecord`).

``predict`` writes it beside a predicted case's ``structures/``; :func:`read_prediction_record` is
the one reader (the RTSTRUCT export, the QA report, the review page), so they name the model, its
version and hashes, or say the masks are "not a model prediction" when the file is absent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from cervicontour.errors import InputError
from cervicontour.io.json_object import read_json_object, refuse_unknown_fields

PREDICTION_FILE = "prediction.json"
#: what ``predict`` writes as ``prediction.json``'s ``schema``; files from before it carry none and
#: are read as schema 1 (the same fields)
PREDICTION_SCHEMA = "cervicontour-prediction/1"

DISCLAIMER = "draft contours for clinician review; not for clinical use without review"


@dataclass(frozen=True)
class InputInfo:
    """The CT a prediction was made from."""

    path: str = ""
    sha256: str = ""
    shape: tuple[int, ...] = ()
    spacing_mm: tuple[float, ...] = ()
    orientation: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """The model that made a prediction (``fallback``: the model it takes some structures from)."""

    name: str = ""
    version: str = ""
    config_sha256: str = ""
    path: str = ""
    structures: tuple[str, ...] = ()
    refined: tuple[str, ...] = ()
    fallback: dict | None = None


@dataclass(frozen=True)
class PredictionRecord:
    """``prediction.json``: what ``predict`` did for one case (schema :data:`PREDICTION_SCHEMA`).

    Written by :func:`cervicontour.inference.cohort.predict` (``to_dict``), read back by
    :func:`read_prediction_record` alone. ``structures`` maps a structure to its record (volume,
    uncertainty, ``review_closely`` and its ``reasons``: :mod:`cervicontour.contours.flags`);
    ``composed``/``partitions`` the parts a compound was made of or split into; ``rule_changes``
    the edits the rules made (:class:`cervicontour.rules.Change` as a dict).

    Example:
        >>> r = PredictionRecord.from_dict({"patient_id": "P1", "model": {"name": "unet", "version": "0.8.0"}})
        >>> r.model.version, r.schema, r.to_dict()["input"]["sha256"]
        ('0.8.0', 'cervicontour-prediction/1', '')
    """

    patient_id: str = ""
    input: InputInfo = InputInfo()
    model: ModelInfo = ModelInfo()
    settings: dict = dc_field(default_factory=dict)
    structures: dict = dc_field(default_factory=dict)
    composed: dict = dc_field(default_factory=dict)
    partitions: dict = dc_field(default_factory=dict)
    review_closely: tuple[str, ...] = ()
    out_of_scope: tuple[str, ...] = ()
    rule_changes: tuple[dict, ...] = ()
    timings_s: dict = dc_field(default_factory=dict)
    created: str = ""
    disclaimer: str = DISCLAIMER
    schema: str = PREDICTION_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (tuples as lists), keys in the order ``predict`` has always written them."""
        data = asdict(self)
        schema = data.pop("schema")
        return json.loads(json.dumps({"schema": schema, **data}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = PREDICTION_FILE) -> PredictionRecord:
        """Read a ``prediction.json`` object; a file from before the schema field (or with fewer
        fields) reads with the missing ones empty; an unknown field or a wrong type is an error.

        Raises:
            InputError: another schema, a field this schema does not have, or one of the wrong kind.
        """
        schema = data.get("schema", PREDICTION_SCHEMA)
        if not isinstance(schema, str) or schema.rpartition("/")[0] != PREDICTION_SCHEMA.rpartition("/")[0] or schema.rpartition("/")[2] != "1":
            raise InputError(f"{source}: prediction record schema {schema!r}; this cervicontour reads {PREDICTION_SCHEMA!r} "
                             "(re-run `cervicontour predict`, or upgrade cervicontour)")  # fmt: skip
        refuse_unknown_fields(cls, data, source=source, record=PREDICTION_SCHEMA)
        try:
            values = {k: v for k, v in data.items() if k not in ("input", "model")}
            for key in ("review_closely", "out_of_scope", "rule_changes"):
                if key in values:
                    values[key] = tuple(values[key])
            return cls(**values, input=_sub(InputInfo, data.get("input") or {}, source, "input"),
                       model=_sub(ModelInfo, data.get("model") or {}, source, "model"))  # fmt: skip
        except TypeError as exc:
            raise InputError(f"{source}: not a prediction record ({exc})") from None

    def provenance(self) -> dict[str, str]:
        """What the QA report and the RTSTRUCT name: model, version, config hash, input and its hash, when."""
        return {"model": self.model.name, "model version": self.model.version, "config hash": self.model.config_sha256,
                "input": self.input.path, "input hash": self.input.sha256, "created": self.created}  # fmt: skip


def _sub(cls, data: Mapping[str, Any], source: str, name: str):
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: {name!r} must be an object, got {type(data).__name__}")
    refuse_unknown_fields(cls, data, source=source, record=PREDICTION_SCHEMA, prefix=f"{name}.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for key in ("name", "version", "config_sha256", "path", "sha256", "orientation"):
        if key in values and values[key] is not None and not isinstance(values[key], str):
            values[key] = str(values[key])
    return cls(**{k: v for k, v in values.items() if v is not None or k == "fallback"})


def find_prediction_json(folder: str | os.PathLike) -> Path | None:
    """``prediction.json`` in ``folder`` or, when ``folder`` is a ``structures/`` folder, its parent."""
    folder = Path(folder)
    for candidate in (folder / PREDICTION_FILE, folder.parent / PREDICTION_FILE):
        if candidate.is_file():
            return candidate
    return None


def read_prediction_record(folder: str | os.PathLike) -> PredictionRecord | None:
    """The :class:`PredictionRecord` beside a case's masks, or ``None`` when there is none.

    Raises:
        InputError: the file exists but is not a JSON object of this schema.
    """
    path = find_prediction_json(folder)
    if path is None:
        return None
    data = read_json_object(path, expected="the engine's JSON record of the prediction")
    return PredictionRecord.from_dict(data, source=str(path))


def uncertainty_flags(info: PredictionRecord | None) -> list[str]:
    """The structures the model flagged "review closely", with their reasons (``[]`` when none or no prediction).

    Example:
        >>> uncertainty_flags(PredictionRecord(structures={"CTVn": {"uncertainty": 0.41, "review_closely": True,
        ...                                                         "reasons": ["uncertainty 0.41 > 0.3"]}}))
        ['CTVn: review closely — uncertainty 0.41 > 0.3']
    """
    if info is None:
        return []
    lines = []
    for name, record in info.structures.items():
        if isinstance(record, dict) and (record.get("review_closely") or record.get("reasons")):
            reasons = "; ".join(str(r) for r in record.get("reasons") or []) or "flagged"
            lines.append(f"{name}: review closely — {reasons}")
    return lines


def structure_uncertainty(info: PredictionRecord | None) -> dict[str, float]:
    """Structure → the model's uncertainty score (``structures.<name>.uncertainty``), where recorded."""
    if info is None:
        return {}
    return {n: float(r["uncertainty"]) for n, r in info.structures.items()
            if isinstance(r, dict) and isinstance(r.get("uncertainty"), (int, float))}  # fmt: skip


def rule_changes(info: PredictionRecord | None) -> list[str]:
    """The edits the rules made to the prediction, in words (``rule_changes[].detail``)."""
    if info is None:
        return []
    return [f"{c.get('structure', '?')}: {c.get('detail') or c.get('rule', '')}" for c in info.rule_changes if isinstance(c, dict)]


def image_path(case_dir: str | os.PathLike, info: PredictionRecord | None, *, own: bool = True) -> Path | None:
    """The case's CT: ``CASE_DIR/image.nii.gz`` (unless ``own`` is false), else the prediction's
    ``input.path`` if it exists."""
    own_path = Path(case_dir) / "image.nii.gz"
    if own and own_path.is_file():
        return own_path
    recorded = info.input.path if info is not None else ""
    if recorded and Path(recorded).exists():
        return Path(recorded)
    return None
