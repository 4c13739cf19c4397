"""The operator's one parsed view per object (desired.kube.views): parsed once per
(uid, generation), never served for another generation or a re-created object,
bounded, and what an invalid object still says about itself."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.builders import ensemble_doc, model_doc, with_path
from tests.support.in_process import count_parses
from tritonfleet.api.model import TritonModel
from tritonfleet.desired.kube import views as views_module
from tritonfleet.desired.kube.views import OwnerViews, parse_owner


def body(doc: dict[str, Any], uid: str = "uid-1", generation: int = 1, **meta: Any) -> dict:
    out = copy.deepcopy(doc)
    out["metadata"].update(namespace="ml", uid=uid, generation=generation, **meta)
    return out


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_parses(monkeypatch)


def test_a_spec_is_parsed_once_per_generation(parses: list[str]) -> None:
    views = OwnerViews()
    first = views.of(body(model_doc("toy")))
    again = views.of(body(model_doc("toy"), resourceVersion="99", labels={"a": "b"}))
    assert again is first and parses == ["toy"]  # metadata and status changes: no new parse
    changed = body(with_path(model_doc("toy"), "spec.modelName", "toy_v2"), generation=2)
    assert views.of(changed).triton_name == "toy_v2"
    assert parses == ["toy", "toy"]


def test_a_re_created_object_gets_its_own_view(parses: list[str]) -> None:
    views = OwnerViews()
    old = views.of(body(model_doc("toy"), uid="old"))
    new = views.of(body(model_doc("toy"), uid="new"))  # same name, same generation
    assert new is not old and new.target is not None and new.target.uid == "new"
    assert len(parses) == 2


def test_the_cache_is_bounded_and_keeps_what_is_read(parses: list[str]) -> None:
    views = OwnerViews(max_entries=2)
    a, b, c = (body(model_doc(name), uid=name) for name in ("a", "b", "c"))
    views.of(a)
    views.of(b)
    views.of(a)  # a is now the most recently read
    views.of(c)  # b goes
    assert len(views) == 2
    views.of(a)
    views.of(b)
    assert parses == ["a", "b", "c", "b"]


def test_a_body_without_uid_is_never_cached(parses: list[str]) -> None:
    views = OwnerViews()
    doc = model_doc("toy")
    views.of(doc)
    views.of(doc)
    assert parses == ["toy", "toy"] and len(views) == 0


def test_typed_properties_replace_raw_reads() -> None:
    doc = model_doc(
        "toy",
        serving={"replicas": {"min": 0, "max": 2}, "autoscaling": {"scaleToZeroAfterSeconds": 60}},
        failover={"mode": "hosted", "provider": {"baseUrl": "https://x.test/v1", "model": "m"}},
    )
    view = parse_owner(body(doc))
    assert isinstance(view.parsed, TritonModel)
    assert view.may_scale_to_zero and view.autoscaling is not None
    assert view.autoscaling.window_seconds == 30
    assert view.failover_mode == "hosted"
    assert view.member_names == ()
    assert not parse_owner(body(model_doc("plain"))).may_scale_to_zero
    assert parse_owner(body(model_doc("plain"))).failover_mode is None
    pipe = parse_owner(body(ensemble_doc("pipe")))
    assert pipe.member_names == ("toy",) and pipe.target is None  # checked with its members


def test_an_invalid_object_still_has_its_name_and_failover() -> None:
    doc = with_path(model_doc("toy", modelName="toy_v2"), "spec.config.maxBatchSize", -1)
    doc["spec"]["failover"] = {"mode": "auto"}  # no provider: invalid too
    view = parse_owner(body(doc))
    assert view.parsed is None and view.target is None
    assert any("maxBatchSize" in p.path for p in view.problems)
    assert view.triton_name == "toy_v2"  # an earlier sync is cleaned up under this name
    assert view.failover_mode == "auto"


def synced(member: dict[str, Any], revision: str) -> dict[str, Any]:
    out = copy.deepcopy(member)
    generation = out["metadata"].get("generation", 1)
    out["status"] = {
        "revision": revision,
        "conditions": [
            {
                "type": "Synced",
                "status": "True",
                "reason": "SyncSucceeded",
                "observedGeneration": generation,
            }
        ],
    }
    return out


def test_an_ensemble_is_checked_once_per_generation_of_it_and_its_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[tuple[str, ...]] = []
    real = views_module._check_ensemble

    def counting(ensemble: Any, members: Any) -> Any:
        checks.append(tuple(members))
        return real(ensemble, members)

    monkeypatch.setattr(views_module, "_check_ensemble", counting)
    views = OwnerViews()
    pipe = body(ensemble_doc("pipe"), uid="pipe")
    member = body(model_doc("toy"), uid="toy")
    members = {"toy": member}
    first = views.rendering(pipe, members.get)
    assert first.target is not None and first.members_pending == ("toy",)
    revision = views.of(member).revision
    members["toy"] = synced(member, revision)  # a status change: no new generation
    second = views.rendering(pipe, members.get)
    assert second.target == first.target and second.members_pending == ()
    assert len(checks) == 1
    members["toy"] = body(with_path(model_doc("toy"), "spec.modelName", "t2"), "toy", 2)
    third = views.rendering(pipe, members.get)
    assert third.target is not None and third.target.load_models == ("t2", "pipe")
    members.clear()  # the member is gone
    gone = views.rendering(pipe, members.get)
    assert gone.target is None and any("toy" in p.message for p in gone.problems)
    assert len(checks) == 3
