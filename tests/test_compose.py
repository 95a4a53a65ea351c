"""CTV sub-structure composition: union of the chosen parts, a part the case lacks refused, the choice logged."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.contours.compose import compose_case, parse_parts, read_log, union
from cervicontour.structures import UnknownStructureError
from cervicontour.volume import Volume

SPACING = (1.5, 2.0, 3.0)
DIRECTION = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # RAS storage: composition is grid-agnostic


def _box(lo, hi, shape=(20, 20, 10)) -> Volume:
    array = np.zeros(shape, np.uint8)
    array[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return Volume(array, SPACING, (5.0, -3.0, 20.0), DIRECTION)


@pytest.fixture
def case(tmp_path):
    folder = tmp_path / "p01"
    write_nifti(_box((2, 2, 2), (8, 8, 6)), folder / "structures" / "sub" / "LN_Pelvic.nii.gz")  # 6·6·4 = 144
    write_nifti(_box((6, 6, 2), (10, 12, 6)), folder / "structures" / "sub" / "LN_CommonIliac.nii.gz")  # 4·6·4 = 96, 2·2·4 = 16 shared
    write_nifti(_box((12, 12, 1), (14, 14, 3)), folder / "structures" / "sub" / "Cervix.nii.gz")  # 8
    write_nifti(_box((0, 0, 0), (1, 1, 1)), folder / "structures" / "CTVn.nii.gz")  # the model's CTVn, 1 voxel
    return folder


def test_parse_parts_resolves_synonyms_and_names_the_right_target():
    assert parse_parts("ctv_n", ["pelvicLN", "LN_CI", "LN_Pelvic"]) == ("LN_Pelvic", "LN_CommonIliac")
    with pytest.raises(InputError, match="LN_Pelvic is a part of CTVn, not CTVp; CTVp parts are Cervix, GTVp, Uterus, Vagina"):
        parse_parts("CTVp", "Cervix,LN_Pelvic")
    with pytest.raises(InputError, match="Bladder is not a part of CTVn"):
        parse_parts("CTVn", "Bladder")
    with pytest.raises(UnknownStructureError, match="Did you mean 'Cervix'"):
        parse_parts("CTVp", "Cervics")
    with pytest.raises(InputError, match="no parts given"):
        parse_parts("CTVp", " , ")


def test_union_counts_shared_voxels_once_and_checks_grids():
    a, b = _box((0, 0, 0), (4, 4, 4)), _box((2, 2, 2), (6, 6, 6))
    assert int(union({"a": a, "b": b}).array.sum()) == 64 + 64 - 8
    other = Volume(b.array, (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="not on the grid"):
        union({"a": a, "b": other})


def test_compose_writes_union_backs_up_previous_and_logs_who_when_which(case):
    when = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    (result,) = compose_case(case, {"CTVn": "LN_Pelvic,LN_CommonIliac"}, who="dr.tester", when=when)
    voxel_cc = 1.5 * 2.0 * 3.0 / 1000
    assert result.used == ("LN_Pelvic", "LN_CommonIliac")
    assert result.volume_cc == pytest.approx((144 + 96 - 16) * voxel_cc)
    assert result.previous_cc == pytest.approx(voxel_cc)
    written = read_nifti(case / "structures" / "CTVn.nii.gz")
    assert int(written.array.sum()) == 224 and np.allclose(written.direction, DIRECTION)
    assert (case / "history" / "20250304T050607Z" / "CTVn.nii.gz").is_file()
    (record,) = read_log(case)
    assert (record["who"], record["when"], record["target"]) == ("dr.tester", "2025-03-04T05:06:07+00:00", "CTVn")
    assert record["requested"] == record["used"] == ["LN_Pelvic", "LN_CommonIliac"] and "missing" not in record
    # the hashes of the part files used and of the mask written, recomputed here with hashlib
    sub = case / "structures" / "sub"
    assert record["parts_sha256"] == {n: hashlib.sha256((sub / f"{n}.nii.gz").read_bytes()).hexdigest() for n in ("LN_Pelvic", "LN_CommonIliac")}
    assert record["sha256"] == hashlib.sha256((case / "structures" / "CTVn.nii.gz").read_bytes()).hexdigest()
    assert json.loads((case / "compose_log.jsonl").read_text().splitlines()[0])["backup"] == "history/20250304T050607Z/CTVn.nii.gz"


def test_compose_both_targets_and_a_new_target_has_no_backup(case):
    results = compose_case(case, {"CTVn": ["LN_Pelvic"], "CTVp": "Cervix"}, who="x")
    assert [r.target for r in results] == ["CTVn", "CTVp"]
    assert results[1].backup is None and results[1].previous_cc is None and results[1].used == ("Cervix",)
    assert int(read_nifti(case / "structures" / "CTVp.nii.gz").array.sum()) == 8
    assert len(read_log(case)) == 2


def test_the_gtv_is_always_composed_in(case):
    write_nifti(_box((15, 15, 7), (17, 17, 9)), case / "structures" / "sub" / "GTVn.nii.gz")  # 8 voxels, apart
    (result,) = compose_case(case, {"CTVn": "LN_Pelvic"}, who="x")
    assert result.used == ("LN_Pelvic", "GTVn") and result.added == ("GTVn",)
    assert int(read_nifti(case / "structures" / "CTVn.nii.gz").array.sum()) == 144 + 8
    assert "GTVn added: gross disease always lies inside its CTV" in read_log(case)[0]["note"]
    (again,) = compose_case(case, {"CTVn": "GTVn,LN_Pelvic"}, who="x")
    assert again.added == () and again.used == ("GTVn", "LN_Pelvic")


def test_compose_refuses_when_no_requested_part_exists_and_writes_nothing(case):
    with pytest.raises(InputError, match="CTVp parts Uterus, GTVp not in this case \\(no mask file\\); it has Cervix"):
        compose_case(case, {"CTVn": "LN_Pelvic", "CTVp": "Uterus,GTVp"}, who="x")
    assert read_log(case) == [] and int(read_nifti(case / "structures" / "CTVn.nii.gz").array.sum()) == 1


def test_a_chosen_part_the_case_lacks_is_an_error_even_beside_parts_it_has(case):
    """The para-aortic group chosen on a case without its mask: refused, naming it and what the
    case has, and nothing written (not a CTVn silently composed from the other two)."""
    before = {p: p.read_bytes() for p in case.rglob("*") if p.is_file()}
    with pytest.raises(InputError) as caught:
        compose_case(case, {"CTVn": "LN_Pelvic,LN_CommonIliac,LN_ParaAortic"}, who="x")
    message = str(caught.value)
    assert "CTVn part LN_ParaAortic not in this case" in message and "it has LN_CommonIliac, LN_Pelvic" in message
    assert "nothing was written" in message
    assert {p: p.read_bytes() for p in case.rglob("*") if p.is_file()} == before
    with pytest.raises(InputError, match="CTVp parts Uterus, Vagina not in this case .*it has Cervix"):  # both targets checked first
        compose_case(case, {"CTVn": "LN_Pelvic", "CTVp": "Cervix,Uterus,Vagina"}, who="x")
    assert {p: p.read_bytes() for p in case.rglob("*") if p.is_file()} == before


def test_an_empty_part_is_a_valid_choice(case):
    """A GTVn mask with no voxel (the patient has no pathological node) exists: choosing it is fine."""
    write_nifti(_box((0, 0, 0), (0, 0, 0)), case / "structures" / "sub" / "GTVn.nii.gz")
    (result,) = compose_case(case, {"CTVn": "GTVn,LN_Pelvic"}, who="x")
    assert result.used == ("GTVn", "LN_Pelvic") and result.added == ()
    assert int(read_nifti(case / "structures" / "CTVn.nii.gz").array.sum()) == 144
    assert set(read_log(case)[0]["parts_sha256"]) == {"GTVn", "LN_Pelvic"}
    with pytest.raises(InputError, match="no structures/ folder"):
        compose_case(case / "nothing", {"CTVn": "LN_Pelvic"}, who="x")


def test_a_failing_target_leaves_the_draft_and_the_case_untouched(case):
    """CTVn is fine, CTVp's parts are on two grids: nothing is written, CTVn's draft is kept."""
    write_nifti(Volume(np.ones((4, 4, 4), np.uint8), (1.0, 1.0, 1.0)), case / "structures" / "sub" / "Uterus.nii.gz")
    before = {p: p.read_bytes() for p in case.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="not on the grid"):
        compose_case(case, {"CTVn": "LN_Pelvic", "CTVp": "Cervix,Uterus"}, who="dr.tester")
    assert {p: p.read_bytes() for p in case.rglob("*") if p.is_file()} == before
    assert not (case / "history").exists()
