"""Synthetic female-pelvis CT cohort: the stand-in for the hospital's cervix data.

Deterministic per seed: patient ``i`` uses ``numpy.random.default_rng([seed, i])``, so the same
seed gives identical files whatever the cohort size. The hospital's edge cases (seed report
table 3.2) appear at fixed positions so that even a small cohort has them, with their notes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.synth.anatomy import DEFAULT_PHANTOM
from cervicontour.synth.style import Style, load_style, style_to_toml  # noqa: F401  (load_style: re-exported)
from cervicontour.volume import Volume

#: Edge cases by labelled-patient position (0-based); later patients draw them at random.
EDGE_SCHEDULE = {
    1: ("no GTVp",),
    2: ("only scanned bottom of kidneys", "missing left kidney"),
    3: ("extra slices",),
    4: ("no contrast - hard to see LNs", "small parametrium and low uterus"),
}
EDGE_RATES = {
    "no GTVp": 0.10,
    "only scanned bottom of kidneys": 0.05,
    "missing left kidney": 0.02,
    "extra slices": 0.05,
    "no contrast - hard to see LNs": 0.06,
    "small parametrium and low uterus": 0.04,
}


#: Where a cohort drawn with a non-default style records it (resolved, readable by load_style).
STYLE_FILE = "style.toml"


def patient_id(index: int) -> str:
    return f"SYN{index + 1:03d}"


def edge_cases(index: int, rng: np.random.Generator, rates: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """The edge cases of labelled patient ``index``: the schedule's, else drawn at ``EDGE_RATES``
    (``rates`` overrides some; one draw per edge case either way, so the rest of the patient's
    random stream does not move)."""
    if index in EDGE_SCHEDULE:
        return EDGE_SCHEDULE[index]
    unknown = set(rates or {}) - set(EDGE_RATES)
    if unknown:
        raise InputError(f"unknown edge cases {sorted(unknown)}; known: {', '.join(EDGE_RATES)}")
    rates = {**EDGE_RATES, **(rates or {})}
    return tuple(name for name in EDGE_RATES if rng.random() < rates[name])


def to_ras(volume: Volume) -> Volume:
    """Same voxels in the world, stored RAS (axes 0 and 1 reversed), as nibabel-canonical files are."""
    corner = volume.index_to_world(np.array([volume.shape[0] - 1, volume.shape[1] - 1, 0]))
    direction = volume.direction @ np.diag([-1.0, -1.0, 1.0])
    return Volume(volume.array[::-1, ::-1, :], volume.spacing_mm, tuple(corner), direction)  # a view


def synthesize_cohort(
    out: str | os.PathLike,
    *,
    patients: int,
    holdout: int = 0,
    seed: int = 0,
    size: str = "small",
    on_case: Callable[[str], None] | None = None,
    edge_rates: Mapping[str, float] | None = None,
    phantom: int = DEFAULT_PHANTOM,
    style: Style = Style(),
    primary_only: bool = False,
) -> Path:
    """Write ``patients`` labelled and ``holdout`` unlabelled phantom patients to ``out``.

    ``primary_only`` writes the five primary masks only (:data:`~cervicontour.structures.PRIMARY`,
    no ``structures/sub/``), as a hospital's cohort has them; the same seed draws the same patients
    and the same five masks.

    ``edge_rates`` overrides some of :data:`EDGE_RATES` (e.g. ``{"no contrast - hard to see LNs": 0.5}``
    for a cohort of mostly unenhanced CTs).

    ``phantom`` picks the anatomy version (:data:`~cervicontour.synth.anatomy.PHANTOMS`): 1 (iliac
    vessels through the iliopsoas) or 2 (on its surface); the default is
    :data:`~cervicontour.synth.anatomy.DEFAULT_PHANTOM`. Only the vessels differ; the same seed draws the same patients.

    ``style`` is a hospital's contouring and scanner conventions (:class:`~cervicontour.synth.style.Style`,
    read by :func:`~cervicontour.synth.style.load_style` from a TOML file): CTVn vessel margin,
    slice thickness, CT noise, HU offset, share of the vagina in the CTVp, parametrium extent and
    bladder filling. ``Style()`` (the default) draws exactly the files drawn before styles existed
    and writes no style file; any other style is recorded, resolved, in ``out/style.toml`` (its
    sha256 in the first line) so that the cohort says how it was drawn. The same seed draws the
    same patients under any style (a fixed slice thickness still consumes the spacing draw).

    Every fourth patient is stored RAS instead of LPS (the world geometry is the same), so that
    every consumer is exercised on both orientations.

    Example:
        >>> synthesize_cohort("hospital_b", patients=4, seed=5151,  # doctest: +SKIP
        ...                   style=Style(ctvn_margin_mm=10.0, slice_thickness_mm=2.5))

    Raises:
        InputError: ``out`` exists and is not empty, or ``size``, ``phantom`` or ``style`` is unusable.
    """
    from cervicontour.cohort import write_case, write_notes
    from cervicontour.structures import PRIMARY
    from cervicontour.synth.case import synthesize_case

    out = Path(out)
    from cervicontour.synth.anatomy import PHANTOMS

    if phantom not in PHANTOMS:
        raise InputError(f"phantom must be one of {sorted(PHANTOMS)}, got {phantom!r}")
    if size not in ("small", "full"):
        raise InputError(f"size must be 'small' or 'full', got {size!r}")
    if not isinstance(style, Style):
        raise InputError(f"style must be a cervicontour.synth.Style (load_style reads one from TOML), "
                         f"got {type(style).__name__}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder (synth never overwrites)")
    notes: dict[str, str] = {}
    for index in range(patients + holdout):
        labelled = index < patients
        rng = np.random.default_rng([seed, index])
        edge = edge_cases(index, rng, edge_rates) if labelled else ()
        case = synthesize_case(rng, size=size, edge=set(edge), labelled=labelled, phantom=phantom, style=style)
        image, structures = case.image, case.structures
        if primary_only:
            structures = {n: m for n, m in structures.items() if n in PRIMARY}
        if index % 4 == 3:
            image = to_ras(image)
            structures = {n: to_ras(m) for n, m in structures.items()}
        pid = patient_id(index)
        write_case(out, pid, image, structures)
        notes[pid] = _note(edge, case.patient, labelled)
        if on_case:
            on_case(pid)
    write_notes(out, notes)
    if style != Style():
        (out / STYLE_FILE).write_text(style_to_toml(style), encoding="utf-8")
    return out


def _note(edge: tuple[str, ...], p, labelled: bool) -> str:
    if not labelled:
        return "hold-out: CT only, no contours"
    parts = list(edge)
    if p.para_aortic:
        parts.append("para-aortic nodes included")
    if p.gtvn:
        parts.append("GTVn left external iliac")
    if p.bladder_contrast:
        parts.append("contrast in bladder")
    return ". ".join(parts)
