"""JSON records on disk: one reading step with the error a user can act on, one atomic writing step."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.io.atomic import write_text_atomic


def read_json_object(path: str | os.PathLike, *, expected: str) -> dict:
    """The JSON object in ``path``.

    Raises:
        InputError: unreadable, not JSON, or not an object; the message names ``expected`` (what the file should be).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read it as {expected} ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected {expected} (a JSON object), got {type(data).__name__}")
    return data


def refuse_unknown_fields(cls, data: Mapping, *, source: str, record: str, prefix: str = "") -> None:
    """Refuse a JSON object with a key the dataclass ``cls`` has no field for (a newer or a foreign
    record): read silently, it would be dropped.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Point:
        ...     x: int = 0
        >>> refuse_unknown_fields(Point, {"x": 1, "y": 2}, source="p.json", record="point")
        Traceback (most recent call last):
        ...
        cervicontour.errors.InputError: p.json: fields ['y'] are not in a point record (expected some of ['x'])

    Raises:
        InputError: naming ``source``, the unknown keys (with ``prefix``, e.g. ``"model."``) and the known ones.
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{source}: fields {[prefix + k for k in unknown]} are not in a {record} record (expected some of {sorted(known)})")


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically (numpy values as lists, anything else unknown as text)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
