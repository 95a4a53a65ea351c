"""`synth --style`: a hospital's conventions change labels and scanner, never the patients.

Expected values come from the construction (same random draws, set algebra), from geometry by
hand (cylinder and ellipsoid volumes, a straight vagina's length) or, for the default phantom,
from a hash of the arrays drawn by the code before styles existed.
"""

import hashlib

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cervicontour.cli import app
from cervicontour.cohort import load_cohort
from cervicontour.errors import InputError
from cervicontour.synth import STYLE_FILE, Style, anatomy, edge_cases, load_style, synthesize_cohort
from cervicontour.synth.case import synthesize_case
from cervicontour.synth.raster import Grid
from cervicontour.synth.style import style_to_toml
from cervicontour.synth.targets import MARGIN_MM, nodal_ctv, split_vagina
from cervicontour.volume import Volume

#: sha256 of the arrays of `synthesize_cohort(patients=2, seed=11, size="small")` (see
#: _cohort_array_sha256), computed with the code at commit 3da303c, BEFORE styles were added:
#: an independent reference for "the default style draws the phantom bit for bit".
BEFORE_STYLES_SHA256 = "fad2739fc4441111ef568afdc10c0b7f04e9aa4fcd12d82aac4b064eacbfe935"


def _cohort_array_sha256(root) -> str:
    h = hashlib.sha256()
    for case in load_cohort(root).cases():
        image = case.load_image()
        h.update(case.patient_id.encode())
        h.update(np.ascontiguousarray(image.array).tobytes())
        h.update(repr((image.array.dtype.str, image.array.shape, tuple(float(v) for v in image.spacing_mm))).encode())
        for name in sorted(case.structure_names):
            h.update(name.encode())
            h.update(np.ascontiguousarray(case.load_structure(name).array.astype(np.uint8)).tobytes())
    return h.hexdigest()


def _tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _case(index, seed=11, **style):
    """Patient ``index`` of a small cohort, as synthesize_cohort draws it (phantom 2)."""
    rng = np.random.default_rng([seed, index])
    return synthesize_case(rng, size="small", edge=set(edge_cases(index, rng)), phantom=2, style=Style(**style))


@pytest.fixture(scope="module")
def default_cases():
    return {i: _case(i) for i in (0, 1, 2)}


# --------------------------------------------------------------------------- the default is today's phantom
def test_default_style_draws_the_phantom_drawn_before_styles(tmp_path):
    defaults = tmp_path / "defaults.toml"
    defaults.write_text("ctvn_margin_mm = 7.0\nnoise_hu = 12\nhu_offset = 0.0\nparametrium_extent = 1.0\n"
                        "bladder_filling = 1.0\n")
    plain = synthesize_cohort(tmp_path / "plain", patients=2, seed=11, size="small")
    styled = synthesize_cohort(tmp_path / "styled", patients=2, seed=11, size="small", style=Style())
    from_file = synthesize_cohort(tmp_path / "file", patients=2, seed=11, size="small", style=load_style(defaults))
    assert _tree_hashes(plain) == _tree_hashes(styled) == _tree_hashes(from_file)
    assert not (plain / STYLE_FILE).exists()  # a default cohort's files are exactly those of before
    assert _cohort_array_sha256(plain) == BEFORE_STYLES_SHA256
    assert Style().ctvn_margin_mm == MARGIN_MM  # the two names of the phantom's own margin agree


# --------------------------------------------------------------------------- the style file
def test_unknown_key_is_refused_naming_it_and_the_close_one(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("ctvn_margin = 10\n")
    with pytest.raises(InputError, match=r"unknown style key 'ctvn_margin' \(did you mean 'ctvn_margin_mm'\?\)"):
        load_style(path)


@pytest.mark.parametrize("text, message", [
    ("noise_hu = -1\n", r"'noise_hu': expected 0 to 200, got -1"),
    ("slice_thickness_mm = 0.2\n", r"'slice_thickness_mm': expected 1 to 10, got 0.2"),
    ("vagina_length_fraction = 1.5\n", r"'vagina_length_fraction': expected 0 to 1"),
    ("hu_offset = nan\n", r"'hu_offset': expected -200 to 200, got nan"),
    ('ctvn_margin_mm = "ten"\n', r"'ctvn_margin_mm': expected a number, got 'ten' \(str\)"),
    ("bladder_filling = true\n", r"'bladder_filling': expected a number, got True"),
    ("noise_hu = \n", r"cannot read the style file"),
])
def test_bad_values_say_what_was_expected(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_style(path)


def test_style_round_trips_through_its_toml(tmp_path):
    style = Style(ctvn_margin_mm=10, slice_thickness_mm=2.5, noise_hu=25, hu_offset=-30, vagina_length_fraction=0.5,
                  parametrium_extent=1.2, bladder_filling=1.5)
    path = tmp_path / "s.toml"
    path.write_text(style_to_toml(style))
    assert load_style(path) == style
    path.write_text(style_to_toml(Style()))  # unset keys are comments
    assert load_style(path) == Style()
    (tmp_path / "empty.toml").write_text("")
    assert load_style(tmp_path / "empty.toml") == Style()


# --------------------------------------------------------------------------- each convention
def test_hu_offset_moves_every_unclipped_voxel_by_exactly_the_offset(default_cases):
    base = default_cases[0]
    shifted = _case(0, hu_offset=30.0)
    a, b = base.image.array.astype(int), shifted.image.array.astype(int)
    unclipped = (a > -1024) & (a + 30 < 3071)  # neither clip bound bites after +30
    assert unclipped.mean() > 0.5
    assert np.all(b[unclipped] - a[unclipped] == 30)
    # where the default was clipped at -1024 its true HU is unknown (<= -1024): +30 is a bound
    assert np.all((b[~unclipped] >= -1024) & (b[~unclipped] <= a[~unclipped] + 30))
    body = base.structures["External"].array
    assert (b[body] - a[body]).mean() == pytest.approx(30.0, abs=0.01)
    for name, mask in base.structures.items():  # labels do not move
        assert np.array_equal(mask.array, shifted.structures[name].array), name


def test_fixed_slice_thickness_keeps_each_patients_z_coverage():
    """Seed 7: patient 0 (no edge case), 2 (scan stops at the kidneys' lower poles), 3 (extra slices).

    By hand: the default n_z = round(c / d) (c the drawn coverage, d the drawn spacing) and the
    fixed n_z = round(c / 2.5), each within half a slice of c, with the clip limits scaled by
    d / 2.5 (extra slices: round(12 d / 2.5)), so the coverages differ by at most d/2 + 2 * 1.25 mm.
    """
    for index in (0, 2, 3):
        base, fine = _case(index, seed=7), _case(index, seed=7, slice_thickness_mm=2.5)
        d, n = base.image.spacing_mm[2], base.image.shape[2]
        assert fine.image.spacing_mm[2] == 2.5
        assert fine.image.spacing_mm[:2] == base.image.spacing_mm[:2]
        covered, covered_fine = n * d, fine.image.shape[2] * 2.5
        if index == 2:  # the default may widen d to reach the kidneys within 64 slices; 2.5 mm may not
            assert abs(covered_fine - covered) <= 0.1 * covered
            # The scan still ends at the kidneys' lower poles. make_grid puts the first slice at
            # table + (top - (n - 1) dz) * scale_z in the world, so the last slice lies at
            # table + top * scale_z + (n - 1) dz (1 - scale_z): the two differ by that last term.
            top = lambda c: c.image.index_to_world(np.array([0, 0, c.image.shape[2] - 1]))[2]  # noqa: E731
            span = (fine.image.shape[2] - 1) * 2.5 - (n - 1) * d
            assert top(fine) - top(base) == pytest.approx(span * (1 - base.patient.scale_z), abs=1e-3)
        else:
            assert abs(covered_fine - covered) <= d / 2 + 2.5, (index, covered, covered_fine)
        if index == 0:  # same bottom slice, the same patient
            assert fine.image.origin_mm == pytest.approx(base.image.origin_mm)
        assert fine.patient.bladder_radii == base.patient.bladder_radii  # the same random patient


def test_wider_ctvn_margin_grows_the_ctvn_of_the_same_patient(default_cases):
    for index in (0, 1):
        base, wide = default_cases[index], _case(index, ctvn_margin_mm=10.0)
        seven, ten = base.structures["CTVn"].array, wide.structures["CTVn"].array
        assert ten.sum() > seven.sum()
        # Not exact by construction: voxels equidistant from two vessel groups may change group
        # when the box grows (then a z cut or the speck filter may drop them), so a handful of
        # the 7-mm CTVn's voxels may lie outside the 10-mm one; exact containment is tested on a
        # single vessel below.
        assert np.count_nonzero(seven & ~ten) <= 0.005 * seven.sum()
        assert np.array_equal(base.image.array, wide.image.array)  # the CT does not know the margin


def _grid(shape, spacing_mm=(1.0, 1.0, 1.0)) -> Grid:
    index_to_anatomy = np.diag([*spacing_mm, 1.0])
    return Grid(shape, index_to_anatomy, Volume(np.zeros((1, 1, 1), np.uint8), spacing_mm, (0.0, 0.0, 0.0)))


def test_nodal_ctv_of_a_straight_vessel_is_a_cylinder_of_radius_r_plus_margin():
    """A 5-mm vessel through every 1-mm slice, no exclusions: each slice of the CTVn holds the
    pixels within m of a vessel pixel (counted here by brute force), about π (5 + m)² of them
    (a little fewer: the vessel's pixel centres reach radius 5 only along the axes)."""
    grid = _grid((50, 50, 20))
    x, y, _ = np.meshgrid(np.arange(50), np.arange(50), np.arange(20), indexing="ij")
    vessel = (x - 25) ** 2 + (y - 25) ** 2 <= 25
    nothing = np.zeros(grid.shape, bool)
    out = {m: nodal_ctv(grid, (1.0, 1.0, 1.0), {"A_Iliac_Ext_L": vessel}, nothing, para_aortic=False,
                        pelvic_floor_z_mm=-1.0, para_aortic_top_z_mm=0.0, gtvn=None, margin_mm=m)["LN_Pelvic"]
           for m in (7.0, 10.0)}
    pixels = np.argwhere(np.ones((50, 50), bool))
    centres = np.argwhere(vessel[:, :, 0])
    nearest = np.sqrt(((pixels[:, None, :] - centres[None, :, :]) ** 2).sum(-1)).min(axis=1).reshape(50, 50)
    for m, ctv in out.items():
        assert np.array_equal(ctv, np.repeat((nearest <= m)[:, :, None], 20, axis=2))
        assert ctv.sum() / 20 == pytest.approx(np.pi * (5 + m) ** 2, rel=0.06)
    assert not (out[7.0] & ~out[10.0]).any()  # one vessel, one piece: nested exactly


def test_more_noise_raises_the_spread_inside_the_bladder_lumen(default_cases):
    """Inside the eroded bladder the CT is one HU value plus noise, so its standard deviation is
    noise_hu times the blur's discrete-kernel factor k (derived here from the kernel's weights)."""
    k = 1.0
    for s in (0.45, 0.45, 0.3):  # appearance.finish's sigmas (voxels) for the small grid
        j = np.arange(-int(4 * s + 0.5), int(4 * s + 0.5) + 1)
        w = np.exp(-(j**2) / (2 * s * s))
        w /= w.sum()
        k *= (w**2).sum() * 2 * np.sqrt(np.pi) * s  # white-noise variance kept / the continuous estimate
    k = np.sqrt(k)
    base, noisy = default_cases[2], _case(2, noise_hu=25.0)
    lumen = ndimage.binary_erosion(base.structures["Bladder"].array, iterations=2)
    assert lumen.sum() > 1000
    sd12, sd25 = base.image.array[lumen].std(), noisy.image.array[lumen].std()
    assert sd12 == pytest.approx(12 * k, rel=0.1)
    assert sd25 == pytest.approx(25 * k, rel=0.1)
    assert sd25 / sd12 == pytest.approx(25 / 12, rel=0.03)


def test_vagina_length_fraction_relabels_the_vagina_and_nothing_else(default_cases):
    base = default_cases[0]
    cases = {f: _case(0, vagina_length_fraction=f) for f in (0.0, 0.6, 1.0)}
    vagina = {f: c.structures["Vagina"].array if "Vagina" in c.structures else np.zeros(base.image.shape, bool)
              for f, c in cases.items()}
    assert not vagina[0.0].any()
    assert not (vagina[0.6] & ~vagina[1.0]).any() and vagina[1.0].sum() > vagina[0.6].sum()
    assert not (base.structures["Vagina"].array & ~vagina[1.0]).any()
    for f, case in cases.items():
        assert np.array_equal(case.image.array, base.image.array), f  # the CT sees one vagina
        s = case.structures
        expected = s["Cervix"].array | s["Uterus"].array | vagina[f] | (s["GTVp"].array if "GTVp" in s else False)
        assert np.array_equal(s["CTVp"].array, expected), f


def test_split_vagina_of_a_straight_60_mm_vagina():
    """Centre line from z = 60 (cervix) down to z = 0: fraction 0.25 keeps arc < 15 mm, i.e. z > 45."""
    grid = _grid((20, 20, 61))
    x, y, z = np.meshgrid(np.arange(20), np.arange(20), np.arange(61), indexing="ij")
    vagina = (x - 10) ** 2 + (y - 10) ** 2 <= 16
    line = [np.array([10.0, 10.0, 60.0]), np.array([10.0, 10.0, 30.0]), np.array([10.0, 10.0, 0.0])]
    upper, lower = split_vagina(grid, vagina, line, 0.25)
    assert np.array_equal(upper, vagina & (z > 45))
    assert np.array_equal(lower, vagina & (z <= 45))


def test_parametrium_extent_scales_the_lateral_reach(default_cases):
    base = default_cases[1].structures["Parametrium"].array
    narrow = _case(1, parametrium_extent=0.7).structures["Parametrium"].array
    wide = _case(1, parametrium_extent=1.3).structures["Parametrium"].array
    # a narrower ellipsoid lies inside a wider one; the exclusions are the same anatomy
    assert not (narrow & ~base).any() and not (base & ~wide).any()
    assert narrow.sum() < base.sum() < wide.sum()


def test_bladder_filling_scales_the_bladder_volume():
    """The drawn ellipsoid's volume 4/3 π abc s³ scales by exactly the filling; the random draws
    (everything else about the patient) do not move."""
    plain = anatomy.draw_patient(np.random.default_rng(4), edge=set())
    full = anatomy.draw_patient(np.random.default_rng(4), edge=set(), bladder_filling=1.5)
    assert np.prod(full.bladder_radii) / np.prod(plain.bladder_radii) == pytest.approx(1.5, rel=1e-12)
    assert (full.scale, full.fat_mm, full.uterus_radii, full.bowel_seed) == (
        plain.scale, plain.fat_mm, plain.uterus_radii, plain.bowel_seed)
    base, filled = _case(1), _case(1, bladder_filling=1.5)
    ratio = filled.structures["Bladder"].array.sum() / base.structures["Bladder"].array.sum()
    assert ratio == pytest.approx(1.5, rel=0.1)  # rasterised: the voxel count follows the ellipsoid


# --------------------------------------------------------------------------- cohort and CLI
def test_a_styled_cohort_records_its_style(tmp_path):
    style = Style(hu_offset=30.0, ctvn_margin_mm=9.0)
    out = synthesize_cohort(tmp_path / "c", patients=1, seed=3, style=style)
    assert load_style(out / STYLE_FILE) == style
    assert (out / STYLE_FILE).read_text().startswith(f"# resolved synth style, sha256 {style.sha256()}")


def test_cli_bad_style_exits_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("noise = 25\n")
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--patients", "1", "--style", str(bad)])
    assert result.exit_code == 2
    assert "'noise'" in result.output and "did you mean 'noise_hu'" in result.output
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--patients", "1", "--style",
                                      str(tmp_path / "absent.toml")])
    assert result.exit_code == 2 and "cannot read the style file" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_style_draws_and_records(tmp_path):
    good = tmp_path / "hospital.toml"
    good.write_text("slice_thickness_mm = 3.0\nhu_offset = 30\n")
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--patients", "1", "--seed", "5",
                                      "--style", str(good)])
    assert result.exit_code == 0, result.output
    assert load_style(tmp_path / "out" / STYLE_FILE) == Style(slice_thickness_mm=3.0, hu_offset=30.0)
    image = load_cohort(tmp_path / "out")["SYN001"].load_image()
    assert image.spacing_mm[2] == pytest.approx(3.0)
