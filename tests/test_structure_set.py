import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.structure_set import StructureSet
from cervicontour.volume import Volume

SPACING = (0.5, 2.0, 2.5)  # one voxel = 2.5 mm³ = 0.0025 cc


def _mask(box, origin=(0.0, 0.0, 0.0)):
    array = np.zeros((10, 10, 10), np.uint8)
    array[box] = 1
    return Volume(array, SPACING, origin)


def test_lookup_by_synonym_union_and_volume():
    ss = StructureSet({"rectum": _mask(np.s_[0:4, 0:5, 0:2]), "CTV_N": _mask(np.s_[2:6, 0:5, 0:2]),
                       "GTVp": _mask(np.s_[9, 9, 9])})
    assert ss.names == ["Anorectum", "CTVn", "GTVp"]
    assert ss["ANORECTUM"].array.dtype == bool
    assert ss.volume_cc("Anorectum") == pytest.approx(4 * 5 * 2 * 0.0025)
    union = ss.union("Anorectum", "CTVn")
    assert union.array.sum() == 6 * 5 * 2  # overlapping columns 2-3 counted once
    with pytest.raises(KeyError, match="no 'Bladder'"):
        ss["bladder"]


def test_masks_off_grid_and_duplicate_synonyms_are_refused():
    with pytest.raises(InputError, match="origin_mm"):
        StructureSet({"Bladder": _mask(np.s_[0, 0, 0]), "CTVp": _mask(np.s_[0, 0, 0], origin=(1.0, 0.0, 0.0))})
    with pytest.raises(InputError, match="two masks for 'Anorectum'"):
        StructureSet({"Rectum": _mask(np.s_[0, 0, 0]), "Anorectum": _mask(np.s_[0, 0, 0])})


def test_input_arrays_are_not_modified():
    source = _mask(np.s_[0:2, 0:2, 0:2])
    source.array[0, 0, 0] = 7
    before = source.array.copy()
    StructureSet({"Bladder": source})
    assert np.array_equal(source.array, before)


def test_case_loads_a_structure_set(small_cohort):
    from cervicontour.cohort import load_cohort

    case = load_cohort(small_cohort)["SYN001"]
    ss = case.load_structure_set(["Bladder", "CTVp"])
    assert ss.names == ["Bladder", "CTVp"] and "StructureSet(Bladder, CTVp" in repr(ss)

