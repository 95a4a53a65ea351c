"""One structure vocabulary: canonical TG-263-style names, synonyms, and "did you mean" errors.

Every file name, CLI option and report column that names a structure goes through
:func:`canonical_name`. Matching ignores case and the separators ``_``, ``-``, ``.`` and spaces,
so ``rectum``, ``RECTUM`` and ``Ano-Rectum`` all resolve to ``Anorectum``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import Enum


class Role(str, Enum):
    """What a structure is for in the cervix workflow."""

    OAR = "oar"  # organ at risk the model delineates (Bladder, Anorectum)
    TARGET = "target"  # clinical target volumes the model delineates
    SUB_TARGET = "sub_target"  # parts a target is composed of (CTVp = Cervix ∪ GTVp ∪ ...)
    ANATOMY = "anatomy"  # other labels (bones, vessels, muscles...) the phantom writes


@dataclass(frozen=True)
class Structure:
    """A vocabulary entry.

    Attributes:
        name: canonical TG-263-style name, also the mask file stem.
        role: see :class:`Role`.
        synonyms: other names that resolve to this one.
        parent: the compound target this sub-structure belongs to (``"CTVp"``/``"CTVn"``).
        side: ``"L"``/``"R"`` for paired structures (patient left/right), else ``None``.
    """

    name: str
    role: Role
    synonyms: tuple[str, ...] = ()
    parent: str | None = None
    side: str | None = None


class UnknownStructureError(KeyError):
    """A name that is neither canonical nor a known synonym."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


def _paired(stem: str, role: Role, synonyms_for_side=lambda side, word: ()) -> list[Structure]:
    out = []
    for side, word in (("L", "left"), ("R", "right")):
        out.append(Structure(f"{stem}_{side}", role, tuple(synonyms_for_side(side, word)), side=side))
    return out


_ENTRIES: list[Structure] = [
    # --- the five structures the model delineates (seed report 3.4)
    Structure("Bladder", Role.OAR, ("UrinaryBladder", "urinary_bladder", "Blad", "Bladder_O")),
    Structure("Anorectum", Role.OAR, ("Rectum", "AnoRectum", "Ano_Rectum", "Anal_Canal_Rectum", "Rectum_Anus")),
    Structure("CTVn", Role.TARGET, ("CTV_N", "CTV_Nodal", "CTVnodal", "CTV_LN", "NodalCTV", "CTVn_45")),
    Structure("CTVp", Role.TARGET, ("CTV_P", "CTV_Primary", "CTVprimary", "PrimaryCTV", "CTVp_45")),
    Structure("Parametrium", Role.TARGET, ("Paravagina", "Parametria", "Parametrium_Paravagina", "Param")),
    # --- CTVp parts: CTVp = Cervix ∪ GTVp ∪ Uterus ∪ Vagina (seed eq. 3.4)
    Structure("GTVp", Role.SUB_TARGET, ("GTV_P", "GTV_Primary", "GTV", "Tumour", "Tumor"), parent="CTVp"),
    Structure("Cervix", Role.SUB_TARGET, ("Cervix_Uteri",), parent="CTVp"),
    Structure("Uterus", Role.SUB_TARGET, ("Uterus_Body", "Corpus_Uteri", "Womb"), parent="CTVp"),
    Structure("Vagina", Role.SUB_TARGET, ("Vagina_Upper", "UpperVagina"), parent="CTVp"),
    # --- CTVn parts: CTVn = GTVn ∪ LN_CommonIliac ∪ LN_Pelvic ∪ LN_ParaAortic (seed eq. 3.5)
    Structure("GTVn", Role.SUB_TARGET, ("GTV_N", "GTV_Nodal", "GTV_LN"), parent="CTVn"),
    Structure("LN_CommonIliac", Role.SUB_TARGET, ("LN_Iliac_Cm", "CommonIliacLN", "LN_CI", "CTV_CommonIliac"), parent="CTVn"),
    Structure("LN_Pelvic", Role.SUB_TARGET, ("PelvicLN", "LN_Pelvis", "CTV_Pelvic"), parent="CTVn"),
    Structure("LN_ParaAortic", Role.SUB_TARGET, ("LN_Paraaortic", "ParaAorticLN", "LN_PA", "CTV_PA", "CTV_ParaAortic"), parent="CTVn"),
    # --- anatomy labels written by the phantom (a many-label source task for pretraining)
    Structure("External", Role.ANATOMY, ("Body", "BODY", "Skin", "Outline")),
    Structure("Bone_Pelvic", Role.ANATOMY, ("Pelvis", "PelvicBone", "Hip_Bones")),
    Structure("Sacrum", Role.ANATOMY, ("Bone_Sacrum", "vertebrae_S1")),
    Structure("VB_L4", Role.ANATOMY, ("Vertebra_L4", "vertebrae_L4", "L4")),
    Structure("VB_L5", Role.ANATOMY, ("Vertebra_L5", "vertebrae_L5", "L5")),
    *_paired("Femur_Head", Role.ANATOMY, lambda s, w: (f"FemoralHead_{s}", f"femur_{w}", f"Femur_{s}")),
    *_paired("Kidney", Role.ANATOMY, lambda s, w: (f"kidney_{w}",)),
    *_paired("Musc_Iliopsoas", Role.ANATOMY, lambda s, w: (f"iliopsoas_{w}", f"Psoas_{s}", f"Musc_Psoas_{s}")),
    *_paired("Musc_Gluteus", Role.ANATOMY, lambda s, w: (f"gluteus_{w}", f"Gluteus_{s}")),
    Structure("Bowel_Small", Role.ANATOMY, ("SmallBowel", "small_bowel", "Intestine")),
    Structure("Colon_Sigmoid", Role.ANATOMY, ("Sigmoid", "SigmoidColon")),
    Structure("A_Aorta", Role.ANATOMY, ("Aorta",)),
    Structure("V_Venacava_I", Role.ANATOMY, ("IVC", "inferior_vena_cava", "VenaCava_Inf")),
    *_paired("A_Iliac_Cm", Role.ANATOMY, lambda s, w: (f"CommonIliacArtery_{s}",)),
    *_paired("A_Iliac_Ext", Role.ANATOMY, lambda s, w: (f"ExternalIliacArtery_{s}",)),
    *_paired("A_Iliac_Int", Role.ANATOMY, lambda s, w: (f"InternalIliacArtery_{s}",)),
    *_paired("V_Iliac_Cm", Role.ANATOMY, lambda s, w: (f"CommonIliacVein_{s}",)),
    *_paired("V_Iliac_Ext", Role.ANATOMY, lambda s, w: (f"ExternalIliacVein_{s}",)),
    *_paired("V_Iliac_Int", Role.ANATOMY, lambda s, w: (f"InternalIliacVein_{s}",)),
]

STRUCTURES: dict[str, Structure] = {s.name: s for s in _ENTRIES}

#: The five structures the model delineates, in label order (label 1..5 in label maps).
PRIMARY: tuple[str, ...] = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
#: Compound targets and their parts.
COMPOUND: dict[str, tuple[str, ...]] = {
    "CTVp": ("Cervix", "GTVp", "Uterus", "Vagina"),
    "CTVn": ("GTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"),
}
#: Structures whose absence from a labelled case means "this patient has none" (no gross tumour,
#: no pathological node). Any other absent structure means "not contoured for this patient" — e.g.
#: ``LN_ParaAortic`` when the clinician's CTVn stops at the common iliac nodes — and training
#: leaves it out of the loss for that case instead of teaching the model it is empty.
ABSENT_MEANS_EMPTY: frozenset[str] = frozenset({"GTVp", "GTVn"})
#: Gross disease: lies on the anatomical parts of its CTV (a tumour in the cervix is also Cervix),
#: always inside its CTV.
GROSS_DISEASE: frozenset[str] = frozenset({"GTVp", "GTVn"})
#: The nodal groups a CTVn is composed of by default (the para-aortic group is a per-patient choice).
DEFAULT_NODAL_GROUPS: tuple[str, ...] = ("GTVn", "LN_CommonIliac", "LN_Pelvic")
#: The outputs of a model whose CTVn is composed at predict time: the other four primary structures
#: and every CTVn part (the shipped default model's channels).
NODAL_OUTPUTS: tuple[str, ...] = ("Bladder", "Anorectum", "CTVp", "Parametrium", *COMPOUND["CTVn"])
#: The shipped default model's outputs: :data:`NODAL_OUTPUTS` and the CTVp's parts, which
#: ``predict`` partitions the predicted CTVp into (every part inside it, their union the CTVp).
DEFAULT_OUTPUTS: tuple[str, ...] = (*NODAL_OUTPUTS, *COMPOUND["CTVp"])


def _key(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name).casefold()


_LOOKUP: dict[str, str] = {}
for _s in _ENTRIES:
    for _n in (_s.name, *_s.synonyms):
        _k = _key(_n)
        if _k in _LOOKUP and _LOOKUP[_k] != _s.name:  # pragma: no cover - guards the table above
            raise RuntimeError(f"vocabulary clash: {_n!r} maps to {_LOOKUP[_k]} and {_s.name}")
        _LOOKUP[_k] = _s.name


def canonical_name(name: str) -> str:
    """Resolve a structure name or synonym (any case) to its canonical name.

    Args:
        name: e.g. ``"rectum"``, ``"CTV_N"``, ``"Paravagina"``, ``"bladder.nii.gz"`` is *not*
            accepted (strip the extension first, see :func:`cervicontour.io.strip_nifti_suffix`).

    Returns:
        The canonical name, e.g. ``"Anorectum"``.

    Raises:
        UnknownStructureError: with the closest known names ("did you mean ...?").

    Example:
        >>> canonical_name("rectum")
        'Anorectum'
    """
    hit = try_canonical_name(name)
    if hit is not None:
        return hit
    raise UnknownStructureError(unknown_message(name))


def try_canonical_name(name: str) -> str | None:
    """Like :func:`canonical_name` but returns ``None`` for unknown names."""
    return _LOOKUP.get(_key(name))


def unknown_message(name: str) -> str:
    """The error text for an unknown structure name, with suggestions."""
    keys = list(_LOOKUP)
    close = difflib.get_close_matches(_key(name), keys, n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(_LOOKUP[k] for k in close))
    hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return (
        f"unknown structure {name!r}.{hint} Known structures: {', '.join(PRIMARY)} and "
        f"{len(STRUCTURES) - len(PRIMARY)} others (see `cervicontour structures`)."
    )


def structure(name: str) -> Structure:
    """The vocabulary entry for a name or synonym."""
    return STRUCTURES[canonical_name(name)]


def is_sub_structure(name: str) -> bool:
    """True for structures stored under ``structures/sub/`` (everything but the primary five)."""
    return canonical_name(name) not in PRIMARY


#: Display colours (hex) of the primary structures: the pictures, the review page, RTSTRUCT ROI colours.
COLOURS = {
    "Bladder": "#f6d32d",
    "Anorectum": "#a0522d",
    "CTVn": "#33d17a",
    "CTVp": "#e01b24",
    "Parametrium": "#3584e4",
}
#: Colours given in turn to any other structure (parts, extra labels).
PALETTE = ("#c061cb", "#ff7800", "#00b4d8", "#9a9996", "#2ec27e", "#e66100")


def display_colour(name: str, index: int = 0) -> str:
    """Hex display colour: a primary structure's own (any synonym), else the ``index``-th of :data:`PALETTE`.

    Example:
        >>> display_colour("bladder"), display_colour("Uterus", 1), display_colour("Uterus", 7)
        ('#f6d32d', '#ff7800', '#ff7800')
    """
    return COLOURS.get(try_canonical_name(name) or name) or PALETTE[index % len(PALETTE)]


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` as ``(r, g, b)``, each 0–255.

    Example:
        >>> hex_to_rgb("#e01b24")
        (224, 27, 36)
    """
    return tuple(int(colour[k : k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]
