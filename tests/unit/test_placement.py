"""Placement of pooled models on a pool's replicas (desired.kube.placement): within
budget, stable, ensembles with their members, refusals with the numbers; and which
pod holds which replica."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from tritonfleet.desired.kube.placement import (
    ItemKey,
    Placement,
    PoolItem,
    PoolPod,
    bind_replicas,
    place,
)

GI = 2**30


def model(name: str, gi: float, replicas: int | None = None, **kw: object) -> PoolItem:
    return PoolItem(("TritonModel", name), name.replace("-", "_"), int(gi * GI), replicas, **kw)  # type: ignore[arg-type]


def ensemble(name: str, members: tuple[str, ...], gi: float = 0, **kw: object) -> PoolItem:
    keys = tuple(("TritonModel", m) for m in members)
    return PoolItem(("ModelEnsemble", name), name, int(gi * GI), members=keys, **kw)  # type: ignore[arg-type]


def where(p: Placement, name: str, kind: str = "TritonModel") -> tuple[int, ...]:
    return p.items[(kind, name)].replicas


def previous_of(p: Placement) -> dict[ItemKey, tuple[int, ...]]:
    return {k: v.replicas for k, v in p.items.items()}


# --- examples -------------------------------------------------------------------------


def test_models_for_every_replica_go_everywhere() -> None:
    p = place([model("a", 2), model("b", 3)], replicas=2, budget=16 * GI)
    assert where(p, "a") == where(p, "b") == (0, 1)
    assert p.used == (5 * GI, 5 * GI)
    assert p.free() == (11 * GI, 11 * GI)
    assert p.models_on(0) == ("a", "b")


def test_what_does_not_fit_is_refused_with_the_numbers() -> None:
    p = place([model("big", 6), model("a", 4), model("b", 6)], replicas=2, budget=16 * GI)
    first = previous_of(p)
    assert all(v.placed for v in p.items.values())
    seventh = place(
        [model("big", 6), model("a", 4), model("b", 6), model("huge", 8)],
        replicas=2,
        budget=16 * GI,
        previous=first,
    )
    verdict = seventh.items[("TritonModel", "huge")]
    assert verdict.state == "DoesNotFit"
    assert verdict.replicas == ()
    assert verdict.message == "needs 8Gi on 2 replicas; free: 0, 0"
    # Nothing else moved.
    assert {k: v.replicas for k, v in seventh.items.items() if k[1] != "huge"} == first


def test_models_are_packed_and_the_message_shows_each_replicas_free_memory() -> None:
    before = place(
        [model("a", 4, replicas=1), model("b", 8, replicas=1)], replicas=2, budget=16 * GI
    )
    p = place(
        [model("a", 4, replicas=1), model("b", 8, replicas=1), model("c", 15)],
        replicas=2,
        budget=16 * GI,
        previous=previous_of(before),
    )
    # Best fit: both went to replica 0, which leaves room for a big model on replica 1.
    assert where(p, "a") == where(p, "b") == (0,)
    assert p.items[("TritonModel", "c")].message == "needs 15Gi on 2 replicas; free: 4Gi, 16Gi"


def test_a_model_on_fewer_replicas_goes_where_it_fits_best() -> None:
    p = place(
        [model("a", 10, replicas=1), model("b", 4, replicas=1), model("c", 5, replicas=1)],
        replicas=2,
        budget=16 * GI,
    )
    # a (largest) first on replica 0; c fits best next to a (1 GiB left), b then on 1.
    assert where(p, "a") == (0,)
    assert where(p, "c") == (0,) or where(p, "c") == (1,)
    assert max(p.used) <= 16 * GI


def test_ensemble_members_go_with_it_and_are_counted_once() -> None:
    items = [
        model("embed", 1),
        model("search", 1),
        model("llm", 4),
        model("other", 2),
        ensemble("rag", ("embed", "search", "llm")),
    ]
    p = place(items, replicas=2, budget=16 * GI)
    assert where(p, "rag", "ModelEnsemble") == (0, 1)
    for member in ("embed", "search", "llm"):
        assert where(p, member) == (0, 1)
    assert p.used == (8 * GI, 8 * GI)  # each member once, whatever uses it
    assert p.models_on(1) == ("embed", "llm", "other", "rag", "search")


def test_an_ensemble_on_one_replica_brings_its_members_there() -> None:
    items = [
        model("embed", 1, replicas=1),
        model("llm", 4, replicas=1),
        ensemble("rag", ("embed", "llm"), replicas=2),
    ]
    p = place(items, replicas=2, budget=16 * GI)
    assert where(p, "rag", "ModelEnsemble") == (0, 1)
    assert where(p, "embed") == (0, 1) and where(p, "llm") == (0, 1)


def test_an_ensemble_whose_member_is_not_in_the_pool_is_refused() -> None:
    p = place([model("embed", 1), ensemble("rag", ("embed", "llm"))], replicas=2, budget=GI * 16)
    verdict = p.items[("ModelEnsemble", "rag")]
    assert verdict.state == "DoesNotFit"
    assert "llm" in verdict.message


def test_an_ensemble_that_does_not_fit_says_what_it_needs() -> None:
    p = place(
        [model("a", 10), model("b", 10, replicas=1), ensemble("e", ("a", "b"))],
        replicas=2,
        budget=16 * GI,
    )
    assert where(p, "a") == (0, 1)
    assert p.items[("TritonModel", "b")].state == "DoesNotFit"
    verdict = p.items[("ModelEnsemble", "e")]
    assert verdict.state == "DoesNotFit"
    assert verdict.message.startswith("needs 20Gi on 2 replicas")
    assert "free: " in verdict.message


def test_a_new_replica_gets_the_models_for_every_replica_only() -> None:
    first = place([model("all", 4), model("one", 4, replicas=1)], replicas=2, budget=16 * GI)
    p = place(
        [model("all", 4), model("one", 4, replicas=1)],
        replicas=3,
        budget=16 * GI,
        previous=previous_of(first),
    )
    assert where(p, "all") == (0, 1, 2)
    assert where(p, "one") == where(first, "one")


def test_a_replica_that_goes_away_takes_its_models_elsewhere() -> None:
    first = place(
        [model("all", 4), model("one", 4, replicas=1), model("two", 2, replicas=2)],
        replicas=3,
        budget=16 * GI,
    )
    on_last = [k for k, v in first.items.items() if 2 in v.replicas]
    assert on_last
    p = place(
        [model("all", 4), model("one", 4, replicas=1), model("two", 2, replicas=2)],
        replicas=2,
        budget=16 * GI,
        previous=previous_of(first),
    )
    assert all(v.state == "Placed" for v in p.items.values())
    assert all(max(v.replicas) < 2 for v in p.items.values())


def test_a_model_already_placed_keeps_what_it_has_when_it_cannot_get_more() -> None:
    first = place([model("a", 10, replicas=1)], replicas=1, budget=16 * GI)
    p = place(
        [model("a", 10, replicas=2), model("b", 10, replicas=1)],
        replicas=2,
        budget=16 * GI,
        previous={**previous_of(first), ("TritonModel", "b"): (1,)},
    )
    verdict = p.items[("TritonModel", "a")]
    assert verdict.state == "FewerReplicas"
    assert verdict.replicas == (0,)
    assert verdict.message == "on 1 of 2 replicas: needs 10Gi on 1 more; free: 6Gi, 6Gi"


def test_a_bigger_memory_that_no_longer_fits_is_taken_off() -> None:
    first = place([model("a", 8), model("b", 8)], replicas=1, budget=16 * GI)
    p = place(
        [model("a", 8), model("b", 9)], replicas=1, budget=16 * GI, previous=previous_of(first)
    )
    assert max(p.used) <= 16 * GI
    assert where(p, "a") == (0,)
    assert p.items[("TritonModel", "b")].state == "DoesNotFit"


def test_what_leaves_keeps_its_memory_until_it_is_unloaded() -> None:
    first = place([model("old", 10), model("keep", 2)], replicas=2, budget=16 * GI)
    leaving = model("old", 10, wanted=False, loaded_on=(0, 1))
    p = place(
        [leaving, model("keep", 2), model("new", 10)],
        replicas=2,
        budget=16 * GI,
        previous=previous_of(first),
    )
    assert p.items[("TritonModel", "old")].state == "Leaving"
    assert p.items[("TritonModel", "new")].state == "DoesNotFit"
    gone = place(
        [model("old", 10, wanted=False), model("keep", 2), model("new", 10)],
        replicas=2,
        budget=16 * GI,
        previous=previous_of(p),
    )
    assert where(gone, "new") == (0, 1)
    assert gone.items[("TritonModel", "old")].replicas == ()


def test_a_model_at_zero_frees_its_memory() -> None:
    p = place([model("idle", 12, wanted=False, at_zero=True), model("b", 12)], 1, 16 * GI)
    assert p.items[("TritonModel", "idle")].state == "ScaledToZero"
    assert where(p, "b") == (0,)


def test_a_pool_without_replicas_places_nothing() -> None:
    p = place([model("a", 1)], replicas=0, budget=16 * GI)
    assert p.items[("TritonModel", "a")].state == "Placed"
    assert p.items[("TritonModel", "a")].replicas == ()


# --- properties -----------------------------------------------------------------------

NAMES = [f"m{i}" for i in range(8)]


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[PoolItem], int, int]:
    replicas = draw(st.integers(0, 4))
    budget = draw(st.integers(1, 16)) * GI
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=8))
    items = [
        model(n, draw(st.integers(0, 12)), draw(st.one_of(st.none(), st.integers(1, 4))))
        for n in names
    ]
    if len(names) >= 2 and draw(st.booleans()):
        members = tuple(draw(st.lists(st.sampled_from(names), unique=True, min_size=1)))
        items.append(ensemble("e", members, draw(st.integers(0, 2))))
    return items, replicas, budget


def _within_budget(p: Placement) -> bool:
    return all(used <= p.budget for used in p.used)


def _members_co_located(p: Placement, items: list[PoolItem]) -> bool:
    for item in items:
        verdict = p.items[item.key]
        for member in item.members:
            if not set(verdict.replicas) <= set(p.items[member].replicas):
                return False
    return True


def _used_matches(p: Placement, items: list[PoolItem]) -> bool:
    memory = {i.key: i.memory for i in items}
    return all(p.used[r] == sum(memory[k] for k in p.on_replica(r)) for r in range(p.replicas))


@settings(max_examples=300, deadline=None)
@given(pools())
def test_never_over_budget_members_co_located_and_counted_once(
    pool: tuple[list[PoolItem], int, int],
) -> None:
    items, replicas, budget = pool
    p = place(items, replicas, budget)
    assert _within_budget(p)
    assert _members_co_located(p, items)
    assert _used_matches(p, items)
    for verdict in p.items.values():
        assert len(set(verdict.replicas)) == len(verdict.replicas)
        if verdict.state == "Placed":
            assert len(verdict.replicas) == verdict.wanted
        if verdict.state == "DoesNotFit":
            assert verdict.replicas == ()
            assert "needs" in verdict.message or "member" in verdict.message


@settings(max_examples=300, deadline=None)
@given(pools())
def test_placing_again_changes_nothing(pool: tuple[list[PoolItem], int, int]) -> None:
    items, replicas, budget = pool
    p = place(items, replicas, budget)
    again = place(items, replicas, budget, previous=previous_of(p))
    assert previous_of(again) == previous_of(p)


def _stays(before: Mapping[ItemKey, tuple[int, ...]], after: Placement) -> bool:
    return all(
        set(slots) <= set(after.items[k].replicas)
        for k, slots in before.items()
        if k in after.items
    )


@settings(max_examples=300, deadline=None)
@given(pools(), st.integers(0, 12), st.one_of(st.none(), st.integers(1, 4)))
def test_an_unrelated_model_added_moves_nothing(
    pool: tuple[list[PoolItem], int, int], gi: int, replicas_wanted: int | None
) -> None:
    items, replicas, budget = pool
    p = place(items, replicas, budget)
    more = place([*items, model("newcomer", gi, replicas_wanted)], replicas, budget, previous_of(p))
    assert _stays(previous_of(p), more)
    assert {k: v.replicas for k, v in more.items.items() if k[1] != "newcomer"} == previous_of(p)
    assert _within_budget(more)


@settings(max_examples=300, deadline=None)
@given(pools(), st.data())
def test_a_model_removed_moves_nothing_else(
    pool: tuple[list[PoolItem], int, int], data: st.DataObject
) -> None:
    items, replicas, budget = pool
    standalone = [
        i for i in items if not i.is_ensemble and not any(i.key in e.members for e in items)
    ]
    if not standalone:
        return
    gone = data.draw(st.sampled_from(standalone))
    p = place(items, replicas, budget)
    rest = [i for i in items if i.key != gone.key]
    after = place(rest, replicas, budget, previous_of(p))
    for item in rest:
        before_at = p.items[item.key].replicas
        if p.items[item.key].state == "Placed":
            assert after.items[item.key].replicas == before_at


@settings(max_examples=200, deadline=None)
@given(pools(), st.integers(0, 4))
def test_scaling_the_pool_keeps_models_on_replicas_that_stay(
    pool: tuple[list[PoolItem], int, int], new_replicas: int
) -> None:
    items, replicas, budget = pool
    p = place(items, replicas, budget)
    after = place(items, new_replicas, budget, previous_of(p))
    assert _within_budget(after)
    assert _members_co_located(after, items)
    for key, verdict in p.items.items():
        kept = {r for r in verdict.replicas if r < new_replicas}
        wanted = after.items[key].wanted
        if len(kept) <= wanted and p.items[key].state != "DoesNotFit":
            assert kept <= set(after.items[key].replicas)


# --- pods and replicas ---------------------------------------------------------------


def test_pods_take_the_lowest_free_replica_oldest_first() -> None:
    pods = [PoolPod("b", "2024-01-01T00:00:02Z"), PoolPod("a", "2024-01-01T00:00:01Z")]
    assert bind_replicas({}, pods, 3) == ("a", "b", None)


def test_a_pod_keeps_its_replica_and_a_new_pod_takes_a_gone_one() -> None:
    pods = [PoolPod("a", "1"), PoolPod("c", "3")]
    assert bind_replicas({0: "a", 1: "b"}, pods, 2) == ("a", "c")


def test_terminating_and_extra_pods_hold_no_replica() -> None:
    pods = [PoolPod("a", "1", deleting=True), PoolPod("b", "2"), PoolPod("c", "3")]
    assert bind_replicas({0: "a", 1: "b"}, pods, 1) == ("b",)
    assert bind_replicas({0: "a"}, pods, 2) == ("b", "c")


@given(
    st.dictionaries(st.integers(0, 5), st.sampled_from("abcdef"), max_size=6),
    st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=8),
    st.integers(0, 6),
)
def test_each_pod_holds_at_most_one_replica(
    previous: dict[int, str], names: list[str], replicas: int
) -> None:
    bound = bind_replicas(previous, [PoolPod(n, n) for n in names], replicas)
    held = [b for b in bound if b is not None]
    assert len(held) == len(set(held))
    assert len(bound) == replicas
    assert len(held) == min(replicas, len(names))
    for index, pod in previous.items():
        if index < replicas and pod in names and list(previous.values()).count(pod) == 1:
            assert bound[index] == pod
