"""Load the clinicians' rules from TOML into the frozen dataclasses of :mod:`cervicontour.rules.config`.

The default set ships as package data (``rules.toml`` beside this module); a user's copy is passed
with ``--rules``. Every structure name goes through the vocabulary, every unknown key is an error
with a suggestion, and the loaded :class:`Rules` keeps the file's text and SHA-256 so a run can
store exactly what it checked against.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cervicontour.errors import InputError
from cervicontour.rules.config import (
    RELATIONS,
    WILDCARD,
    ComponentRule,
    CompoundRule,
    EnforceConfig,
    LateralityRule,
    OverlapGroup,
    OverlapRules,
    PositionRule,
    PresenceRule,
    Rules,
    VolumeRule,
)
from cervicontour.rules.findings import Severity
from cervicontour.structures import STRUCTURES, UnknownStructureError, canonical_name


# --------------------------------------------------------------------------- loading
def default_rules_path() -> Path:
    """Path of the packaged default ``rules.toml``."""
    return Path(str(resources.files("cervicontour.rules").joinpath("rules.toml")))


@lru_cache(maxsize=1)
def default_rules() -> Rules:
    """The clinicians' default rules (read once, then cached)."""
    return load_rules(default_rules_path())


def load_rules(path: str | os.PathLike | None = None) -> Rules:
    """Read a rules TOML file.

    Args:
        path: the file; ``None`` for the packaged default.

    Returns:
        A frozen :class:`Rules` with the file's text and SHA-256.

    Raises:
        InputError: missing file, bad TOML, unknown key ("did you mean ...?"), unknown structure
            name, unknown severity or relation, or a negative number.

    Example:
        >>> rules = load_rules()
        >>> rules.overlap.rule_for("CTVn", "CTVp")[0].value
        'error'
    """
    if path is None:
        return default_rules()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such rules file; copy {default_rules_path()} and edit it")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc}); fix the line it names") from None
    return rules_from_dict(
        data, source=str(path), sha256=hashlib.sha256(raw).hexdigest(), text=raw.decode("utf-8")
    )


def rules_from_dict(data: dict[str, Any], *, source: str = "<memory>", sha256: str = "", text: str = "") -> Rules:
    """Build :class:`Rules` from parsed TOML (see :func:`load_rules` for the errors raised)."""
    where = source
    _keys(data, {"version", "presence", "overlap", "compound", "position", "laterality", "components", "volume", "enforce"}, where)
    version = int(data.get("version", 1))
    if version != 1:
        raise InputError(f"{where}: rules version {version} is not supported (expected 1)")

    pr = data.get("presence", {})
    ctx = f"{where} [presence]"
    _keys(pr, {"required", "expected_parts", "paired", "severity"}, ctx)
    parts = _names(pr.get("expected_parts", []), ctx)
    for name in parts:
        if STRUCTURES[name].parent is None:
            raise InputError(f"{ctx}: expected_parts lists {name!r}, which is not part of a compound target")
    presence = PresenceRule(
        _names(pr.get("required", []), ctx), parts, bool(pr.get("paired", True)), _severity(pr.get("severity", "error"), ctx)
    )

    ov = data.get("overlap", {})
    _keys(ov, {"structures", "severity", "tolerance_cc", "disjoint", "allowed"}, f"{where} [overlap]")
    disjoint = []
    for i, g in enumerate(ov.get("disjoint", [])):
        ctx = f"{where} [[overlap.disjoint]] #{i + 1}"
        _keys(g, {"structures", "severity", "tolerance_cc"}, ctx)
        disjoint.append(
            OverlapGroup(
                _names(g.get("structures", []), ctx, minimum=2),
                _severity(g.get("severity", "error"), ctx),
                _nonneg(g.get("tolerance_cc", 0.0), "tolerance_cc", ctx),
            )
        )
    allowed = []
    for i, a in enumerate(ov.get("allowed", [])):
        ctx = f"{where} [[overlap.allowed]] #{i + 1}"
        _keys(a, {"structures"}, ctx)
        pair = a.get("structures", [])
        if len(pair) != 2:
            raise InputError(f"{ctx}: 'structures' must name exactly two structures (or '*'), got {pair!r}")
        allowed.append(tuple(p if p == WILDCARD else _name(p, ctx) for p in pair))
    overlap = OverlapRules(
        _names(ov.get("structures", []), f"{where} [overlap]"),
        _severity(ov.get("severity", "warning"), f"{where} [overlap]"),
        _nonneg(ov.get("tolerance_cc", 0.0), "tolerance_cc", f"{where} [overlap]"),
        tuple(disjoint),
        tuple(allowed),  # type: ignore[arg-type]
    )

    compound = []
    for i, c in enumerate(data.get("compound", [])):
        ctx = f"{where} [[compound]] #{i + 1}"
        _keys(c, {"name", "parts", "severity", "tolerance_cc"}, ctx)
        compound.append(
            CompoundRule(
                _name(c.get("name", ""), ctx),
                _names(c.get("parts", []), ctx, minimum=1),
                _severity(c.get("severity", "error"), ctx),
                _nonneg(c.get("tolerance_cc", 0.0), "tolerance_cc", ctx),
            )
        )

    position = []
    for i, p in enumerate(data.get("position", [])):
        ctx = f"{where} [[position]] #{i + 1}"
        _keys(p, {"structure", "relation", "other", "margin_mm", "severity"}, ctx)
        relation = p.get("relation", "")
        if relation not in RELATIONS:
            raise InputError(f"{ctx}: unknown relation {relation!r}{_suggest(relation, RELATIONS)}; use one of {', '.join(RELATIONS)}")
        position.append(
            PositionRule(
                _name(p.get("structure", ""), ctx),
                relation,
                _name(p.get("other", ""), ctx),
                float(p.get("margin_mm", 0.0)),
                _severity(p.get("severity", "error"), ctx),
            )
        )

    lat = data.get("laterality", {})
    _keys(lat, {"enabled", "severity", "margin_mm"}, f"{where} [laterality]")
    laterality = LateralityRule(
        bool(lat.get("enabled", True)),
        _severity(lat.get("severity", "error"), f"{where} [laterality]"),
        float(lat.get("margin_mm", 0.0)),
    )

    components = []
    for i, c in enumerate(data.get("components", [])):
        ctx = f"{where} [[components]] #{i + 1}"
        _keys(c, {"structure", "min", "max", "severity"}, ctx)
        lo, hi = int(c.get("min", 1)), int(c.get("max", 1))
        if lo < 0 or hi < lo:
            raise InputError(f"{ctx}: need 0 <= min <= max, got min={lo}, max={hi}")
        components.append(ComponentRule(_name(c.get("structure", ""), ctx), lo, hi, _severity(c.get("severity", "warning"), ctx)))

    volume = []
    for i, v in enumerate(data.get("volume", [])):
        ctx = f"{where} [[volume]] #{i + 1}"
        _keys(v, {"structure", "min_cc", "max_cc", "severity"}, ctx)
        lo = _nonneg(v.get("min_cc", 0.0), "min_cc", ctx)
        hi = _nonneg(v.get("max_cc", float("inf")), "max_cc", ctx)
        if hi < lo:
            raise InputError(f"{ctx}: max_cc {hi} is below min_cc {lo}")
        volume.append(VolumeRule(_name(v.get("structure", ""), ctx), lo, hi, _severity(v.get("severity", "warning"), ctx)))

    en = data.get("enforce", {})
    ctx = f"{where} [enforce]"
    _keys(en, {"threshold", "resolve", "min_component_cc", "limit_components"}, ctx)
    threshold = float(en.get("threshold", 0.5))
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"{ctx}: threshold must be in (0, 1], got {threshold}")
    enforce = EnforceConfig(
        threshold,
        tuple(_severity(s, ctx) for s in en.get("resolve", ["error", "warning"])),
        _nonneg(en.get("min_component_cc", 0.5), "min_component_cc", ctx),
        bool(en.get("limit_components", True)),
    )
    return Rules(
        overlap, presence, tuple(compound), tuple(position), laterality, tuple(components), tuple(volume),
        enforce, version, source, sha256, text,
    )


# --------------------------------------------------------------------------- helpers
def _keys(table: Any, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table, got {type(table).__name__}")
    for key in table:
        if key not in allowed:
            raise InputError(
                f"{where}: unknown key {key!r}{_suggest(key, allowed)}; allowed: {', '.join(sorted(allowed))}"
            )


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _name(name: Any, where: str) -> str:
    try:
        return canonical_name(str(name))
    except UnknownStructureError as exc:
        raise InputError(f"{where}: {exc}") from None


def _names(names: Any, where: str, *, minimum: int = 0) -> tuple[str, ...]:
    if not isinstance(names, list):
        raise InputError(f"{where}: expected a list of structure names, got {names!r}")
    out = tuple(dict.fromkeys(_name(n, where) for n in names))
    if len(out) < minimum:
        raise InputError(f"{where}: expected at least {minimum} structure names, got {list(names)!r}")
    return out


def _severity(value: Any, where: str) -> Severity:
    try:
        return Severity(str(value).lower())
    except ValueError:
        raise InputError(f"{where}: severity must be 'error', 'warning' or 'info', got {value!r}") from None


def _nonneg(value: Any, key: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {key} must be a number, got {value!r}") from None
    if not number >= 0:
        raise InputError(f"{where}: {key} must be >= 0, got {value!r}")
    return number
