import pytest

from cervicontour.structures import (
    COMPOUND,
    PRIMARY,
    STRUCTURES,
    Role,
    UnknownStructureError,
    canonical_name,
    is_sub_structure,
    structure,
)


@pytest.mark.parametrize(
    "given, expected",
    [
        ("Rectum", "Anorectum"),
        ("rectum", "Anorectum"),
        ("ANORECTUM", "Anorectum"),
        ("Paravagina", "Parametrium"),
        ("CTV_N", "CTVn"),
        ("ctv-n", "CTVn"),
        ("CTV P", "CTVp"),
        ("bladder", "Bladder"),
        ("urinary_bladder", "Bladder"),  # TotalSegmentator's name
        ("iliopsoas_left", "Musc_Iliopsoas_L"),
        ("kidney_right", "Kidney_R"),
        ("gtv_p", "GTVp"),
        ("LN_paraaortic", "LN_ParaAortic"),
    ],
)
def test_synonyms_resolve_case_insensitively(given, expected):
    assert canonical_name(given) == expected


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownStructureError) as err:
        canonical_name("Parametrum")
    assert "Did you mean 'Parametrium'" in str(err.value)


def test_unknown_name_without_close_match_lists_the_primary_five():
    with pytest.raises(UnknownStructureError) as err:
        canonical_name("zzzzqqq")
    message = str(err.value)
    assert "Did you mean" not in message
    assert all(name in message for name in PRIMARY)


def test_vocabulary_covers_the_primary_and_compound_names():
    for name in PRIMARY:
        assert STRUCTURES[name].role in (Role.OAR, Role.TARGET)
    for parent, parts in COMPOUND.items():
        assert parent in PRIMARY
        for part in parts:
            assert structure(part).parent == parent
            assert is_sub_structure(part)
    assert not is_sub_structure("rectum")


def test_paired_structures_know_their_side():
    assert structure("Femur_Head_L").side == "L"
    assert structure("kidney_right").side == "R"
    assert structure("Bladder").side is None
