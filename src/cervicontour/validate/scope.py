"""Is a case inside what the model was made for? Per-case reasons, written to ``prediction.json``.

The model drafts cervical-cancer targets on a female pelvis CT. It is run on whatever it is given,
so :func:`out_of_scope` says, per case and in words, when the input is outside that:

* the input gate was overridden with ``--force`` (each problem it let through);
* no pelvis in the field of view: no bilateral pelvic bone (iliac wings, acetabula, femoral
  heads: at least :data:`PELVIS_MIN_SLICES_MM` mm of slices with :data:`BONE_MIN_CM2` cm² of
  bone > :data:`BONE_HU` HU on each side of the midline, away from the spine), or no bladder found;
* anatomy the model was not made for: no uterus-like CTVp — the model's CTVp under
  :data:`CTVP_MIN_CC` cc, its uncertainty over :data:`CTVP_MAX_UNCERTAINTY` bits, or its
  Parametrium under :data:`PARAMETRIUM_MIN_CC` cc — as in a male pelvis or after hysterectomy.

Measured (``benchmarks/out_of_scope.py``): on 8 phantom patients the model's CTVp was 37-172 cc
at uncertainty 0.06-0.14 and its Parametrium 120-225 cc, bilateral pelvic bone 173-214 mm; on the
real (male) abdomen-pelvis CT, CTVp 33 cc at uncertainty 0.43, Parametrium 13 cc, pelvic bone
135 mm; that CT cut to its upper abdomen, 0 mm of pelvic bone. The thresholds sit between the
two with room on both sides.

An empty list means none of these was seen; it is not a promise that the drafts are right.
"""

from __future__ import annotations

import numpy as np

#: Bone threshold (cortical and dense trabecular bone; soft tissue and contrast stay below).
BONE_HU = 200.0
#: Bone area a slice needs on each side of the midline to count as pelvic (a femoral head is ~17 cm²).
BONE_MIN_CM2 = 8.0
#: Half-width of the band around the midline left out (the spine and sacrum), mm.
MIDLINE_MM = 40.0
#: Craniocaudal extent of bilateral pelvic bone the field of view must hold, mm.
PELVIS_MIN_SLICES_MM = 30.0
#: Smallest bladder taken as found, cc.
BLADDER_MIN_CC = 10.0
#: Smallest CTVp (uterus + cervix + upper vagina) taken as uterus-like, cc.
CTVP_MIN_CC = 20.0
#: Largest CTVp uncertainty (mean binary entropy, bits; see ``pipeline``) taken as uterus-like.
CTVP_MAX_UNCERTAINTY = 0.30
#: Smallest Parametrium taken as beside a uterus, cc.
PARAMETRIUM_MIN_CC = 40.0


def pelvic_bone_extent_mm(image) -> float:
    """Craniocaudal extent (mm) of the slices with bilateral pelvic bone (see the module docstring)."""
    from cervicontour.volume import lps_axes

    order, flips = lps_axes(image.direction)
    array = np.transpose(np.asarray(image.array), order)
    spacing = [image.spacing_mm[a] for a in order]
    bone = array > BONE_HU
    x_mm = (np.arange(array.shape[0]) - (array.shape[0] - 1) / 2) * spacing[0]
    body_columns = (array > -500).any(axis=(1, 2))
    centre = float(np.mean(x_mm[body_columns])) if body_columns.any() else 0.0
    right, left = x_mm < centre - MIDLINE_MM, x_mm > centre + MIDLINE_MM
    pixel_cm2 = spacing[0] * spacing[1] / 100.0
    per_slice_right = bone[right].sum(axis=(0, 1)) * pixel_cm2
    per_slice_left = bone[left].sum(axis=(0, 1)) * pixel_cm2
    both = (per_slice_right >= BONE_MIN_CM2) & (per_slice_left >= BONE_MIN_CM2)
    return float(np.count_nonzero(both) * spacing[2])


def out_of_scope(image, masks, *, forced=(), structures=None) -> list[str]:
    """Reasons this case is outside what the model was made for (``[]`` when none was seen).

    Args:
        image: the CT (HU) the masks were predicted on.
        masks: structure name → binary mask Volume on ``image``'s grid (the model's drafts).
        forced: the input-gate problems ``--force`` let through (:func:`cervicontour.io.gate.require_ct`).
        structures: the per-structure record of the prediction (``uncertainty``), when known.

    Returns:
        one sentence per reason, e.g. ``"no pelvis in the field of view: ..."``.
    """
    reasons = [f"input gate overridden with --force: {p}" for p in forced]
    extent = pelvic_bone_extent_mm(image)
    cc = {name: float(np.count_nonzero(m.array)) * m.voxel_volume_cc for name, m in masks.items()}
    if extent < PELVIS_MIN_SLICES_MM:
        reasons.append(f"no pelvis in the field of view: bilateral pelvic bone over {extent:.0f} mm of slices, "
                       f"expected at least {PELVIS_MIN_SLICES_MM:.0f} mm (iliac wings, acetabula, femoral heads)")
    elif "Bladder" in cc and cc["Bladder"] < BLADDER_MIN_CC:
        reasons.append(f"no bladder found ({cc['Bladder']:.0f} cc, expected at least {BLADDER_MIN_CC:.0f} cc): the field of view may miss the pelvis")
    if "CTVp" in cc and extent >= PELVIS_MIN_SLICES_MM:
        uncertainty = float((structures or {}).get("CTVp", {}).get("uncertainty", 0.0))
        seen = []
        if cc["CTVp"] < CTVP_MIN_CC:
            seen.append(f"CTVp {cc['CTVp']:.1f} cc, expected at least {CTVP_MIN_CC:.0f} cc")
        if uncertainty > CTVP_MAX_UNCERTAINTY:
            seen.append(f"CTVp uncertainty {uncertainty:.2f}, expected at most {CTVP_MAX_UNCERTAINTY:.2f}")
        if "Parametrium" in cc and cc["Parametrium"] < PARAMETRIUM_MIN_CC:
            seen.append(f"Parametrium {cc['Parametrium']:.1f} cc, expected at least {PARAMETRIUM_MIN_CC:.0f} cc")
        if seen:
            reasons.append(f"no uterus-like CTVp ({'; '.join(seen)}): anatomy the model was not made for "
                           "(a male pelvis, or after hysterectomy)")
    return reasons
