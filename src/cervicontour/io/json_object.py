"""A JSON object read from a file, with the error a user can act on (the records' one reading step)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cervicontour.errors import InputError


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
