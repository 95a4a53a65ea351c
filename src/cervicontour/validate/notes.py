"""Read the clinicians' free-text notes (``notes.csv``) for what they explain.

A note such as "no GTVp" or "missing left kidney" says a structure is absent on purpose, "small
parametrium and low uterus" says those structures are unusual, "extra slices" says the scan is
longer than usual. Findings a note explains stay in the report, as info, with the note quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

from cervicontour.rules.findings import Finding, Severity
from cervicontour.structures import STRUCTURES

ABSENCE = {"no", "missing", "without", "absent", "not", "removed", "resected", "excised", "lacks", "lacking", "none"}
EXTENT = {"slice", "slices", "scanned", "scan", "fov", "field", "coverage", "range", "truncated"}
SIDES = {"left": "L", "l": "L", "lt": "L", "right": "R", "r": "R", "rt": "R"}
#: words that name an organ without its name, rewritten to phrases the vocabulary knows.
IMPLIED = {
    "hysterectomy": ["uterus", "cervix", "removed"],
    "nephrectomy": ["kidney", "removed"],
}

#: one-word names too common in clinical prose to mean the structure ("external iliac").
NOT_NAMES = {("external",), ("body",), ("outline",), ("skin",)}

#: check ids a note can explain, by what the note says.
EXPLAINED_BY_ABSENCE = {"structure.missing", "mask.empty"}
EXPLAINED_BY_MENTION = {"cohort.volume", "cohort.centroid", "rules.volume", "rules.components"}
EXPLAINED_BY_EXTENT = {"cohort.extent"}


@dataclass(frozen=True)
class NoteContext:
    """What a note says, as sets of canonical structure names.

    Attributes:
        text: the note as written.
        absent: structures the note says are missing ("no GTVp", "missing left kidney").
        mentioned: every structure the note names.
        extent: the note talks about the scan range ("extra slices", "only scanned ...").
    """

    text: str
    absent: frozenset[str] = frozenset()
    mentioned: frozenset[str] = frozenset()
    extent: bool = False

    def explains(self, finding: Finding) -> bool:
        names = set((finding.structure or "").split("/")) - {""}
        if finding.check in EXPLAINED_BY_ABSENCE and names & self.absent:
            return True
        if finding.check in EXPLAINED_BY_MENTION and names & self.mentioned:
            return True
        return finding.check in EXPLAINED_BY_EXTENT and self.extent


def _words(text: str) -> list[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)  # ParaAortic -> Para Aortic
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


@lru_cache(maxsize=1)
def _phrases() -> list[tuple[tuple[str, ...], str, str | None]]:
    """``(words, structure, side)``: every way the vocabulary names a structure, side-less for pairs."""
    out = []
    for s in STRUCTURES.values():
        for name in (s.name, *s.synonyms):
            words = tuple(_singular(w) for w in _words(name))
            if s.side and words and SIDES.get(words[-1]) == s.side:
                words = words[:-1]
            if s.side and words and words[0] in ("left", "right"):
                words = words[1:]
            if words and words not in NOT_NAMES:
                out.append((words, s.name, s.side))
            if len(words) > 1 and words[0] == "ln":  # "para-aortic nodes" → LN_ParaAortic
                out.append((words[1:], s.name, s.side))
    return out


def read_note(text: str) -> NoteContext:
    """Parse a note.

    Example:
        >>> ctx = read_note("only scanned bottom of kidneys. missing left kidney")
        >>> sorted(ctx.absent), sorted(ctx.mentioned), ctx.extent
        (['Kidney_L'], ['Kidney_L', 'Kidney_R'], True)
    """
    absent: set[str] = set()
    mentioned: set[str] = set()
    extent = False
    for clause in re.split(r"[.;,\n]|\band\b|\bbut\b", text or "", flags=re.IGNORECASE):
        words: list[str] = []
        for w in _words(clause):
            words += IMPLIED.get(w, [w])
        words = [_singular(w) for w in words]
        if not words:
            continue
        if set(words) & EXTENT:
            extent = True
        here = _mentions(words)
        mentioned |= here
        if set(words) & ABSENCE:
            absent |= here
    return NoteContext(text or "", frozenset(absent), frozenset(mentioned), extent)


def _mentions(words: list[str]) -> set[str]:
    found: set[str] = set()
    n = len(words)
    for phrase, name, side in _phrases():
        k = len(phrase)
        for i in range(n - k + 1):
            if tuple(words[i : i + k]) != phrase:
                continue
            if side is None:
                found.add(name)
                continue
            before = SIDES.get(words[i - 1]) if i > 0 else None
            after = SIDES.get(words[i + k]) if i + k < n else None
            stated = before or after
            if stated is None or stated == side:
                found.add(name)
    return found


def para_aortic_included(note: str) -> bool:
    """Whether a clinician's note says the CTVn includes the para-aortic nodes.

    Example:
        >>> para_aortic_included("no GTVp. para-aortic nodes included"), para_aortic_included("no para-aortic nodes")
        (True, False)
    """
    ctx = read_note(note or "")
    return "LN_ParaAortic" in ctx.mentioned and "LN_ParaAortic" not in ctx.absent


def nodal_groups_for(note: str) -> list[str]:
    """The nodal groups a patient's CTVn is composed of, as the note records the clinician's choice:
    the default groups, plus the para-aortic group when the note says it was included."""
    from cervicontour.structures import DEFAULT_NODAL_GROUPS

    return [*DEFAULT_NODAL_GROUPS, *(["LN_ParaAortic"] if para_aortic_included(note) else [])]


def apply_notes(findings: list[Finding], notes: dict[str, str]) -> list[Finding]:
    """Downgrade to info every finding a patient's note explains, quoting the note."""
    contexts = {pid: read_note(text) for pid, text in notes.items() if text}
    out = []
    for f in findings:
        ctx = contexts.get(f.patient_id or "")
        if ctx is not None and f.severity is not Severity.INFO and ctx.explains(f):
            f = replace(f.downgraded(Severity.INFO, f"explained by the note: {ctx.text!r}"))
        out.append(f)
    return out
