"""The rules as frozen dataclasses: one field per knob (see ``rules.toml`` for their meaning).

:mod:`cervicontour.rules.loader` builds them from TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from cervicontour.rules.findings import Severity
from cervicontour.structures import STRUCTURES

WILDCARD = "*"

#: relation → (LPS axis, sign): ``A rel B`` holds when ``sign * (A[axis] - B[axis]) > margin_mm``.
#: LPS: +x patient left, +y posterior, +z superior.
RELATIONS: dict[str, tuple[int, int]] = {
    "anterior_of": (1, -1),
    "posterior_of": (1, +1),
    "left_of": (0, +1),
    "right_of": (0, -1),
    "superior_to": (2, +1),
    "inferior_to": (2, -1),
}


@dataclass(frozen=True)
class PresenceRule:
    """Which structures a labelled patient must have.

    Attributes:
        required: always.
        expected_parts: whenever the patient has another part of the same compound target.
        paired: a paired structure on one side expects its other side.
        severity: for a structure that is missing.
    """

    required: tuple[str, ...] = ()
    expected_parts: tuple[str, ...] = ()
    paired: bool = True
    severity: Severity = Severity.ERROR

    def missing(self, present) -> list[tuple[str, str]]:
        """``(name, why)`` for every structure expected but absent, given the names present.

        Example:
            >>> PresenceRule(("Bladder",), ("GTVp",)).missing({"Cervix", "Kidney_R"})
            [('Bladder', 'required'), ('GTVp', 'part of CTVp, and Cervix is present'), ('Kidney_L', 'Kidney_R is present')]
        """
        present = set(present)
        out = [(name, "required") for name in self.required if name not in present]
        for name in self.expected_parts:
            parent = STRUCTURES[name].parent
            siblings = sorted(
                s.name for s in STRUCTURES.values() if s.parent == parent and s.name != name and s.name in present
            )
            if name not in present and siblings:
                out.append((name, f"part of {parent}, and {', '.join(siblings)} {'is' if len(siblings) == 1 else 'are'} present"))
        if self.paired:
            for left, right in paired_structures():
                if left in present and right not in present:
                    out.append((right, f"{left} is present"))
                elif right in present and left not in present:
                    out.append((left, f"{right} is present"))
        return out


@dataclass(frozen=True)
class OverlapGroup:
    """Structures that must be pairwise disjoint."""

    structures: tuple[str, ...]
    severity: Severity = Severity.ERROR
    tolerance_cc: float = 0.0


@dataclass(frozen=True)
class OverlapRules:
    """Which pairs may share voxels.

    Attributes:
        structures: every pair among these is checked.
        severity: for an overlap no other rule names (``tolerance_cc`` applies to it).
        disjoint: groups that must be pairwise disjoint.
        allowed: pairs that may overlap; ``"*"`` matches any structure.
    """

    structures: tuple[str, ...]
    severity: Severity = Severity.WARNING
    tolerance_cc: float = 0.0
    disjoint: tuple[OverlapGroup, ...] = ()
    allowed: tuple[tuple[str, str], ...] = ()

    def pairs(self) -> list[tuple[str, str]]:
        """Every pair the rules say something about, each once, in a stable order."""
        seen: dict[frozenset, tuple[str, str]] = {}
        for group in (self.structures, *(g.structures for g in self.disjoint)):
            for a, b in combinations(group, 2):
                seen.setdefault(frozenset((a, b)), (a, b))
        return list(seen.values())

    def rule_for(self, a: str, b: str) -> tuple[Severity | None, float, str]:
        """``(severity, tolerance_cc, why)`` for an overlap of ``a`` and ``b``.

        ``severity`` is ``None`` when the overlap is allowed. A disjoint group wins over an
        allowance; an allowance wins over the default.
        """
        for group in self.disjoint:
            if a in group.structures and b in group.structures:
                names = ", ".join(group.structures)
                return group.severity, group.tolerance_cc, f"{names} must be pairwise disjoint"
        for x, y in self.allowed:
            if _matches(x, a) and _matches(y, b) or _matches(x, b) and _matches(y, a):
                return None, 0.0, f"{x} may overlap {y}"
        return self.severity, self.tolerance_cc, "an overlap no rule allows"


def _matches(pattern: str, name: str) -> bool:
    return pattern == WILDCARD or pattern == name


@dataclass(frozen=True)
class CompoundRule:
    """``name`` must equal the union of the ``parts`` present (checked when any part is)."""

    name: str
    parts: tuple[str, ...]
    severity: Severity = Severity.ERROR
    tolerance_cc: float = 0.0


@dataclass(frozen=True)
class PositionRule:
    """``structure`` lies ``relation`` ``other`` by more than ``margin_mm`` (centroids)."""

    structure: str
    relation: str
    other: str
    margin_mm: float = 0.0
    severity: Severity = Severity.ERROR

    @property
    def axis_sign(self) -> tuple[int, int]:
        return RELATIONS[self.relation]


@dataclass(frozen=True)
class LateralityRule:
    """Every vocabulary pair ``X_L``/``X_R``: ``X_L`` lies to the patient's left of ``X_R``."""

    enabled: bool = True
    severity: Severity = Severity.ERROR
    margin_mm: float = 0.0


@dataclass(frozen=True)
class ComponentRule:
    """Number of 26-connected components of ``structure`` within ``[min, max]``."""

    structure: str
    min: int = 1
    max: int = 1
    severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class VolumeRule:
    """Volume of ``structure`` within ``[min_cc, max_cc]``."""

    structure: str
    min_cc: float = 0.0
    max_cc: float = float("inf")
    severity: Severity = Severity.WARNING


@dataclass(frozen=True)
class EnforceConfig:
    """How :func:`cervicontour.rules.enforce` turns probabilities into masks that obey the rules.

    Attributes:
        threshold: probability at or above which a voxel belongs to a structure.
        resolve: overlap severities to resolve; the structure with the higher probability keeps
            a contested voxel.
        min_component_cc: components smaller than this are removed (the largest always stays).
        limit_components: keep at most the ``max`` largest components of each component rule.
    """

    threshold: float = 0.5
    resolve: tuple[Severity, ...] = (Severity.ERROR, Severity.WARNING)
    min_component_cc: float = 0.5
    limit_components: bool = True


@dataclass(frozen=True)
class Rules:
    """The full rule set (see ``rules.toml`` for the meaning of every field)."""

    overlap: OverlapRules
    presence: PresenceRule = PresenceRule()
    compound: tuple[CompoundRule, ...] = ()
    position: tuple[PositionRule, ...] = ()
    laterality: LateralityRule = LateralityRule()
    components: tuple[ComponentRule, ...] = ()
    volume: tuple[VolumeRule, ...] = ()
    enforce: EnforceConfig = EnforceConfig()
    version: int = 1
    source: str = "<memory>"
    sha256: str = ""
    text: str = field(default="", repr=False)

    def component_rule(self, name: str) -> ComponentRule | None:
        return next((r for r in self.components if r.structure == name), None)


def paired_structures() -> list[tuple[str, str]]:
    """Vocabulary pairs ``(X_L, X_R)`` checked by the laterality rule."""
    return [
        (s.name, s.name[:-2] + "_R")
        for s in STRUCTURES.values()
        if s.side == "L" and s.name[:-2] + "_R" in STRUCTURES
    ]
