"""The rules TOML: the packaged default says what the clinicians said, and bad files fail clearly."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from cervicontour.errors import InputError
from cervicontour.rules import PresenceRule, Severity, default_rules_path, load_rules, paired_structures


def test_default_rules_are_the_clinicians_rules():
    rules = load_rules()
    ov = rules.overlap
    # CTVn, CTVp, Anorectum pairwise disjoint: error.
    for a, b in (("CTVn", "CTVp"), ("CTVn", "Anorectum"), ("CTVp", "Anorectum")):
        assert ov.rule_for(a, b)[0] is Severity.ERROR
        assert ov.rule_for(b, a)[0] is Severity.ERROR
    # Parametrium may overlap anything; Bladder may overlap CTVn.
    for other in ("Bladder", "Anorectum", "CTVn", "CTVp"):
        assert ov.rule_for("Parametrium", other)[0] is None
        assert ov.rule_for(other, "Parametrium")[0] is None
    assert ov.rule_for("Bladder", "CTVn")[0] is None
    # Any other overlap is a warning.
    assert ov.rule_for("Bladder", "CTVp")[0] is Severity.WARNING
    assert ov.rule_for("Bladder", "Anorectum")[0] is Severity.WARNING
    # Compound targets (seed eq. 3.4, 3.5).
    compound = {c.name: set(c.parts) for c in rules.compound}
    assert compound == {
        "CTVp": {"Cervix", "GTVp", "Uterus", "Vagina"},
        "CTVn": {"GTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic"},
    }
    # Bladder anterior to Anorectum.
    (position,) = rules.position
    assert (position.structure, position.relation, position.other) == ("Bladder", "anterior_of", "Anorectum")
    assert rules.laterality.enabled
    assert {r.structure for r in rules.volume} == {"Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium"}
    assert rules.presence.required == ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def test_rules_keep_source_text_and_hash():
    rules = load_rules(default_rules_path())
    raw = default_rules_path().read_bytes()
    assert rules.sha256 == hashlib.sha256(raw).hexdigest()
    assert rules.text == raw.decode()
    assert load_rules() == load_rules()  # cached default, frozen and comparable


def test_pairs_cover_default_group_and_disjoint_groups_once():
    pairs = load_rules().overlap.pairs()
    assert len(pairs) == 10  # C(5, 2): the disjoint trio lies inside the checked five
    assert len({frozenset(p) for p in pairs}) == 10


def _write(tmp_path, text: str):
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_synonyms_resolve_and_custom_rules_load(tmp_path):
    path = _write(
        tmp_path,
        """
        [overlap]
        structures = ["Rectum", "CTV_N"]
        severity = "info"
        [[position]]
        structure = "UrinaryBladder"
        relation = "superior_to"
        other = "rectum"
        margin_mm = 5
        """,
    )
    rules = load_rules(path)
    assert rules.overlap.structures == ("Anorectum", "CTVn")
    assert rules.overlap.rule_for("Anorectum", "CTVn")[0] is Severity.INFO
    assert rules.position[0].structure == "Bladder" and rules.position[0].other == "Anorectum"
    assert rules.position[0].margin_mm == 5.0
    assert rules.compound == () and rules.volume == ()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[overlapp]\nstructures = []\n", "did you mean 'overlap'"),
        ("[overlap]\nstructures = ['Bladdr']\n", "Did you mean 'Bladder'"),
        ("[[volume]]\nstructure = 'Bladder'\nseverity = 'fatal'\n", "severity must be"),
        ("[[volume]]\nstructure = 'Bladder'\nmin_cc = 10\nmax_cc = 5\n", "below min_cc"),
        ("[[position]]\nstructure = 'Bladder'\nother = 'CTVn'\nrelation = 'anterior'\n", "did you mean 'anterior_of'"),
        ("[[components]]\nstructure = 'CTVn'\nmin = 3\nmax = 1\n", "min <= max"),
        ("[enforce]\nthreshold = 1.5\n", "threshold must be in (0, 1]"),
        ("[presence]\nexpected_parts = ['Bladder']\n", "not part of a compound"),
        ("version = 2\n", "version 2"),
        ("[overlap\n", "not valid TOML"),
    ],
)
def test_bad_rules_files_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(InputError, match=None) as info:
        load_rules(_write(tmp_path, text))
    assert message in str(info.value)
    assert "rules.toml" in str(info.value)


def test_missing_rules_file_points_at_the_default(tmp_path):
    with pytest.raises(InputError, match="copy .*rules.toml"):
        load_rules(tmp_path / "nope.toml")


def test_disjoint_group_beats_allowance():
    from cervicontour.rules import rules_from_dict

    rules = rules_from_dict(
        {
            "overlap": {
                "structures": ["Parametrium", "CTVp"],
                "disjoint": [{"structures": ["Parametrium", "CTVp"]}],
                "allowed": [{"structures": ["Parametrium", "*"]}],
            }
        }
    )
    assert rules.overlap.rule_for("CTVp", "Parametrium")[0] is Severity.ERROR


def test_presence_rule_by_hand():
    rule = load_rules().presence
    everything = {"Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium"}
    assert rule.missing(everything) == []
    missing = dict(rule.missing(everything - {"CTVn"} | {"Cervix", "Uterus", "Vagina", "Kidney_R"}))
    assert set(missing) == {"CTVn", "GTVp", "Kidney_L"}
    assert missing["CTVn"] == "required"
    assert "Cervix" in missing["GTVp"]
    assert missing["Kidney_L"] == "Kidney_R is present"
    # GTVn and LN_ParaAortic are optional parts of CTVn; LN_Pelvic and LN_CommonIliac are not.
    assert dict(rule.missing(everything | {"LN_Pelvic"})) == {"LN_CommonIliac": "part of CTVn, and LN_Pelvic is present"}
    assert PresenceRule().missing(set()) == []


def test_paired_structures_come_from_the_vocabulary():
    pairs = dict(paired_structures())
    assert pairs["Kidney_L"] == "Kidney_R"
    assert pairs["Femur_Head_L"] == "Femur_Head_R"
    assert all(left.endswith("_L") and right.endswith("_R") for left, right in pairs.items())
