"""The phantom's female-pelvis anatomy, drawn per patient from a seeded random generator.

Anatomy frame (mm): x → patient left, y → posterior, z → superior (LPS axes), origin midway
between the femoral-head centres. Typical adult female positions (supine CT): pubic symphysis
~70 mm anterior and ~30 mm below the origin, sacral promontory ~100 mm above it, aortic
bifurcation at L4 (~150 mm), kidneys' lower poles ~220 mm. Each patient gets a global pose and
size, and organ-level variation (bladder filling, uterus size/tilt, tumour, fat, vessels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cervicontour.synth.raster import Box, Ellipsoid, Shape, Tube, rotation, smooth_path


@dataclass(frozen=True)
class Body(Shape):
    """Body outline: a superellipse whose size changes with z; two thighs below the perineum."""

    scale: float
    fat_mm: float
    inset_mm: float = 0.0

    def bounds(self):
        s = self.scale
        return np.array([-230 * s, -170 * s, -400.0]), np.array([230 * s, 170 * s, 600.0])

    def inside(self, x, y, z):
        s = self.scale
        zc = np.clip(z, -300, 400)
        hip = np.exp(-(((zc - 10) / 90) ** 2))  # widest at the hips
        a = s * (150 + 40 * hip) + self.fat_mm - 25 - self.inset_mm
        b = s * (105 + 15 * hip) + 0.6 * (self.fat_mm - 25) - self.inset_mm
        yc = 10 * hip
        trunk = (np.abs(x / a) ** 2.4 + np.abs((y - yc) / b) ** 2.4) <= 1.0
        trunk &= z >= -70
        thigh_r = s * 75 + 0.5 * self.fat_mm - self.inset_mm
        thighs = ((np.abs(x) - 88 * s) ** 2 + (y - 15) ** 2) <= thigh_r**2
        thighs &= z < -40
        return trunk | thighs


@dataclass(frozen=True)
class IliacWing(Shape):
    """Curved bony plate of one ilium: an elliptic arc in axial planes sweeping up from the acetabulum."""

    side: int  # +1 patient left, -1 right
    scale: float
    thickness_mm: float = 9.0

    def bounds(self):
        s = self.scale
        x = np.array([10, 150]) * s * self.side
        return np.array([x.min(), -60 * s, 5.0]), np.array([x.max(), 90 * s, 125 * s])

    def inside(self, x, y, z):
        s = self.scale
        t = np.clip((z / s - 10) / 110, 0, 1)  # 0 at the acetabulum roof, 1 at the iliac crest
        a = s * (70 + 55 * np.sqrt(t))  # lateral reach grows towards the crest
        b = s * (55 + 10 * t)
        cy = s * (30 - 5 * t)
        u = (self.side * x) / a
        v = (y - cy) / b
        r = np.sqrt(u**2 + v**2)
        ang = np.arctan2(v, u)  # 0 lateral, +pi/2 posterior
        arc = (ang > -0.55 - 0.35 * t) & (ang < 1.9)
        shell = np.abs(r - 1.0) * a < self.thickness_mm / 2
        return shell & arc & (z > 10 * s) & (z < 120 * s) & (self.side * x > 25 * s)


@dataclass
class Patient:
    """Everything random about one phantom patient."""

    scale: float
    scale_z: float
    yaw_deg: float
    pitch_deg: float
    shift_mm: np.ndarray
    fat_mm: float
    bladder_radii: tuple[float, float, float]
    bladder_contrast: bool
    contrast: bool
    uterus_radii: tuple[float, float, float]
    uterus_tilt_deg: float
    uterus_low: bool
    gtvp_radius_mm: float | None
    gtvn: bool
    para_aortic: bool
    small_parametrium: bool
    kidneys: tuple[bool, bool]
    bowel_seed: int
    vessel_jitter: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((8, 3)))


def draw_patient(rng: np.random.Generator, *, edge: set[str], bladder_filling: float = 1.0) -> Patient:
    """Sample a patient; ``edge`` names the hospital edge cases this patient shows.

    ``bladder_filling`` scales the drawn bladder volume (each radius by its cube root); the random
    draws are the same whatever its value.
    """
    # Bladder filling, ~23-600 cc: planning CTs for cervical cancer follow a full-bladder protocol,
    # and real planning bladders reach 500-600 cc (the real TotalSegmentator example's is 479 cc;
    # with the earlier 23-345 cc range the model halved every bladder above ~500 cc).
    fill = rng.uniform(0.55, 1.5)
    k = bladder_filling ** (1.0 / 3.0)  # exactly 1.0 by default
    contrast = not any(e.startswith("no contrast") for e in edge)
    return Patient(
        scale=rng.uniform(0.9, 1.1),
        scale_z=rng.uniform(0.93, 1.07),
        yaw_deg=rng.uniform(-4, 4),
        pitch_deg=rng.uniform(-3, 3),
        shift_mm=rng.uniform([-15, -15, -10], [15, 15, 10]),
        fat_mm=rng.uniform(12, 45),
        bladder_radii=(42 * fill * k, 32 * fill * k, 30 * fill ** 1.2 * k),
        bladder_contrast=bool(rng.random() < 0.15) and contrast,
        contrast=contrast,
        uterus_radii=(rng.uniform(24, 32), rng.uniform(17, 23), rng.uniform(32, 42)),
        uterus_tilt_deg=rng.uniform(-65, -35),
        uterus_low="small parametrium and low uterus" in edge,
        gtvp_radius_mm=None if "no GTVp" in edge else rng.uniform(10, 24),
        gtvn=bool(rng.random() < 0.35),
        para_aortic=bool(rng.random() < 0.45),
        small_parametrium="small parametrium and low uterus" in edge,
        kidneys=("missing left kidney" not in edge, True),
        bowel_seed=int(rng.integers(0, 2**31)),
        vessel_jitter=rng.normal(0, 4.0, size=(8, 3)),
    )


def _tube(points, radius, *, ry=None, samples=6) -> Tube:
    pts = np.asarray(points, float)
    rx = np.broadcast_to(np.asarray(radius, float), (len(pts),))
    ryy = rx if ry is None else np.broadcast_to(np.asarray(ry, float), (len(pts),))
    return Tube(smooth_path(np.column_stack([pts, rx, ryy]), samples))


#: Iliopsoas centre line (x for the left side, y, z in mm before ``scale``) and radii; shared by
#: :func:`muscles` and the phantom-2 vessel course along its surface.
PSOAS_AXIS = np.array([[30, 20, 240], [40, 10, 160], [55, 5, 105], [80, -15, 45], [88, -30, 0], [80, -20, -50]], float)
PSOAS_RADIUS_MM = np.array([10, 16, 20, 22, 18, 12], float)
#: Phantom versions: what changed, so a cohort's seed and version say exactly what it holds.
PHANTOMS = {
    1: "iliac vessels run through the iliopsoas (71 % of each external iliac artery's volume inside it); "
       "the shipped model 0.2 was trained on it",
    2: "external and common iliac arteries on the psoas' antero-medial surface, veins postero-medial to them, "
       "as in the pelvis (the nodal CTV is cut by the muscle on one side, not around a vessel buried in it)",
}
VESSEL_GAP_MM = 2.0
#: What ``synth`` draws unless told: the version the shipped default model was trained on.
DEFAULT_PHANTOM = 2


def beside_psoas(side: int, z_mm: float, vessel_radius_mm: float, toward: tuple[float, float]) -> np.ndarray:
    """A vessel centre just outside the psoas at height ``z_mm`` (before ``scale``).

    ``toward`` is the unit direction from the psoas centre, as (medial, anterior) components;
    the centre lies ``psoas radius + vessel radius + VESSEL_GAP_MM`` away. The psoas centre and
    radius are interpolated linearly in z between the control points (the painted tube is a
    smooth curve through them; the gap absorbs the difference).
    """
    z = PSOAS_AXIS[::-1, 2]
    cx = np.interp(z_mm, z, PSOAS_AXIS[::-1, 0])
    cy = np.interp(z_mm, z, PSOAS_AXIS[::-1, 1])
    r = np.interp(z_mm, z, PSOAS_RADIUS_MM[::-1])
    d = r + vessel_radius_mm + VESSEL_GAP_MM
    return np.array([side * (cx - toward[0] * d), cy - toward[1] * d, z_mm])


def vessels(p: Patient, phantom: int = 1) -> dict[str, list[Shape]]:
    """Aorta/IVC bifurcating into common, external and internal iliac arteries and veins.

    ``phantom`` 1: the original course (through the iliopsoas); 2: along its surface (see
    :data:`PHANTOMS`). Both draw nothing random here, so a seed's other anatomy is unchanged.
    """
    if phantom not in PHANTOMS:
        raise ValueError(f"phantom must be one of {sorted(PHANTOMS)}, got {phantom!r}")
    s, j = p.scale, p.vessel_jitter
    bif_a = np.array([8, -18, 150]) * s + j[0]  # aortic bifurcation (L4)
    bif_v = np.array([-14, -8, 132]) * s + j[1]  # IVC confluence (L5)
    out: dict[str, list[Shape]] = {
        "A_Aorta": [_tube([[14 * s, -20 * s, 330], [12 * s, -20 * s, 240], bif_a + [0, 0, 8]], 10.5 * s)],
        "V_Venacava_I": [_tube([[-24 * s, -12 * s, 330], [-22 * s, -10 * s, 230], bif_v + [0, 0, 8]], 11 * s, ry=8.5 * s)],
    }
    for side, tag in ((1, "L"), (-1, "R")):
        jj = j[2:5] if side > 0 else j[5:8]
        if phantom == 1:
            split_a = np.array([52 * side, 8, 95]) * s + jj[0]  # common iliac → ext/int
            ext_a = [split_a, np.array([72 * side, -18, 50]) * s + jj[1], np.array([82 * side, -48, 8]) * s,
                     np.array([86 * side, -62, -25]) * s]
            mid_a = (bif_a + split_a) / 2 + [6 * side, 2, 0]
        else:  # on the psoas: antero-medial at the brim, turning anterior towards the inguinal ligament
            split_a = beside_psoas(side, 95, 5.5, (0.8, 0.6)) * s + jj[0]
            ext_a = [split_a, beside_psoas(side, 50, 4.5, (0.8, 0.6)) * s + jj[1],
                     beside_psoas(side, 8, 4.5, (0.5, 0.87)) * s, np.array([86 * side, -62, -25]) * s]
            mid_a = (bif_a + split_a) / 2
            mid_a[:2] = beside_psoas(side, mid_a[2] / s, 5.5, (0.85, 0.53))[:2] * s + jj[0][:2] * 0.5
        int_mid = np.array([56 * side, 35, 62]) if phantom == 1 else np.array([46 * side, 30, 66])  # 2: medial of the psoas
        int_a = [split_a, int_mid * s + jj[2], np.array([52 * side, 48, 30]) * s]
        out[f"A_Iliac_Cm_{tag}"] = [_tube([bif_a, mid_a, split_a], 5.5 * s)]
        out[f"A_Iliac_Ext_{tag}"] = [_tube(ext_a, 4.5 * s)]
        out[f"A_Iliac_Int_{tag}"] = [_tube(int_a, 3.5 * s)]
        off = np.array([-7 * side, 9, -2]) * s  # veins run postero-medial to the arteries
        split_v = split_a + off + [0, 4, -8]
        out[f"V_Iliac_Cm_{tag}"] = [_tube([bif_v, (bif_v + split_v) / 2, split_v], 6.5 * s)]
        out[f"V_Iliac_Ext_{tag}"] = [_tube([split_v] + [q + off for q in ext_a[1:]], 5.5 * s)]
        out[f"V_Iliac_Int_{tag}"] = [_tube([split_v] + [q + off for q in int_a[1:]], 4.5 * s)]
    return out


def bones(p: Patient, inset_mm: float = 0.0) -> dict[str, list[Shape]]:
    """Labelled bones (``inset_mm`` > 0 gives the marrow inside the cortex)."""
    s, d = p.scale, inset_mm
    out: dict[str, list[Shape]] = {"Bone_Pelvic": [], "Sacrum": [], "VB_L4": [], "VB_L5": [], "Femur_Other": []}
    for side, tag in ((1, "L"), (-1, "R")):
        head = np.array([88 * side * s, 0, 0])
        out[f"Femur_Head_{tag}"] = [
            Ellipsoid(tuple(head), (23 * s - d,) * 3),
            _tube([head, head + [22 * side * s, 8 * s, -28 * s]], 14 * s - d),  # neck
        ]
        troch = head + np.array([38 * side, 10, -35]) * s
        out["Femur_Other"] += [Ellipsoid(tuple(troch), (16 * s - d, 18 * s - d, 22 * s - d)),
                               _tube([troch, troch + [-8 * side * s, -10 * s, -260 * s]], 14 * s - d)]
        out["Bone_Pelvic"] += [
            IliacWing(side, s, thickness_mm=max(9.0 - 2 * d, 2.0)),
            Ellipsoid(tuple(head + np.array([-14 * side, 4, 10]) * s), (22 * s - d, 30 * s - d, 32 * s - d)),  # acetabulum
            _tube([head + np.array([-16 * side, -10, -8]) * s, [18 * side * s, -66 * s, -32 * s]], 9 * s - d),  # sup. pubic ramus
            _tube([head + np.array([-20 * side, 18, -20]) * s, [55 * side * s, 22 * s, -58 * s],
                   [22 * side * s, -55 * s, -52 * s]], 10 * s - d),  # ischium + inferior ramus
            _tube([[8 * side * s, -68 * s, -22 * s], [7 * side * s, -64 * s, -50 * s]], 9 * s - d),  # symphysis body
        ]
    sacrum = [[0, 58, 105], [0, 66, 75], [0, 80, 40], [0, 92, 5], [0, 90, -20]]
    out["Sacrum"] = [_tube(np.asarray(sacrum) * s, np.array([52, 46, 36, 22, 10]) * s - d,
                           ry=np.array([20, 17, 14, 10, 7]) * s - d)]
    for name, zc in (("VB_L5", 128), ("VB_L4", 163)):
        body = [0, 28 * s - 5, zc * s]
        out[name] = [
            Ellipsoid(tuple(body), (25 * s - d, 19 * s - d, 13 * s - d)),
            _tube([[0, 52 * s, zc * s], [0, 82 * s, zc * s - 10]], 6 * s - d, ry=9 * s - d),  # spinous process
            _tube([[-26 * s, 48 * s, zc * s], [26 * s, 48 * s, zc * s]], 5 * s - d),  # laminae / transverse
        ]
    return out


def muscles(p: Patient) -> dict[str, list[Shape]]:
    s = p.scale
    out: dict[str, list[Shape]] = {}
    for side, tag in ((1, "L"), (-1, "R")):
        out[f"Musc_Iliopsoas_{tag}"] = [_tube(PSOAS_AXIS * [side, 1, 1] * s, PSOAS_RADIUS_MM * s)]
        out[f"Musc_Gluteus_{tag}"] = [Ellipsoid((95 * side * s, 95 * s, 10 * s), (55 * s, 32 * s, 80 * s),
                                                rotation(rz_deg=-25 * side))]
    return out


def pelvic_organs(p: Patient) -> dict[str, list[Shape]]:
    """Bladder, anorectum, sigmoid, uterus, cervix and vagina (upper part labelled separately)."""
    s = p.scale
    low = -18.0 if p.uterus_low else 0.0
    bx, by, bz = p.bladder_radii
    bladder_c = np.array([0, -42 * s + 0.25 * (by - 32), -18 * s + 0.8 * bz])
    cervix_top = np.array([0, 8 * s, 28 * s + low])
    cervix_bot = _cervix_bottom(p)
    uterus_c = cervix_top + np.array([0, -22, 28]) * s
    vag = vagina_centre_line(p)
    rect = np.array([[0, 55, 65], [4, 70, 40], [0, 72, 10], [0, 62, -25], [0, 45, -55], [0, 35, -72]]) * s
    sig = np.array([[70, 10, 160], [60, 0, 120], [25, -10, 95], [-20, 10, 90], [-10, 45, 75], [0, 55, 65]]) * s
    return {
        "Bladder": [Ellipsoid(tuple(bladder_c), (bx * s, by * s, bz * s))],
        "Uterus": [Ellipsoid(tuple(uterus_c), tuple(r * s for r in p.uterus_radii), rotation(rx_deg=p.uterus_tilt_deg)),
                   _tube([cervix_top - [0, 0, 6 * s], uterus_c], 14 * s)],  # isthmus: body joins the cervix
        "Cervix": [_tube([cervix_top, (cervix_top + cervix_bot) / 2 + [0, 2, 0], cervix_bot], 15 * s, ry=14 * s)],
        "Vagina": [_tube(vag[:2], 16 * s, ry=7 * s)],
        "Vagina_Lower": [_tube(vag[1:], 12 * s, ry=6 * s)],
        "Anorectum": [_tube(rect, np.array([17, 21, 22, 18, 12, 9]) * s, ry=np.array([15, 17, 18, 15, 10, 8]) * s)],
        "Colon_Sigmoid": [_tube(sig, 14 * s)],
    }


def _cervix_bottom(p: Patient) -> np.ndarray:
    return np.array([0, 24 * p.scale, -2 * p.scale + (-18.0 if p.uterus_low else 0.0)])


def vagina_centre_line(p: Patient) -> list[np.ndarray]:
    """Vagina's centre line (anatomy mm): top (at the cervix), the end of the labelled upper
    vagina, and the introitus. Upper vagina: first segment; lower vagina: second."""
    s, cervix_bot = p.scale, _cervix_bottom(p)
    return [cervix_bot + [0, 6, 4], cervix_bot + np.array([0, 4, -22]) * s, np.array([0, 8, -58]) * s]


def small_bowel(p: Patient) -> list[Shape]:
    """Random loops filling the lower abdomen above the pelvic organs."""
    rng = np.random.default_rng(p.bowel_seed)
    s = p.scale
    loops = []
    for _ in range(9):
        start = rng.uniform([-90, -90, 95], [90, 10, 230]) * s
        pts = [start]
        for _ in range(5):
            step = rng.normal(0, 1, 3) * np.array([35, 22, 25]) * s
            pts.append(np.clip(pts[-1] + step, np.array([-110, -100, 80]) * s, np.array([110, 25, 260]) * s))
        loops.append(_tube(pts, rng.uniform(11, 15) * s))
    return loops


def kidneys(p: Patient) -> dict[str, list[Shape]]:
    s = p.scale
    out: dict[str, list[Shape]] = {}
    for present, side, tag in ((p.kidneys[0], 1, "L"), (p.kidneys[1], -1, "R")):
        if present:
            out[f"Kidney_{tag}"] = [Ellipsoid((78 * side * s, 55 * s, 285 * s), (28 * s, 24 * s, 55 * s),
                                              rotation(ry_deg=-12 * side, rz_deg=25 * side))]
    return out


def pelvic_cavity(p: Patient) -> list[Shape]:
    """Fat-filled space inside the bony pelvis and the abdomen (everything else deep is muscle)."""
    s = p.scale
    return [
        Ellipsoid((0, 0, 30 * s), (66 * s, 78 * s, 120 * s)),  # true + false pelvis
        Box((-125 * s, -125 * s, 95 * s), (125 * s, 30 * s, 600)),  # abdominal cavity, anterior to psoas
        Box((-60 * s, -125 * s, 60 * s), (60 * s, 20 * s, 600)),
    ]


def gtvp(p: Patient) -> Shape | None:
    if p.gtvp_radius_mm is None:
        return None
    s, r = p.scale, p.gtvp_radius_mm
    low = -18.0 if p.uterus_low else 0.0
    return Ellipsoid((2 * s, 16 * s, 14 * s + low), (r * 1.1, r * 0.85, r * 1.2))


def gtvn(p: Patient) -> Shape | None:
    if not p.gtvn:
        return None
    s = p.scale
    return Ellipsoid((64 * s, 2 * s, 52 * s), (9 * s, 8 * s, 11 * s))  # left external iliac node
