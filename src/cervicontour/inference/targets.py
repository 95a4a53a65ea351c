"""The compound targets from predicted parts: a CTVn composed from the chosen nodal groups, and
which parts each compound's mask is split into (:func:`parts_partition`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND


def parts_partition(names: Sequence[str], composed: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Compound target → the predicted parts its mask is split into: the nodal groups a CTVn was
    composed of (``composed``), and the parts of a compound the model predicts itself (the CTVp
    with Cervix, GTVp, Uterus, Vagina; a CTVn with the groups it is made of by default,
    :data:`~cervicontour.structures.DEFAULT_NODAL_GROUPS`: the para-aortic group is the per-patient
    extension, drafted on its own as beside a CTVn composed without it). The split
    (:func:`cervicontour.contours.parts.partition_compound`) puts every part inside the
    compound and makes their union the compound.

    Example:
        >>> parts_partition(("CTVp", "Cervix", "Uterus", "LN_Pelvic", "CTVn"), {"CTVn": ["LN_Pelvic"]})
        {'CTVn': ['LN_Pelvic'], 'CTVp': ['Cervix', 'Uterus']}
        >>> parts_partition(("CTVn", "LN_Pelvic", "LN_ParaAortic"), {})
        {'CTVn': ['LN_Pelvic']}

    A predicted compound with gross disease but no anatomical part (CTVp and GTVp only) is not
    split: the GTV alone cannot tile it; it keeps its own threshold.

        >>> parts_partition(("CTVp", "GTVp"), {})
        {}
    """
    from cervicontour.structures import DEFAULT_NODAL_GROUPS, GROSS_DISEASE

    out = {t: list(ps) for t, ps in composed.items()}
    for target, parts in COMPOUND.items():
        present = [p for p in parts if p in names and (target != "CTVn" or p in DEFAULT_NODAL_GROUPS)]
        if target in names and target not in out and any(p not in GROSS_DISEASE for p in present):
            out[target] = present
    return out


def compose_targets(structures: tuple[str, ...], working: np.ndarray, nodal_groups: Sequence[str] | None):
    """Add CTVn = voxel-wise max of the chosen nodal-group probabilities when the model predicts
    the groups but not CTVn itself (max of probabilities = union of the thresholded masks). A model
    that predicts CTVn itself and the groups keeps its own CTVn unless groups are chosen; a choice
    replaces it by the union of the chosen groups."""
    from cervicontour.contours.compose import parse_parts
    from cervicontour.structures import DEFAULT_NODAL_GROUPS, GROSS_DISEASE

    predicted = [n for n in structures if n in COMPOUND["CTVn"]]
    if not predicted or ("CTVn" in structures and nodal_groups is None):
        if nodal_groups is not None:
            raise InputError(
                f"this model predicts {'CTVn as one structure' if 'CTVn' in structures else 'no CTVn'} and none of its nodal groups "
                f"({', '.join(COMPOUND['CTVn'])}), so it cannot compose a CTVn from the chosen groups ({', '.join(nodal_groups)}); "
                "drop --nodal-groups/--para-aortic, or use a model that predicts the groups (the default model, or `cervicontour fit --init default`)"
            )
        return structures, working, {}
    chosen = parse_parts("CTVn", DEFAULT_NODAL_GROUPS if nodal_groups is None else nodal_groups)
    use = [n for n in chosen if n in predicted]
    # a choice the model cannot honour is an error, never silently narrowed (gross disease excepted:
    # a model without a GTVn channel predicts "no pathological node", which the choice allows)
    missing = [n for n in chosen if n not in predicted and n not in GROSS_DISEASE]
    if missing or not use:
        missing = missing or chosen
        raise InputError(
            f"this model does not predict the nodal group{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it predicts {', '.join(predicted)}), so it cannot compose the chosen CTVn ({', '.join(chosen)}); "
            "choose among the groups it predicts with --nodal-groups"
        )
    ctvn = np.max(working[[structures.index(n) for n in use]], axis=0)
    if "CTVn" in structures:  # the chosen groups replace the model's own CTVn
        working = working.copy()
        working[structures.index("CTVn")] = ctvn
        return structures, working, {"CTVn": use}
    return (*structures, "CTVn"), np.concatenate([working, ctvn[None]], axis=0), {"CTVn": use}


def reference_nodal_groups(source, structures: Sequence[str]) -> list[str]:
    """The nodal groups (``LN_*``, ``GTVn``) a labelled case's reference CTVn is made of, from the
    names of its reference structures (``source`` names the case in the error).

    Raises:
        InputError: the case has none of them.
    """
    groups = [n for n in COMPOUND["CTVn"] if n in structures]
    if not groups:
        raise InputError(f"{source}: --nodal-groups reference needs the case's reference LN_* contours; it has none")
    return groups


