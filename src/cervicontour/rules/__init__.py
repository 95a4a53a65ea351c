"""The clinicians' structure rules: data (TOML), one engine for labels and predictions.

A low module: ``validate`` applies the rules to labels, inference enforces them on
predictions; neither owns them.

Example:
    >>> from cervicontour.rules import check, enforce, load_rules
    >>> rules = load_rules()                       # the packaged default (rules.toml)
    >>> findings = check(masks, rules=rules)       # doctest: +SKIP
    >>> fixed = enforce(probabilities, rules=rules)  # doctest: +SKIP
"""

from cervicontour.rules.check import check
from cervicontour.rules.config import (
    ComponentRule,
    CompoundRule,
    EnforceConfig,
    LateralityRule,
    OverlapGroup,
    OverlapRules,
    PositionRule,
    PresenceRule,
    Rules,
    VolumeRule,
    paired_structures,
)
from cervicontour.rules.loader import default_rules, default_rules_path, load_rules, rules_from_dict
from cervicontour.rules.enforce import Change, Enforced, enforce
from cervicontour.rules.findings import (
    Finding,
    Severity,
    count_by_severity,
    read_findings_json,
    sort_findings,
    write_findings_json,
)

__all__ = [
    "Change",
    "ComponentRule",
    "CompoundRule",
    "EnforceConfig",
    "Enforced",
    "Finding",
    "LateralityRule",
    "OverlapGroup",
    "OverlapRules",
    "PositionRule",
    "PresenceRule",
    "Rules",
    "Severity",
    "VolumeRule",
    "check",
    "count_by_severity",
    "default_rules",
    "default_rules_path",
    "enforce",
    "load_rules",
    "paired_structures",
    "read_findings_json",
    "rules_from_dict",
    "sort_findings",
    "write_findings_json",
]
