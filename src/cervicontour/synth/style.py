"""A hospital's contouring and scanner conventions for the phantom (``synth --style STYLE.toml``).

A :class:`Style` changes how a cohort is labelled and scanned, not who the patients are: every
default reproduces the phantom bit for bit, and a value that replaces a random draw (the slice
thickness) still consumes that draw, so the rest of each patient's anatomy stays the same.

The TOML file has flat keys, all optional::

    ctvn_margin_mm = 10.0          # vessel margin of the nodal CTV
    slice_thickness_mm = 2.5       # every patient's slice spacing (default: drawn per patient)
    noise_hu = 25.0                # CT noise scale (HU)
    hu_offset = 30.0               # scanner calibration offset added to every voxel
    vagina_length_fraction = 0.5   # share of the vagina's length in the CTVp (default: anatomy)
    parametrium_extent = 1.2       # scale on the parametrium's lateral reach
    bladder_filling = 1.5          # scale on the bladder volume
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cervicontour.errors import InputError

#: Accepted range per key (inclusive): what arrives outside it is refused, never clipped.
RANGES = {
    "ctvn_margin_mm": (0.0, 20.0),
    "slice_thickness_mm": (1.0, 10.0),
    "noise_hu": (0.0, 200.0),
    "hu_offset": (-200.0, 200.0),
    "vagina_length_fraction": (0.0, 1.0),
    "parametrium_extent": (0.3, 2.0),
    "bladder_filling": (0.2, 2.5),
}


@dataclass(frozen=True)
class Style:
    """How one hospital contours and scans; the defaults are the phantom's own conventions.

    Attributes:
        ctvn_margin_mm: margin around the pelvic vessels that makes the nodal CTV (Taylor et al.
            2005: 7 mm), before bone, muscle, bowel, kidney, CTVp and Anorectum are cut out.
        slice_thickness_mm: one slice spacing for every patient; ``None`` draws it per patient
            (small: 4.5-6.0 mm; full: 2.0, 2.5 or 3.0 mm). The scan keeps the z-coverage in mm
            the drawn spacing would have had, so a thinner slice means more slices.
        noise_hu: scale of the CT noise (HU); the standard deviation it gives in a uniform region
            is ``noise_hu`` times about 1.21 on small grids, 1.11 at full size (the blur's
            discrete kernel: :func:`~cervicontour.synth.appearance.finish`).
        hu_offset: added to every voxel's HU before the clip to [-1024, 3071] (a calibration
            offset; air reads -1000 + offset).
        vagina_length_fraction: share (0-1) of the vagina's centre-line length, from the cervix
            down, labelled ``Vagina`` (and so part of the CTVp); the rest is lower vagina (not a
            target). ``None``: the phantom's anatomical split, about 0.40 (0.50 when the uterus
            lies low). Only labels change, never the CT; the parametrium, which runs beside the
            cervix and upper vagina, follows.
        parametrium_extent: scale on the parametrium's lateral reach from the midline (60 mm,
            44 mm in the "small parametrium" edge case, times the patient's size).
        bladder_filling: scale on the drawn bladder volume (each radius times its cube root).

    Raises:
        InputError: a value is not a number, or lies outside :data:`RANGES`.
    """

    ctvn_margin_mm: float = 7.0
    slice_thickness_mm: float | None = None
    noise_hu: float = 12.0
    hu_offset: float = 0.0
    vagina_length_fraction: float | None = None
    parametrium_extent: float = 1.0
    bladder_filling: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"style key {f.name!r}: expected a number, got {value!r} ({type(value).__name__})"
                                 + ("; leave the key out to draw it per patient" if f.default is None else ""))
            lo, hi = RANGES[f.name]
            if not lo <= value <= hi:  # NaN fails too
                raise InputError(f"style key {f.name!r}: expected {lo:g} to {hi:g}, got {value!r}; "
                                 f"the phantom's own convention is {f.default!r}")
            object.__setattr__(self, f.name, float(value))

    def to_dict(self) -> dict:
        return asdict(self)

    def sha256(self) -> str:
        """Hash of the resolved style (key order normalised)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def style_from_dict(data: dict, *, source: str = "<memory>") -> Style:
    """Flat ``{key: number}`` → :class:`Style`; unknown keys are refused with the closest known one."""
    known = [f.name for f in fields(Style)]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{source}: unknown style key {key!r}{hint}; known keys: {', '.join(known)}")
    return Style(**data)


def load_style(path: str | os.PathLike) -> Style:
    """Read a style TOML file (flat keys, all optional; see :class:`Style`).

    An empty file gives ``Style()``, the phantom's own conventions.

    Raises:
        InputError: the file is missing or not TOML, a key is unknown ("did you mean ...?"), or a
            value is not a number in its range.

    Example:
        >>> load_style("hospital_b.toml")  # doctest: +SKIP
        Style(ctvn_margin_mm=10.0, slice_thickness_mm=2.5, ...)
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: cannot read the style file ({exc}); expected flat TOML keys such as "
                         "'ctvn_margin_mm = 10.0'") from None
    try:
        return style_from_dict(data, source=str(path))
    except InputError as exc:
        message = str(exc)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def style_to_toml(style: Style) -> str:
    """The resolved style as TOML that :func:`load_style` reads back (unset keys as comments)."""
    lines = [f"# resolved synth style, sha256 {style.sha256()}"]
    for key, value in style.to_dict().items():
        lines.append(f"# {key} = (unset: the phantom's own)" if value is None else f"{key} = {value!r}")
    return "\n".join(lines) + "\n"
