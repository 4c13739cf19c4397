"""Fleet-consistent loading, the pure half (``tritonfleet.desired.triton.loading``):
the revision stamp, index folding, per-pod actions and states, the ``Loaded``
condition, and deletion. Index entries and error texts are the ones a real
tritonserver 2.51 returns (see tests/integration/test_loading.py).
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonfleet.api.status import LOADED, ModelStatus, PodModelState, set_condition
from tritonfleet.desired.triton.config import render_config
from tritonfleet.desired.triton.loading import (
    MAX_CONDITION_MESSAGE,
    LoadTarget,
    ModelObservation,
    PodObservation,
    WantedModel,
    loaded_condition,
    model_states_from_index,
    plan_loading,
    plan_unloading,
    pod_model_state,
)
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.revision import REVISION_PARAMETER, served_revision, stamp_revision

# Triton's own texts, as returned by 2.51.
LOAD_FAILED = (
    "load failed for model 'm': version 1 is at UNAVAILABLE state: Internal: RuntimeError: "
    "broken on purpose\n\nAt:\n  /repo/m/1/model.py(7): initialize\n;\n"
)
POLL_FAILED = "failed to load 'm', failed to poll from model repository"
INDEX_REASON = (
    "Internal: RuntimeError: broken on purpose\n\nAt:\n  /repo/m/1/model.py(7): initialize\n"
)

PBTXT = 'backend: "python"\nmax_batch_size: 0\n'
M = LoadTarget.model("m", "rev-b")


def ready_at(revision: str | None) -> ModelObservation:
    return ModelObservation(state="READY", revision=revision)


def pod(
    name: str = "p0", ready: bool = True, error: str = "", **models: ModelObservation
) -> PodObservation:
    return PodObservation(name, f"10.0.0.{name[-1]}", ready, models, error)


# --- the stamp ------------------------------------------------------------------------------


def test_stamp_adds_the_parameter_and_keeps_the_rest() -> None:
    stamped = stamp_revision(PBTXT, "abc123")
    config = text_format.Parse(stamped, mc.ModelConfig())
    assert config.backend == "python"
    assert config.parameters[REVISION_PARAMETER].string_value == "abc123"


def test_stamp_replaces_an_earlier_stamp_and_keeps_other_parameters() -> None:
    text = PBTXT + 'parameters { key: "token_delay_ms" value { string_value: "5" } }\n'
    twice = stamp_revision(stamp_revision(text, "old"), "new")
    config = text_format.Parse(twice, mc.ModelConfig())
    assert dict(config.parameters)[REVISION_PARAMETER].string_value == "new"
    assert config.parameters["token_delay_ms"].string_value == "5"
    assert len(config.parameters) == 2


def test_stamp_is_idempotent() -> None:
    once = stamp_revision(PBTXT, "r1")
    assert stamp_revision(once, "r1") == once


def test_stamp_works_on_rendered_and_ensemble_configs() -> None:
    from tritonfleet.api.model import ModelConfigSpec

    spec = ModelConfigSpec.model_validate(
        {
            "backend": "python",
            "maxBatchSize": 4,
            "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [3]}],
            "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [3]}],
            "parameters": {"a": "b"},
        }
    )
    rendered, problems = render_config("m", spec)
    assert not problems
    assert "tritonfleet.revision" in stamp_revision(rendered, "r")
    ensemble = 'platform: "ensemble"\nensemble_scheduling { step { model_name: "a" } }\n'
    assert 'string_value: "e1"' in stamp_revision(ensemble, "e1")


@pytest.mark.parametrize("bad", ["backend: python {", "no_such_field: 1"])
def test_stamp_refuses_configs_that_do_not_parse(bad: str) -> None:
    with pytest.raises(ValueError, match="does not parse"):
        stamp_revision(bad, "r")


def test_stamp_refuses_an_empty_revision() -> None:
    with pytest.raises(ValueError, match="empty"):
        stamp_revision(PBTXT, "")


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_stamp_roundtrips_through_tritons_json(revision: str) -> None:
    # Triton's config endpoint prints the ModelConfig as JSON with proto field names.
    from google.protobuf import json_format

    config = text_format.Parse(stamp_revision(PBTXT, revision), mc.ModelConfig())
    as_json = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
    assert served_revision(as_json) == revision


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"parameters": {REVISION_PARAMETER: {"string_value": "abc"}}}, "abc"),
        ({"parameters": {REVISION_PARAMETER: {"string_value": ""}}}, None),
        ({"parameters": {"other": {"string_value": "abc"}}}, None),
        ({"parameters": {}}, None),
        ({}, None),
        ({"parameters": []}, None),
        ({"parameters": {REVISION_PARAMETER: "abc"}}, None),
        ({"parameters": {REVISION_PARAMETER: {"string_value": 3}}}, None),
    ],
)
def test_served_revision(config: dict[str, object], expected: str | None) -> None:
    assert served_revision(config) == expected


# --- the index ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([{"name": "m"}], ModelObservation()),
        ([{"name": "m", "version": "1", "state": "READY"}], ModelObservation("READY")),
        ([{"name": "m", "version": "1", "state": "LOADING"}], ModelObservation("LOADING")),
        (
            [{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}],
            ModelObservation("UNAVAILABLE", "unloaded"),
        ),
        (
            [{"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": INDEX_REASON}],
            ModelObservation("UNAVAILABLE", INDEX_REASON),
        ),
        # a new version next to the old one: READY wins over UNLOADING
        (
            [
                {"name": "m", "version": "1", "state": "UNLOADING"},
                {"name": "m", "version": "2", "state": "READY"},
            ],
            ModelObservation("READY"),
        ),
        (
            [
                {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
                {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": INDEX_REASON},
            ],
            ModelObservation("UNAVAILABLE", INDEX_REASON),
        ),
        (
            [
                {"name": "m", "version": "2", "state": "UNAVAILABLE", "reason": INDEX_REASON},
                {"name": "m", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
            ],
            ModelObservation("UNAVAILABLE", INDEX_REASON),
        ),
        ([{"name": "m", "version": "1", "state": "WEIRD"}], ModelObservation()),
    ],
)
def test_index_folds_versions_into_one_state(
    entries: list[dict[str, str]], expected: ModelObservation
) -> None:
    assert model_states_from_index(entries) == {"m": expected}


def test_index_keeps_every_model_and_skips_garbage() -> None:
    folded = model_states_from_index(
        [{"name": "b"}, {"version": "1"}, {"name": "a", "version": "1", "state": "READY"}]
    )
    assert list(folded) == ["b", "a"]


# --- targets --------------------------------------------------------------------------------


def test_ensemble_target_orders_members_first_and_drops_repeats() -> None:
    target = LoadTarget.ensemble(
        "rag",
        "e1",
        [WantedModel("embed", "r1"), WantedModel("llm", "r2"), WantedModel("embed", "r1")],
    )
    assert target.names == ("embed", "llm", "rag")
    assert target.unload_order == ("rag", "llm", "embed")
    assert target.primary == WantedModel("rag", "e1")


@pytest.mark.parametrize(
    "models",
    [(), (WantedModel("a", "1"), WantedModel("a", "2"))],
)
def test_target_refuses_empty_or_duplicate(models: tuple[WantedModel, ...]) -> None:
    with pytest.raises(ValueError):
        LoadTarget(models)


# --- one pod --------------------------------------------------------------------------------

CASES = [
    # (observation of m, expected actions, pod state, message fragment)
    (ready_at("rev-b"), [], "Ready", ""),
    (ModelObservation(), [("load", "not loaded")], "Pending", "not loaded"),
    (ModelObservation("UNAVAILABLE", "unloaded"), [("load", "not loaded")], "Pending", "unloaded"),
    (ready_at("rev-a"), [("reload", "serves rev-a")], "Pending", "serves rev-a, wanted rev-b"),
    (ready_at(None), [("reload", "unstamped")], "Pending", "unstamped"),
    (ModelObservation("LOADING"), [("load", "being loaded")], "Loading", "loading"),
    (ModelObservation("UNLOADING"), [("load", "not loaded")], "Unloading", "unloading"),
    (
        ModelObservation("UNAVAILABLE", INDEX_REASON),
        [("load", "not loaded")],
        "Failed",
        "broken on purpose",
    ),
    (
        ModelObservation("UNAVAILABLE", INDEX_REASON, error=LOAD_FAILED),
        [("load", "retrying after: load failed")],
        "Failed",
        "load failed for model 'm'",
    ),
    # a failed reload: the old revision keeps serving and the index says READY
    (
        ModelObservation("READY", revision="rev-a", error=LOAD_FAILED),
        [("reload", "serves rev-a")],
        "Failed",
        "(still serving revision rev-a)",
    ),
    (ModelObservation(error=POLL_FAILED), [("load", "retrying")], "Failed", POLL_FAILED),
    # an error that a later successful load made stale
    (ModelObservation("READY", revision="rev-b", error=LOAD_FAILED), [], "Ready", ""),
]


@pytest.mark.parametrize(("seen", "actions", "state", "fragment"), CASES)
def test_one_model_on_one_pod(
    seen: ModelObservation, actions: list[tuple[str, str]], state: str, fragment: str
) -> None:
    plan = plan_loading(M, [pod(m=seen)])
    got = [(a.kind, a.why) for a in plan.pods[0].actions]
    assert [k for k, _ in got] == [k for k, _ in actions]
    for (_, why), (_, expected_why) in zip(got, actions, strict=True):
        assert expected_why in why
    assert all(a.revision == "rev-b" for a in plan.pods[0].actions)
    entry = plan.states[0]
    assert entry.state == state
    assert fragment in entry.message
    assert entry.revision == (seen.revision if seen.state == "READY" else None)
    assert plan.loaded is (state == "Ready")
    assert plan.has_work is bool(actions)
    assert [f.pod for f in plan.failures] == (["p0"] if state == "Failed" else [])


def test_triton_message_is_kept_verbatim_in_state_condition_and_failure() -> None:
    plan = plan_loading(
        M, [pod(m=ModelObservation("UNAVAILABLE", INDEX_REASON, error=LOAD_FAILED))]
    )
    assert plan.states[0].message == LOAD_FAILED.strip()
    assert LOAD_FAILED.strip() in plan.condition.message
    assert plan.failures[0].message == LOAD_FAILED.strip()
    assert plan.condition.reason == "LoadFailed"


def test_not_ready_pod_is_listed_and_gets_no_actions() -> None:
    plan = plan_loading(M, [pod("p1", ready=False), pod("p2", m=ready_at("rev-b"))])
    assert plan.pods[0].actions == ()
    assert plan.states[0] == PodModelState(
        name="p1", ip="10.0.0.1", wanted="rev-b", state="Unavailable", message="pod is not ready"
    )
    assert plan.condition.status == "True"
    assert "not ready: p1" in plan.condition.message


def test_pods_of_two_revisions_are_each_judged_against_their_own() -> None:
    """A rollout: the old pod serves rev-a as it was started to, the new one rev-b."""
    old, new = pod("p1", m=ready_at("rev-a")), pod("p2", m=ready_at("rev-b"))
    plan = plan_loading(M, [old, new], wanted={"p1": LoadTarget.model("m", "rev-a")})
    assert plan.pods[0].actions == () and plan.pods[1].actions == ()
    assert [(s.state, s.revision, s.wanted) for s in plan.states] == [
        ("Ready", "rev-a", "rev-a"),
        ("Ready", "rev-b", "rev-b"),
    ]
    assert plan.condition.status == "True"
    assert "at the revision each was started for (rev-a on 1, rev-b on 1)" in plan.condition.message


def test_a_pod_of_the_new_revision_failing_quotes_triton_while_the_old_one_serves() -> None:
    failing = pod("p2", m=ModelObservation(state="UNAVAILABLE", reason="boom: no such file"))
    plan = plan_loading(
        M, [pod("p1", m=ready_at("rev-a")), failing], wanted={"p1": LoadTarget.model("m", "rev-a")}
    )
    assert plan.states[0].state == "Ready"
    assert (plan.states[1].state, plan.states[1].wanted) == ("Failed", "rev-b")
    assert plan.condition.reason == "LoadFailed" and "boom: no such file" in plan.condition.message


def test_a_terminating_pod_is_draining_not_loaded_and_not_counted() -> None:
    leaving = PodObservation("p1", "10.0.0.1", False, terminating=True)
    plan = plan_loading(M, [leaving, pod("p2", m=ready_at("rev-b"))])
    assert plan.pods[0].actions == ()
    assert plan.states[0].state == "Terminating"
    assert plan.condition.status == "True" and "p1" not in plan.condition.message


def test_a_pod_whose_template_names_no_member_revisions_accepts_any() -> None:
    """Pods from before rollouts: the ensemble's revision is known, its members' not."""
    members = [WantedModel("a", ""), WantedModel("b", "")]
    old = LoadTarget.ensemble("e", "rev-a", members)
    seen = pod("p1", a=ready_at("whatever"), b=ready_at("whichever"), e=ready_at("rev-a"))
    plan = plan_loading(LoadTarget.ensemble("e", "rev-b", []), [seen], wanted={"p1": old})
    assert plan.states[0].state == "Ready" and plan.pods[0].actions == ()
    assert set(plan.names) == {"a", "b", "e"}


def test_unreachable_ready_pod_blocks_loaded() -> None:
    err = "repository index on http://10.0.0.1:8000: ClientConnectorError: refused"
    plan = plan_loading(M, [pod("p1", error=err), pod("p2", m=ready_at("rev-b"))])
    assert plan.pods[0].actions == ()
    assert plan.states[0].state == "Unavailable"
    assert plan.condition.status == "False"
    assert plan.condition.reason == "Unreachable"
    assert "p1 (Unavailable: " + err in plan.condition.message


@pytest.mark.parametrize(
    ("pods", "message"),
    [([], "no Triton pods"), ([pod("p1", ready=False)], "not ready: p1")],
)
def test_no_ready_pods(pods: list[PodObservation], message: str) -> None:
    condition = plan_loading(M, pods).condition
    assert (condition.status, condition.reason) == ("False", "NoReadyPods")
    assert message in condition.message


def test_condition_reason_precedence_failed_over_unreachable_over_loading() -> None:
    failed = pod("p1", m=ModelObservation(error=LOAD_FAILED))
    gone = pod("p2", error="refused")
    loading = pod("p3", m=ModelObservation("LOADING"))
    assert plan_loading(M, [loading, gone, failed]).condition.reason == "LoadFailed"
    assert plan_loading(M, [loading, gone]).condition.reason == "Unreachable"
    assert plan_loading(M, [loading]).condition.reason == "Loading"


def test_condition_message_names_pods_counts_and_lists_failures_first() -> None:
    pods = [
        pod("p1", m=ready_at("rev-b")),
        pod("p2", m=ModelObservation("LOADING")),
        pod("p3", m=ModelObservation(error=LOAD_FAILED)),
    ]
    message = plan_loading(M, pods).condition.message
    assert message.startswith("1/3 ready pods serve m revision rev-b; not serving it: p3 (Failed: ")
    assert message.index("p3") < message.index("p2 (Loading")
    assert "p1" not in message


def test_identical_failures_are_grouped() -> None:
    pods = [pod(f"p{i}", m=ModelObservation(error=POLL_FAILED)) for i in range(5)]
    message = plan_loading(M, pods).condition.message
    assert message.count(POLL_FAILED) == 1
    assert "p0, p1, p2, p3, p4 (Failed: " in message


def test_condition_message_is_capped_for_huge_fleets() -> None:
    pods = [
        pod(f"pod-{i:04d}", m=ModelObservation(error=f"load failed #{i}: " + "x" * 3000))
        for i in range(40)
    ]
    condition = plan_loading(M, pods).condition
    assert len(condition.message) <= MAX_CONDITION_MESSAGE
    assert "more)" in condition.message
    # the status object still validates (the CRD caps condition messages too)
    ModelStatus(conditions=[condition])


def test_pod_message_is_capped() -> None:
    state = pod_model_state(M, pod(m=ModelObservation(error="e" * 100_000)))
    assert len(state.message) <= 4096


def test_generation_and_set_condition() -> None:
    plan = plan_loading(M, [pod(m=ready_at("rev-b"))], generation=7)
    assert plan.condition.type == LOADED
    assert plan.condition.observed_generation == 7
    first = set_condition([], plan.condition, "t0")
    again = set_condition(
        first, plan_loading(M, [pod(m=ready_at("rev-b"))], generation=7).condition, "t1"
    )
    assert again == first  # unchanged observation: identical status, no write


# --- ensembles ------------------------------------------------------------------------------

RAG = LoadTarget.ensemble(
    "toy_rag", "e2", [WantedModel("toy_embed", "r1"), WantedModel("toy_llm", "r2")]
)


def test_ensemble_members_load_before_the_ensemble() -> None:
    plan = plan_loading(RAG, [pod()])
    assert [(a.model, a.kind, a.revision) for a in plan.pods[0].actions] == [
        ("toy_embed", "load", "r1"),
        ("toy_llm", "load", "r2"),
        ("toy_rag", "load", "e2"),
    ]


def test_ensemble_only_what_differs_is_loaded() -> None:
    seen = pod(toy_embed=ready_at("r1"), toy_llm=ready_at("r1"), toy_rag=ready_at("e1"))
    plan = plan_loading(RAG, [seen])
    assert [(a.model, a.kind) for a in plan.pods[0].actions] == [
        ("toy_llm", "reload"),
        ("toy_rag", "reload"),
    ]
    assert plan.states[0].revision == "e1"  # what the pod really serves
    assert plan.states[0].message == (
        "toy_llm: serves r1, wanted r2; toy_rag: serves e1, wanted e2"
    )


def test_ensemble_failed_member_fails_the_pod_with_member_named() -> None:
    seen = pod(
        toy_embed=ready_at("r1"),
        toy_llm=ModelObservation("UNAVAILABLE", INDEX_REASON, error=LOAD_FAILED),
        toy_rag=ModelObservation("UNAVAILABLE", "unloaded"),
    )
    plan = plan_loading(RAG, [seen])
    assert plan.states[0].state == "Failed"
    assert plan.states[0].message.startswith("toy_llm: load failed for model 'm'")
    assert [(f.model, f.pod) for f in plan.failures] == [("toy_llm", "p0")]


def test_ensemble_loaded_needs_every_member_at_its_revision() -> None:
    good = pod(toy_embed=ready_at("r1"), toy_llm=ready_at("r2"), toy_rag=ready_at("e2"))
    assert plan_loading(RAG, [good]).loaded
    stale = pod(toy_embed=ready_at("r0"), toy_llm=ready_at("r2"), toy_rag=ready_at("e2"))
    assert not plan_loading(RAG, [good, stale]).loaded


def test_retired_models_are_unloaded_after_the_loads() -> None:
    seen = pod(old=ready_at("x"), gone=ModelObservation("UNAVAILABLE", "unloaded"))
    plan = plan_loading(RAG, [seen], retire=["old", "gone", "toy_llm"])
    assert [(a.model, a.kind) for a in plan.pods[0].actions][-1] == ("old", "unload")
    assert sum(a.kind == "unload" for a in plan.pods[0].actions) == 1


# --- deletion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pods", "done", "unloads", "waiting"),
    [
        ([], True, [[]], []),
        ([pod(m=ready_at("a"))], False, [["m"]], ["p0 (m READY)"]),
        ([pod(m=ModelObservation("LOADING"))], False, [["m"]], ["p0 (m LOADING)"]),
        ([pod(m=ModelObservation("UNLOADING"))], False, [[]], ["p0 (m UNLOADING)"]),
        ([pod(m=ModelObservation("UNAVAILABLE", "unloaded"))], True, [[]], []),
        ([pod(m=ModelObservation("UNAVAILABLE", INDEX_REASON))], True, [[]], []),
        ([pod(m=ModelObservation())], True, [[]], []),
        ([pod(error="refused")], False, [[]], ["p0 (cannot tell: refused)"]),
        # a not-ready pod is unloaded if it could be observed, but does not block
        ([pod(ready=False, m=ready_at("a"))], True, [["m"]], []),
        ([pod(ready=False, error="refused")], True, [[]], []),
    ],
)
def test_plan_unloading(
    pods: list[PodObservation], done: bool, unloads: list[list[str]], waiting: list[str]
) -> None:
    plan = plan_unloading(["m"], pods)
    assert plan.done is done
    assert [[a.model for a in p.actions] for p in plan.pods] == (unloads if pods else [])
    assert list(plan.waiting) == waiting
    assert all(a.kind == "unload" for p in plan.pods for a in p.actions)


def test_unloading_an_ensemble_goes_ensemble_first() -> None:
    seen = pod(toy_embed=ready_at("r1"), toy_llm=ready_at("r2"), toy_rag=ready_at("e2"))
    plan = plan_unloading(RAG.unload_order, [seen])
    assert [a.model for a in plan.pods[0].actions] == ["toy_rag", "toy_llm", "toy_embed"]


# --- properties over random fleets ------------------------------------------------------------

REVISIONS = ["r1", "r2", None]
model_observations = st.builds(
    ModelObservation,
    state=st.sampled_from([None, "READY", "LOADING", "UNLOADING", "UNAVAILABLE"]),
    reason=st.sampled_from(["", "unloaded", INDEX_REASON]),
    revision=st.sampled_from(REVISIONS),
    error=st.sampled_from(["", "", LOAD_FAILED, POLL_FAILED]),
)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[LoadTarget, list[PodObservation]]:
    members = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
    wanted = {name: draw(st.sampled_from(["r1", "r2"])) for name in [*members, "e"]}
    if members:
        target = LoadTarget.ensemble("e", wanted["e"], [WantedModel(m, wanted[m]) for m in members])
    else:
        target = LoadTarget.model("e", wanted["e"])
    count = draw(st.integers(min_value=0, max_value=6))
    pods = []
    for i in range(count):
        models = {
            name: draw(model_observations)
            for name in target.names
            if draw(st.booleans()) or draw(st.booleans())
        }
        pods.append(
            PodObservation(
                f"pod-{i}",
                draw(st.sampled_from([None, f"10.1.0.{i}"])),
                draw(st.booleans()),
                models,
                draw(st.sampled_from(["", "", "", "refused"])),
            )
        )
    return target, pods


def _serves(target: LoadTarget, p: PodObservation) -> bool:
    return not p.error and all(
        p.model(w.name).state == "READY" and p.model(w.name).revision == w.revision
        for w in target.models
    )


@settings(max_examples=400, deadline=None)
@given(fleets())
def test_loaded_iff_every_ready_pod_serves_every_model_at_its_revision(
    fleet: tuple[LoadTarget, list[PodObservation]],
) -> None:
    target, pods = fleet
    plan = plan_loading(target, pods)
    ready = [p for p in pods if p.ready]
    expected = bool(ready) and all(_serves(target, p) for p in ready)
    assert plan.loaded is expected
    assert plan.condition.status == ("True" if expected else "False")
    # every pod is listed, in order, ready or not
    assert [s.name for s in plan.states] == [p.name for p in pods]
    assert [p.pod for p in plan.pods] == [p.name for p in pods]
    for observed, state, pod_plan in zip(pods, plan.states, plan.pods, strict=True):
        if not observed.ready:
            assert pod_plan.actions == ()
            assert state.state == "Unavailable"
        elif observed.error:
            assert pod_plan.actions == ()
        # every pod that holds Loaded back is named in the message
        if observed.ready and not _serves(target, observed):
            assert observed.name in plan.condition.message
        # a pod serving everything needs nothing; loads follow the target's order
        if _serves(target, observed):
            assert pod_plan.actions == ()
            assert state.state == "Ready" or not observed.ready
        order = [target.names.index(a.model) for a in pod_plan.actions]
        assert order == sorted(order)
        for action in pod_plan.actions:
            wanted = dict((w.name, w.revision) for w in target.models)[action.model]
            assert action.revision == wanted
            seen = observed.model(action.model)
            assert not (seen.state == "READY" and seen.revision == wanted)
    # a failure is reported for every ready pod in state Failed, and only those
    failed_pods = {s.name for p, s in zip(pods, plan.states, strict=True) if s.state == "Failed"}
    assert {f.pod for f in plan.failures} == failed_pods
    if failed_pods:
        assert plan.condition.reason == "LoadFailed"
    assert len(plan.condition.message) <= MAX_CONDITION_MESSAGE


@settings(max_examples=300, deadline=None)
@given(fleets())
def test_unloading_is_done_iff_no_ready_pod_may_hold_a_model(
    fleet: tuple[LoadTarget, list[PodObservation]],
) -> None:
    target, pods = fleet
    plan = plan_unloading(target.unload_order, pods)
    holds = [
        p
        for p in pods
        if p.ready
        and (
            p.error
            or any(p.model(n).state in ("READY", "LOADING", "UNLOADING") for n in target.names)
        )
    ]
    assert plan.done is (not holds)
    assert len(plan.waiting) == len(holds)
    for observed, pod_plan in zip(pods, plan.pods, strict=True):
        names = [a.model for a in pod_plan.actions]
        order = [target.unload_order.index(n) for n in names]
        assert order == sorted(order)
        if observed.error:
            assert names == []


@settings(max_examples=200, deadline=None)
@given(fleets())
def test_the_status_built_from_a_plan_validates(
    fleet: tuple[LoadTarget, list[PodObservation]],
) -> None:
    target, pods = fleet
    plan = plan_loading(target, pods)
    status = ModelStatus(pods=list(plan.states), conditions=[plan.condition])
    assert ModelStatus.model_validate(status.to_wire()) == status
    assert loaded_condition(target, pods) == plan.condition
