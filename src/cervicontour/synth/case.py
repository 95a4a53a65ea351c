"""Assemble one phantom patient: scanner grid, anatomy label map, targets, CT image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cervicontour.synth import anatomy as A
from cervicontour.synth.appearance import finish, random_field, tissue_hu
from cervicontour.boxes import box_slices
from cervicontour.synth.raster import Grid, paint, rotation
from cervicontour.synth.style import Style
from cervicontour.synth.targets import nodal_ctv, parametrium, split_vagina
from cervicontour.volume import Volume

BONES = ("Femur_Other", "Femur_Head_L", "Femur_Head_R", "Bone_Pelvic", "Sacrum", "VB_L5", "VB_L4")
MUSCLES = ("Musc_Other", "Musc_Gluteus_L", "Musc_Gluteus_R", "Musc_Iliopsoas_L", "Musc_Iliopsoas_R")
BOWEL = ("Bowel_Small", "Colon_Sigmoid")
ARTERIES = ("A_Aorta",) + tuple(f"A_Iliac_{k}_{s}" for k in ("Cm", "Ext", "Int") for s in "LR")
VEINS = ("V_Venacava_I",) + tuple(f"V_Iliac_{k}_{s}" for k in ("Cm", "Ext", "Int") for s in "LR")
# Painter's order: later entries overwrite earlier ones in the anatomy label map.
PAINT_ORDER = (
    "Fat", *MUSCLES, *BOWEL, "Uterus", "Cervix", "Vagina", "Vagina_Lower", "Bladder", "Anorectum",
    *ARTERIES, *VEINS, "Fat_Perirenal", "Kidney_L", "Kidney_R", *BONES,
)
INTERNAL = {"Fat", "Fat_Perirenal", "Musc_Other", "Femur_Other", "Vagina_Lower"}  # painted, not written


@dataclass
class SynthCase:
    image: Volume
    structures: dict[str, Volume]
    patient: A.Patient


def make_grid(p: A.Patient, rng: np.random.Generator, size: str, edge: set[str], *,
              slice_thickness_mm: float | None = None) -> Grid:
    """Scanner grid (LPS, axial) and its map to the anatomy frame, per the patient's pose.

    ``slice_thickness_mm`` (None: drawn per patient) fixes the slice spacing; the spacing is still
    drawn, and the slice-count limits scale by drawn/fixed spacing, so the scan covers the same
    z-range in mm it would have covered (2.5 mm instead of 5.0 mm: about twice the slices).
    """
    s = p.scale
    if size == "full":
        n_xy = 512
        sp = round(float(rng.uniform(0.9, 1.4)), 4)
        drawn_dz = float(rng.choice([2.0, 2.5, 3.0]))
        bottom = float(rng.uniform(-170, -130))
        coverage_mm = rng.uniform(380, 470)
        min_z, lo_z, hi_z, max_z = 40, 150, 220, 300
    else:
        n_xy = 128
        sp = round(float(rng.uniform(3.2, 4.2)), 4)
        drawn_dz = round(float(rng.uniform(4.5, 6.0)), 2)
        bottom = float(rng.uniform(-100, -85))
        coverage_mm = rng.uniform(270, 320)
        min_z, lo_z, hi_z, max_z = 40, 40, 52, 64
    dz = drawn_dz if slice_thickness_mm is None else float(slice_thickness_mm)
    if dz != drawn_dz:  # slice-count limits in the fixed spacing's slices: the same mm
        min_z, lo_z, hi_z, max_z = (round(n * drawn_dz / dz) for n in (min_z, lo_z, hi_z, max_z))
    n_z = int(np.clip(round(coverage_mm / dz), lo_z, hi_z))
    if "only scanned bottom of kidneys" in edge:
        top = 250.0 * s
        n_z = int(np.clip(np.ceil((top - bottom) / dz) + 1, min_z, max_z))
        if slice_thickness_mm is None:  # a drawn spacing may widen to reach the kidneys
            dz = max(dz, round((top - bottom) / (n_z - 1), 2))
        bottom = top - (n_z - 1) * dz
    if "extra slices" in edge:
        extra = int(rng.integers(35, 60)) if size == "full" else 12
        extra = round(extra * drawn_dz / dz) if slice_thickness_mm is not None else extra
        n_z += extra
        bottom -= extra * dz
    pose = rotation(rx_deg=p.pitch_deg, rz_deg=p.yaw_deg)
    stretch = np.diag([1.0, 1.0, p.scale_z])
    table_z = float(rng.uniform(-700, -300))
    t = np.array([p.shift_mm[0], p.shift_mm[1], table_z])
    spacing = (sp, sp, dz)
    origin = (-(n_xy - 1) / 2 * sp, -(n_xy - 1) / 2 * sp, table_z + bottom * p.scale_z)
    index_to_world = np.eye(4)
    index_to_world[:3, :3] = np.diag(spacing)
    index_to_world[:3, 3] = origin
    world_to_anatomy = np.eye(4)
    inv = np.linalg.inv(pose @ stretch)
    world_to_anatomy[:3, :3] = inv
    world_to_anatomy[:3, 3] = -inv @ t
    template = Volume(np.zeros((1, 1, 1), np.uint8), spacing, origin)
    return Grid((n_xy, n_xy, n_z), world_to_anatomy @ index_to_world, template)


def synthesize_case(rng: np.random.Generator, *, size: str, edge: set[str], labelled: bool = True, phantom: int = 1,
                    style: Style = Style()) -> SynthCase:
    """One patient: CT (int16 HU) and binary masks (bool arrays on the same grid); ``phantom``: see
    :data:`cervicontour.synth.anatomy.PHANTOMS`; ``style``: the hospital's conventions
    (:class:`~cervicontour.synth.style.Style`; the default draws exactly what it drew before styles)."""
    p = A.draw_patient(rng, edge=edge, bladder_filling=style.bladder_filling)
    grid = make_grid(p, rng, size, edge, slice_thickness_mm=style.slice_thickness_mm)
    spacing = grid.template.spacing_mm
    body = paint(grid, A.Body(p.scale, p.fat_mm))
    inner = paint(grid, A.Body(p.scale, p.fat_mm, inset_mm=p.fat_mm)) & body
    wall_inner = paint(grid, A.Body(p.scale, p.fat_mm, inset_mm=p.fat_mm + 12)) & body
    cavity = paint(grid, *A.pelvic_cavity(p)) & wall_inner

    shapes: dict[str, list] = {**A.muscles(p), **A.pelvic_organs(p), **A.vessels(p, phantom), **A.kidneys(p),
                               **A.bones(p), "Bowel_Small": A.small_bowel(p)}
    shapes["Fat_Perirenal"] = [
        A.Ellipsoid(e.center, tuple(r + 12 for r in e.radii), e.rot) for k in ("Kidney_L", "Kidney_R")
        for e in shapes.get(k, [])
    ]
    label = np.zeros(grid.shape, np.uint8)
    label[body] = PAINT_ORDER.index("Fat") + 1
    label[inner & ~cavity] = PAINT_ORDER.index("Musc_Other") + 1
    for idx, name in enumerate(PAINT_ORDER, start=1):
        if name in ("Fat", "Musc_Other") or not shapes.get(name):
            continue
        m = paint(grid, *shapes[name]) & body
        if name in BOWEL:
            m &= cavity
        elif name.startswith("Musc_"):
            m &= inner
        label[m] = idx
    masks = _split_labels(label)
    if style.vagina_length_fraction is not None:  # relabels only: the CT sees one vagina either way
        masks["Vagina"], masks["Vagina_Lower"] = split_vagina(
            grid, masks["Vagina"] | masks["Vagina_Lower"], A.vagina_centre_line(p), style.vagina_length_fraction)
    bone = np.isin(label, [PAINT_ORDER.index(b) + 1 for b in BONES])
    muscle = np.isin(label, [PAINT_ORDER.index(m) + 1 for m in MUSCLES])
    bowel = masks["Bowel_Small"] | masks["Colon_Sigmoid"]
    vessel = np.isin(label, [PAINT_ORDER.index(v) + 1 for v in ARTERIES + VEINS])
    soft_exclusions = bone | muscle | bowel | vessel | masks["Bladder"] | masks["Anorectum"] | ~body

    # --- targets
    tumour = A.gtvp(p)
    gtvp = paint(grid, tumour) & ~soft_exclusions if tumour is not None else np.zeros(grid.shape, bool)
    ctvp = masks["Cervix"] | gtvp | masks["Uterus"] | masks["Vagina"]
    kidney = masks["Kidney_L"] | masks["Kidney_R"]
    node = A.gtvn(p)
    nodal = nodal_ctv(
        grid, spacing, masks, bone | muscle | bowel | kidney | ctvp | masks["Anorectum"] | ~body,
        para_aortic=p.para_aortic, pelvic_floor_z_mm=15 * p.scale, para_aortic_top_z_mm=235 * p.scale,
        gtvn=paint(grid, node) if node is not None else None, margin_mm=style.ctvn_margin_mm,
    )
    ctvn = np.zeros(grid.shape, bool)
    for part in nodal.values():
        ctvn |= part
    param = parametrium(
        grid, masks["Cervix"] | gtvp, masks["Vagina"],
        bone | muscle | bowel | masks["Bladder"] | masks["Anorectum"] | ctvp | ~body,
        side_wall_mm=(44 if p.small_parametrium else 60) * p.scale * style.parametrium_extent,
    )

    image = _ct_image(grid, p, rng, label, masks, gtvp, body, cavity, style)
    structures: dict[str, Volume] = {}
    if labelled:
        out = {"Bladder": masks["Bladder"], "Anorectum": masks["Anorectum"], "CTVn": ctvn, "CTVp": ctvp,
               "Parametrium": param, "Cervix": masks["Cervix"], "Uterus": masks["Uterus"],
               "Vagina": masks["Vagina"], "External": body, **nodal}
        if gtvp.any():
            out["GTVp"] = gtvp
        for name in PAINT_ORDER:
            if name not in INTERNAL and name not in out and name in masks:
                out[name] = masks[name]
        structures = {n: image.with_array(m) for n, m in out.items() if m.any()}  # bool; written as uint8
    return SynthCase(image, structures, p)


def _ct_image(grid, p, rng, label, masks, gtvp, body, cavity, style) -> Volume:
    hu_of = tissue_hu(p.contrast, rng)
    lut = np.full(len(PAINT_ORDER) + 1, hu_of["air"], np.float32)
    by_tissue = {"Fat": "fat", "Fat_Perirenal": "fat", "Uterus": "uterus", "Cervix": "cervix", "Vagina": "vagina",
                 "Vagina_Lower": "vagina", "Bladder": "urine", "Anorectum": "bowel_wall", "Kidney_L": "kidney",
                 "Kidney_R": "kidney"}
    for idx, name in enumerate(PAINT_ORDER, start=1):
        tissue = by_tissue.get(name) or ("muscle" if name.startswith("Musc") else "cortical" if name in BONES
                                         else "artery" if name in ARTERIES else "vein" if name in VEINS
                                         else "bowel_wall" if name in BOWEL else "fat")
        lut[idx] = hu_of[tissue]
    hu = lut[label]
    # Deep (pelvic and abdominal) fat is not the clean -100 HU of subcutaneous fat: fascia, small
    # vessels, nodes and collapsed bowel raise its mean, and in lean patients the organs abut soft
    # tissue; real pelvic CT shows -100 to -30 HU around the bladder. Per patient: a mean offset, and
    # a smooth soft-tissue texture (a few cm) everywhere in the body but bone and air.
    deep_fat = cavity & (label == PAINT_ORDER.index("Fat") + 1)
    hu[deep_fat] += np.float32(rng.uniform(0.0, 60.0))
    sigma_vox = tuple(25.0 / s for s in grid.template.spacing_mm)
    soft_tissue = body & ~np.isin(label, [PAINT_ORDER.index(b) + 1 for b in BONES])
    hu[soft_tissue] += (random_field(grid.shape, sigma_vox, rng) * np.float32(rng.uniform(0.0, 15.0)))[soft_tissue]
    marrow = paint(grid, *[s for v in A.bones(p, inset_mm=2.5).values() for s in v])
    hu[marrow & np.isin(label, [PAINT_ORDER.index(b) + 1 for b in BONES])] = hu_of["marrow"]
    hu[gtvp] = hu_of["gtv"]
    _hollow(hu, masks["Bladder"], grid, hu_of["contrast_urine" if p.bladder_contrast else "urine"], wall_hu=hu_of["muscle"])
    for name, content in (("Anorectum", "stool"), ("Bowel_Small", "bowel_content"), ("Colon_Sigmoid", "stool")):
        _bowel_content(hu, masks[name], grid, rng, hu_of[content], hu_of["gas"])
    t = grid.template
    pixels = finish(hu, t.spacing_mm, rng, noise_hu=style.noise_hu, hu_offset=style.hu_offset)
    return Volume(pixels, t.spacing_mm, t.origin_mm, t.direction)


def _split_labels(label: np.ndarray) -> dict[str, np.ndarray]:
    """Label map → one boolean mask per painted name, each computed in its bounding box only."""
    from scipy import ndimage

    boxes = ndimage.find_objects(label, max_label=len(PAINT_ORDER))
    masks = {}
    for idx, name in enumerate(PAINT_ORDER, start=1):
        mask = np.zeros(label.shape, bool)
        box = boxes[idx - 1]
        if box is not None:
            mask[box] = label[box] == idx
        masks[name] = mask
    return masks


def _hollow(hu, mask, grid, lumen_hu, *, wall_hu):
    """Organ wall (~3 mm) around a fluid lumen."""
    from scipy import ndimage

    box = box_slices(mask)
    if box is None:
        return
    inner = ndimage.distance_transform_edt(mask[box], sampling=grid.template.spacing_mm) > 3.0
    sub = hu[box]
    sub[mask[box]] = wall_hu
    sub[inner] = lumen_hu


def _bowel_content(hu, mask, grid, rng, content_hu, gas_hu):
    """Lumen with gas pockets (non-dependent, i.e. anterior in supine) and mottled content."""
    from scipy import ndimage

    box = box_slices(mask)
    if box is None:
        return
    lumen = ndimage.distance_transform_edt(mask[box], sampling=grid.template.spacing_mm) > 2.5
    sigma = tuple(max(4.0 / s, 0.7) for s in grid.template.spacing_mm)
    field = random_field(lumen.shape, sigma, rng)
    y = grid.coords(box)[1]
    gas = lumen & (field - 0.02 * (y - y[lumen].mean() if lumen.any() else 0) > 0.6)
    sub = hu[box]
    sub[lumen] = content_hu + 25 * field[lumen]
    sub[gas] = gas_hu
