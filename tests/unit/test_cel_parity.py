"""Every CEL rule the API server enforces (``x-kubernetes-validations`` in the
generated CRDs) has a pydantic twin that refuses the same objects, so
``tritonfleet render`` never passes what ``kubectl apply`` refuses.

The table (tests/support/cel_cases.py) pairs each rule (by message) with a Python reading of
the CEL rule and objects that violate it. These tests fail when a rule is added to the CRDs
without a parity case, when a rule's text changes without its case being reviewed, or when
pydantic accepts an object the rule refuses. The real API server's verdict on the same objects
is checked by tests/integration/test_crds_apiserver.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.cel_cases import (
    KINDS,
    PARITY,
    RULES,
    VIOLATIONS,
    Rule,
    apply_defaults,
    ids_of,
    pydantic_refusal,
    reported_at,
)


def test_the_crds_carry_cel_rules() -> None:
    assert {r.kind for r in RULES} == set(KINDS)
    assert len(RULES) >= len(PARITY)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}:{r.path}:{r.message}")
def test_every_cel_rule_has_a_parity_case(rule: Rule) -> None:
    assert rule.message in PARITY, (
        f"CEL rule {rule.rule!r} on {rule.kind} {rule.path} has no parity case: add one to "
        "PARITY with objects it refuses, and make sure pydantic refuses them too"
    )
    assert PARITY[rule.message].rule == rule.rule, (
        f"the CEL rule for {rule.message!r} changed; review its parity case"
    )


def test_every_parity_case_is_still_a_crd_rule() -> None:
    stale = set(PARITY) - {r.message for r in RULES}
    assert not stale, f"parity cases for rules no CRD carries any more: {stale}"


@pytest.mark.parametrize(("rule", "violation"), VIOLATIONS, ids=ids_of(VIOLATIONS))
def test_pydantic_refuses_what_the_cel_rule_refuses(rule: Rule, violation: str) -> None:
    case = PARITY[rule.message]
    node = case.violations[violation]
    # The table entry really violates the rule (after the API server's defaulting) ...
    assert not case.holds(apply_defaults(rule.schema, node)), "parity case does not violate"
    # ... and pydantic refuses it, pointing at the same part of the object.
    paths = pydantic_refusal(rule, node)
    assert paths is not None, (
        f"the API server refuses {node!r} at {rule.kind} {rule.path} ({rule.message!r}) "
        "but pydantic accepts it"
    )
    # A rule on list items (path "...[*]") is reported for the item placed at index 0.
    expected = reported_at(rule)
    assert any(p.startswith(expected) for p in paths), paths


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}:{r.path}:{r.message}")
def test_pydantic_accepts_what_the_cel_rule_accepts(rule: Rule) -> None:
    case = PARITY[rule.message]
    valid = case.valid_in(rule.kind)
    assert case.holds(apply_defaults(rule.schema, valid))
    assert pydantic_refusal(rule, valid) is None


FILES_RULE = next(r for r in RULES if r.message.startswith("file paths"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab./\\", min_size=1, max_size=8))
def test_inline_paths_the_api_server_refuses_are_refused_offline(path: str) -> None:
    node = {"files": {path: ""}}
    if not PARITY[FILES_RULE.message].holds(node):
        assert pydantic_refusal(FILES_RULE, node) is not None, path
