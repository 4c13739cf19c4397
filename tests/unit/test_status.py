"""Conditions: ``lastTransitionTime`` moves only when a condition's status flips,
so an unchanged observation produces an identical status (and no API write)."""

from __future__ import annotations

import pytest

from tritonfleet.api.status import (
    READY,
    SYNCED,
    VALID,
    Condition,
    ModelStatus,
    find_condition,
    set_condition,
)

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"


def cond(type_: str, status: str, reason: str = "Checked", message: str = "", **kw: object):
    return Condition(type=type_, status=status, reason=reason, message=message, **kw)  # type: ignore[arg-type]


def test_new_condition_is_appended_with_now() -> None:
    out = set_condition([], cond(READY, "False"), T0)
    assert len(out) == 1
    assert out[0].type == READY
    assert out[0].last_transition_time == T0


def test_unchanged_condition_keeps_its_time_and_is_identical() -> None:
    first = set_condition([], cond(READY, "True", "AllLoaded"), T0)
    again = set_condition(first, cond(READY, "True", "AllLoaded"), T1)
    assert again == first
    assert again[0].last_transition_time == T0


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "SomethingElse"},
        {"message": "2/3 replicas ready"},
        {"observed_generation": 7},
    ],
)
def test_same_status_with_new_details_keeps_the_time(change: dict[str, object]) -> None:
    first = set_condition([], cond(READY, "True", "AllLoaded"), T0)
    updated = cond(READY, "True", "AllLoaded").model_copy(update=change)
    out = set_condition(first, updated, T1)
    assert out[0].last_transition_time == T0
    for key, value in change.items():
        assert getattr(out[0], key) == value


@pytest.mark.parametrize(
    ("before", "after"), [("True", "False"), ("False", "Unknown"), ("Unknown", "True")]
)
def test_status_flip_moves_the_time(before: str, after: str) -> None:
    first = set_condition([], cond(READY, before), T0)
    out = set_condition(first, cond(READY, after, "Changed"), T1)
    assert out[0].status == after
    assert out[0].reason == "Changed"
    assert out[0].last_transition_time == T1


def test_other_conditions_are_untouched_and_order_is_kept() -> None:
    conditions = set_condition([], cond(VALID, "True"), T0)
    conditions = set_condition(conditions, cond(SYNCED, "False"), T0)
    conditions = set_condition(conditions, cond(READY, "False"), T0)
    out = set_condition(conditions, cond(SYNCED, "True", "Published"), T1)
    assert [c.type for c in out] == [VALID, SYNCED, READY]
    assert out[0] == conditions[0]
    assert out[2] == conditions[2]
    assert out[1].last_transition_time == T1
    assert len(set_condition(out, cond("Loaded", "False"), T1)) == 4


def test_caller_supplied_time_is_ignored_in_favour_of_the_rules() -> None:
    first = set_condition([], cond(READY, "True"), T0)
    out = set_condition(first, cond(READY, "True", last_transition_time="1999-01-01T00:00:00Z"), T1)
    assert out[0].last_transition_time == T0


def test_old_condition_without_time_gets_now() -> None:
    out = set_condition([cond(READY, "True")], cond(READY, "True"), T1)
    assert out[0].last_transition_time == T1


def test_input_is_not_mutated() -> None:
    conditions = [cond(READY, "True", last_transition_time=T0)]
    set_condition(conditions, cond(READY, "False"), T1)
    assert conditions[0].status == "True"
    assert conditions[0].last_transition_time == T0


def test_find_condition() -> None:
    conditions = set_condition([], cond(VALID, "True"), T0)
    assert find_condition(conditions, VALID) == conditions[0]
    assert find_condition(conditions, READY) is None


def test_status_wire_form_is_metav1_shaped() -> None:
    status = ModelStatus(
        conditions=list(set_condition([], cond(READY, "True"), T0)), revision="abc"
    )
    wire = status.to_wire()
    assert wire["conditions"][0] == {
        "type": READY,
        "status": "True",
        "reason": "Checked",
        "message": "",
        "lastTransitionTime": T0,
    }
    assert wire["revision"] == "abc"


@pytest.mark.parametrize("reason", ["", "has space", "1Starts", "Ends,"])
def test_condition_reason_must_be_camel_case_word(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        cond(READY, "True", reason)
