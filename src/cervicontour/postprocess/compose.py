"""Build CTVn / CTVp from the sub-structures a clinician chooses, and log the choice.

The model cannot decide how many CTV components a patient needs (e.g. whether the para-aortic
nodes are treated): a clinician picks them, and this module forms the union. The choice — who,
when, which parts were asked for, which existed, which were missing — is appended to
``CASE_DIR/compose_log.jsonl``, and the mask it replaces is kept under ``CASE_DIR/history/``.
All or nothing: every part is read and every union formed before anything is written, and the
draft is replaced by an atomic write after its copy is in ``history/``; a failure leaves it as it was.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND, canonical_name
from cervicontour.volume import Volume

LOG_FILE = "compose_log.jsonl"
#: Gross disease always lies inside its CTV: composed in whenever the case has it (rules.compound
#: flags a CTV that leaves it out).
ALWAYS_INCLUDED = {"CTVn": "GTVn", "CTVp": "GTVp"}


@dataclass(frozen=True)
class Composition:
    """One composed target.

    Attributes:
        target: ``"CTVn"`` or ``"CTVp"``.
        requested: the parts asked for, canonical names, in the order given.
        used: the parts the union was formed of: the requested ones the case has, plus the
            target's GTV when the case has it (see ``added``).
        missing: requested parts the case does not have.
        added: parts not requested but included: the GTV (gross disease is always inside its CTV).
        volume_cc: volume of the composed target.
        previous_cc: volume of the mask it replaced, ``None`` if there was none.
        path: the mask written.
        backup: where the replaced mask was kept, ``None`` if there was none.
    """

    target: str
    requested: tuple[str, ...]
    used: tuple[str, ...]
    missing: tuple[str, ...]
    volume_cc: float
    previous_cc: float | None
    path: Path
    backup: Path | None
    added: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        """In words, for the terminal and the log."""
        text = f"{self.target} = {' ∪ '.join(self.used)} ({self.volume_cc:.1f} cc"
        text += f", was {self.previous_cc:.1f} cc)" if self.previous_cc is not None else ")"
        if self.added:
            text += f"; {', '.join(self.added)} added: gross disease always lies inside its CTV"
        if self.missing:
            text += f"; not in this case: {', '.join(self.missing)} — composed from the parts that exist"
        return text


def parse_parts(target: str, names: str | Sequence[str]) -> tuple[str, ...]:
    """Canonical part names for ``target`` from ``"LN_Pelvic,LN_CommonIliac"`` or a list.

    Raises:
        InputError: an empty list, a part of the other target, or a name that is not a part.
        UnknownStructureError: a name the vocabulary does not know ("did you mean ...").

    Example:
        >>> parse_parts("CTVn", "pelvicLN, LN_CI")
        ('LN_Pelvic', 'LN_CommonIliac')
    """
    target = canonical_name(target)
    if target not in COMPOUND:
        raise InputError(f"{target} is not a compound target; expected one of {', '.join(COMPOUND)}")
    items = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    items = [n for n in items if n]
    if not items:
        raise InputError(f"no parts given for {target}; expected some of {', '.join(COMPOUND[target])}")
    parts = []
    for item in items:
        name = canonical_name(item)
        if name not in COMPOUND[target]:
            owner = next((t for t, members in COMPOUND.items() if name in members), None)
            where = f"{name} is a part of {owner}, not {target}" if owner else f"{name} is not a part of {target}"
            raise InputError(f"{where}; {target} parts are {', '.join(COMPOUND[target])}")
        if name not in parts:
            parts.append(name)
    return tuple(parts)


def union(parts: Mapping[str, Volume]) -> Volume:
    """Voxel-wise union of masks on one grid, as a binary uint8 Volume.

    Args:
        parts: name → mask (non-zero = inside), all on the same grid. Not modified.

    Raises:
        InputError: no parts, or parts on different grids.
    """
    if not parts:
        raise InputError("nothing to compose: no parts given")
    names = list(parts)
    first = parts[names[0]]
    out = np.zeros(first.shape, bool)
    for name in names:
        mask = parts[name]
        if not first.same_grid(mask):
            raise InputError(
                f"{name} is not on the grid of {names[0]} ({'; '.join(first.grid_differences(mask))}); "
                "expected the parts of one case — run `cervicontour clean` first"
            )
        out |= np.asarray(mask.array) != 0
    return first.with_array(out.astype(np.uint8))


def case_structure_paths(case_dir: str | os.PathLike) -> dict[str, Path]:
    """Canonical name → mask file in ``CASE_DIR/structures`` and ``CASE_DIR/structures/sub``."""
    from cervicontour.io import is_nifti, strip_nifti_suffix
    from cervicontour.structures import try_canonical_name

    case_dir = Path(case_dir)
    found: dict[str, Path] = {}
    for sub in (case_dir / "structures", case_dir / "structures" / "sub"):
        if sub.is_dir():
            for path in sorted(p for p in sub.iterdir() if p.is_file() and is_nifti(p)):
                name = try_canonical_name(strip_nifti_suffix(path.name))
                if name is not None and name not in found:
                    found[name] = path
    return found


def compose_case(
    case_dir: str | os.PathLike,
    choices: Mapping[str, Sequence[str] | str],
    *,
    who: str,
    when: _dt.datetime | None = None,
) -> list[Composition]:
    """Compose the chosen targets of one case folder (cohort layout) and log the choice.

    Args:
        case_dir: ``CASE_DIR`` with ``structures/`` (and ``structures/sub/``) masks.
        choices: target → parts, e.g. ``{"CTVn": "LN_Pelvic,LN_CommonIliac"}``.
        who: the person choosing (the CLI passes the login name unless ``--who`` is given).
        when: time of the choice (default now, UTC).

    Returns:
        One :class:`Composition` per target. A requested part the case lacks is listed in
        ``missing`` (and the log) and the target is built from the others. The target's GTV is
        always included when the case has it (``added``).

    Raises:
        InputError: none of a target's requested parts exists in the case (the message lists
            the parts it has), parts on different grids, or a bad choice (see :func:`parse_parts`).

    Example:
        >>> compose_case("pred/p01", {"CTVn": "LN_Pelvic,LN_CommonIliac"}, who="dr.a")  # doctest: +SKIP
    """
    from cervicontour.io import read_nifti, write_nifti

    case_dir = Path(case_dir)
    if not (case_dir / "structures").is_dir():
        raise InputError(f"{case_dir}: no structures/ folder; expected a case folder (CASE_DIR/structures/*.nii.gz)")
    when = when or _dt.datetime.now(_dt.timezone.utc)
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    available = case_structure_paths(case_dir)
    plans = {canonical_name(t): parse_parts(t, parts) for t, parts in choices.items()}
    for target, requested in plans.items():  # check every target before writing anything
        if not any(p in available for p in requested):
            have = [p for p in COMPOUND[target] if p in available]
            raise InputError(
                f"{case_dir}: none of the requested {target} parts ({', '.join(requested)}) exists; "
                + (f"the case has {', '.join(have)}" if have else f"the case has no {target} sub-structures at all")
                + f" — choose among those (sub-structures are in {case_dir / 'structures' / 'sub'})"
            )
    planned = []  # every part read and every union formed before anything is written
    for target, requested in plans.items():
        used = tuple(p for p in requested if p in available)
        missing = tuple(p for p in requested if p not in available)
        gtv = ALWAYS_INCLUDED[target]
        added = (gtv,) if gtv in available and gtv not in requested else ()
        used += added
        composed = union({p: read_nifti(available[p]) for p in used})
        previous_path = available.get(target)
        previous_cc = None
        if previous_path is not None:
            previous = read_nifti(previous_path)
            previous_cc = float(np.count_nonzero(previous.array)) * previous.voxel_volume_cc
        planned.append((target, requested, used, missing, added, composed, previous_path, previous_cc))
    results = []
    for target, requested, used, missing, added, composed, previous_path, previous_cc in planned:
        destination = case_dir / "structures" / f"{target}.nii.gz"
        backup = None
        if previous_path is not None:  # a copy first: the draft is only replaced by the atomic write below
            backup = case_dir / "history" / stamp / previous_path.name
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(previous_path, backup)
        write_nifti(composed, destination)
        if previous_path is not None and previous_path != destination:
            previous_path.unlink()  # the target was stored under another name (a synonym)
        volume_cc = float(np.count_nonzero(composed.array)) * composed.voxel_volume_cc
        result = Composition(target, requested, used, missing, volume_cc, previous_cc, destination, backup, added)
        _log(case_dir, result, who=who, when=when)
        results.append(result)
    return results


def _log(case_dir: Path, result: Composition, *, who: str, when: _dt.datetime) -> None:
    record = {
        "action": "compose",
        "who": who,
        "when": when.isoformat(),
        **{k: v for k, v in asdict(result).items() if k not in ("path", "backup")},
        "path": str(result.path.relative_to(case_dir)),
        "backup": str(result.backup.relative_to(case_dir)) if result.backup else None,
        "sha256": hashlib.sha256(result.path.read_bytes()).hexdigest(),
        "note": result.note,
    }
    with (case_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_log(case_dir: str | os.PathLike) -> list[dict]:
    """The compose (and margin) records of a case, oldest first (``[]`` when none)."""
    path = Path(case_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
