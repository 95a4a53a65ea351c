"""Build CTVn / CTVp from the sub-structures a clinician chooses, and log the choice.

The model cannot decide how many CTV components a patient needs (e.g. whether the para-aortic
nodes are treated): a clinician picks them, and this module forms the union. A chosen part the
case has no mask of is an error (a choice the case cannot honour is never silently dropped); a
part whose mask is empty (a GTVn file with no voxel: no pathological node) is a valid choice.
The choice — who, when, which parts, the SHA-256 of every part mask used and of the composed
mask — is appended to ``CASE_DIR/compose_log.jsonl``, and the mask it replaces is kept under
``CASE_DIR/history/``.
All or nothing: every part is read and every union formed before anything is written, and the
draft is replaced by an atomic write after its copy is in ``history/``; a failure leaves it as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io.atomic import file_sha256
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
        used: the parts the union was formed of: the requested ones, plus the target's GTV when
            the case has it (see ``added``).
        added: parts not requested but included: the GTV (gross disease is always inside its CTV).
        volume_cc: volume of the composed target.
        previous_cc: volume of the mask it replaced, ``None`` if there was none.
        path: the mask written.
        backup: where the replaced mask was kept, ``None`` if there was none.
        parts_sha256: part → SHA-256 of its mask file as read, for every part in ``used``.
    """

    target: str
    requested: tuple[str, ...]
    used: tuple[str, ...]
    volume_cc: float
    previous_cc: float | None
    path: Path
    backup: Path | None
    added: tuple[str, ...] = ()
    parts_sha256: Mapping[str, str] = field(default_factory=dict)

    @property
    def note(self) -> str:
        """In words, for the terminal and the log."""
        text = f"{self.target} = {' ∪ '.join(self.used)} ({self.volume_cc:.1f} cc"
        text += f", was {self.previous_cc:.1f} cc)" if self.previous_cc is not None else ")"
        if self.added:
            text += f"; {', '.join(self.added)} added: gross disease always lies inside its CTV"
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


def require_parts(case_dir: str | os.PathLike, plans: Mapping[str, Sequence[str]], available: Mapping[str, Path]) -> None:
    """Refuse a choice the case cannot honour: a chosen part it has no mask file of.

    A mask that exists but is empty (e.g. ``GTVn`` of a patient without a pathological node)
    counts as present: choosing it is valid and adds nothing.

    Args:
        case_dir: the case folder (named in the message).
        plans: target → canonical part names (see :func:`parse_parts`).
        available: canonical name → mask file, see :func:`case_structure_paths`.

    Raises:
        InputError: naming each target's missing parts, the parts the case has, and what to do.

    Example:
        >>> require_parts("p01", {"CTVn": ("LN_Pelvic",)}, {"LN_Pelvic": Path("p01/structures/sub/LN_Pelvic.nii.gz")})
    """
    problems = []
    for target, requested in plans.items():
        missing = [p for p in requested if p not in available]
        if missing:
            have = [p for p in COMPOUND[target] if p in available]
            problems.append(f"{target} part{'s' if len(missing) > 1 else ''} {', '.join(missing)} not in this case (no mask file); "
                            + (f"it has {', '.join(have)}" if have else f"it has no {target} parts at all"))
    if problems:
        raise InputError(
            f"{case_dir}: {'; '.join(problems)} — choose among the parts it has, or add the missing masks to "
            f"{Path(case_dir) / 'structures' / 'sub'} first (a model that does not predict a part cannot offer it: "
            "predict with a model that does, e.g. the default one); nothing was written"
        )


def compose_parts(target: str, requested: Sequence[str], available: Mapping[str, Path]) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str], Volume]:
    """The union of ``requested`` parts of ``target`` (and its GTV when the case has one), read
    from ``available`` (see :func:`case_structure_paths`; check with :func:`require_parts` first).

    Returns:
        ``(used, added, parts_sha256, composed)``: the parts in the union, the GTV added
        unrequested (``()`` if none), part → SHA-256 of its mask file, the binary union.
    """
    from cervicontour.io import read_nifti

    gtv = ALWAYS_INCLUDED[target]
    added = (gtv,) if gtv in available and gtv not in requested else ()
    used = (*requested, *added)
    hashes = {p: file_sha256(available[p]) for p in used}
    return used, added, hashes, union({p: read_nifti(available[p]) for p in used})


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
        One :class:`Composition` per target. The target's GTV is always included when the case
        has it (``added``). A chosen part whose mask is empty (no node) is used and adds nothing.

    Raises:
        InputError: a requested part the case has no mask file of (see :func:`require_parts`;
            nothing is written), parts on different grids, or a bad choice (see :func:`parse_parts`).

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
    require_parts(case_dir, plans, available)  # every target checked before anything is written
    planned = []  # every part read and every union formed before anything is written
    for target, requested in plans.items():
        used, added, hashes, composed = compose_parts(target, requested, available)
        previous_path = available.get(target)
        previous_cc = None
        if previous_path is not None:
            previous = read_nifti(previous_path)
            previous_cc = float(np.count_nonzero(previous.array)) * previous.voxel_volume_cc
        planned.append((target, requested, used, added, hashes, composed, previous_path, previous_cc))
    results = []
    for target, requested, used, added, hashes, composed, previous_path, previous_cc in planned:
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
        result = Composition(target, requested, used, volume_cc, previous_cc, destination, backup, added, hashes)
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
        "sha256": file_sha256(result.path),
        "note": result.note,
    }
    _append(case_dir, record)


def _append(case_dir: Path, record: Mapping) -> None:
    with (case_dir / LOG_FILE).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def log_predicted_choice(
    case_dir: str | os.PathLike,
    composed: Mapping[str, Sequence[str]],
    *,
    requested: Sequence[str] | str,
    chosen_by: str,
    who: str | None,
    when: _dt.datetime | None = None,
) -> list[dict]:
    """Log the parts ``predict`` composed a target of (e.g. CTVn from ``--nodal-groups``) in
    ``CASE_DIR/compose_log.jsonl``, as ``compose`` logs a clinician's choice (action ``"predict"``).

    Args:
        case_dir: the case folder predict wrote (``structures/<Target>.nii.gz``, parts in
            ``structures/sub/``).
        composed: target → the parts its mask was composed of (``CasePrediction.composed``).
        requested: the parts asked for (the default ones when none were given).
        chosen_by: where ``requested`` came from: ``"option"`` (``--nodal-groups``/``--para-aortic``),
            ``"default"`` or ``"reference"`` (each case's reference contours).
        who: who ran predict (the CLI passes ``--who`` or the login name; ``None``: not given).
        when: time of the choice (default now, UTC).

    Returns:
        The records appended, one per target: ``{"action": "predict", "who", "when", "target",
        "requested", "used", "chosen_by", "path", "sha256", "parts_sha256", "note"}``; the hashes
        are SHA-256 of the mask files as written.

    Raises:
        InputError: a composed target or part has no mask file in the case folder.
    """
    case_dir = Path(case_dir)
    when = when or _dt.datetime.now(_dt.timezone.utc)
    available = case_structure_paths(case_dir)
    records = []
    for target, used in composed.items():
        used = parse_parts(target, used)
        require_parts(case_dir, {target: used}, available)
        if target not in available:
            raise InputError(f"{case_dir}: no {target} mask to log the composition of; expected structures/{target}.nii.gz")
        asked = list(parse_parts(target, requested))
        unpredicted = [p for p in asked if p not in used]
        note = f"{target} = {' ∪ '.join(used)}, composed by predict from {', '.join(asked)} ({chosen_by})"
        note += f"; not predicted by the model: {', '.join(unpredicted)}" if unpredicted else ""
        record = {
            "action": "predict", "who": who, "when": when.isoformat(), "target": target, "requested": asked,
            "used": list(used), "chosen_by": chosen_by, "path": available[target].relative_to(case_dir).as_posix(),
            "sha256": file_sha256(available[target]), "parts_sha256": {p: file_sha256(available[p]) for p in used},
            "note": note,
        }
        _append(case_dir, record)
        records.append(record)
    return records


def only_predict_records(case_dir: str | os.PathLike) -> bool:
    """True when the case's ``compose_log.jsonl`` holds only what ``predict`` logged (nothing a
    clinician composed): ``predict`` may then replace the case folder. False when there is no log."""
    path = Path(case_dir) / LOG_FILE
    try:
        records = read_log(case_dir) if path.is_file() else []
    except ValueError:  # not the log we write
        return False
    return bool(records) and all(isinstance(r, dict) and r.get("action") == "predict" for r in records)


def read_log(case_dir: str | os.PathLike) -> list[dict]:
    """The compose (and margin) records of a case, oldest first (``[]`` when none)."""
    path = Path(case_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
