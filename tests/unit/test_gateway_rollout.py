"""The gateway during a rollout: the canary split chosen per request (exact shares,
spread out), the chosen revision's pods first and the others as fallback before the
hosted provider, the answering revision named in a header, and the per-revision series
on /metrics that the operator judges the canary on (read back by
desired.kube.analysis), bounded to the revisions being served.

In-process: the real gateway application and two Triton stand-ins on loopback
(tests/support/gateway.py), one per revision."""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator

from hack.devtools.hosted_api import HostedServer
from tests.support.gateway import RunningGateway, run, running_gateway, serve, until
from tests.support.triton_api import TritonAPI
from tritonfleet.desired.gateway.openai_mapping import BUILTIN_TEMPLATES, GenerateMapping
from tritonfleet.desired.gateway.plan import PodView, next_revision, plan
from tritonfleet.desired.gateway.routes import (
    Endpoint,
    Failover,
    HostedTarget,
    Route,
    RouteTable,
    Split,
)
from tritonfleet.desired.kube.analysis import parse_gateway_revisions
from tritonfleet.gateway.app import GatewaySettings

OLD, NEW = "r-old", "r-new"
A = Endpoint("a", "http://a", revision=OLD)
B = Endpoint("b", "http://b", revision=NEW)
C = Endpoint("c", "http://c", revision="r-gone")


def picks(split: Split, n: int) -> list[str | None]:
    credits: dict[str, int] = {}
    out = []
    for _ in range(n):
        revision, credits = next_revision(split, credits)
        out.append(revision)
    return out


def test_each_revision_gets_exactly_its_share_over_a_round_and_spread_out() -> None:
    ten = picks(((OLD, 90), (NEW, 10)), 100)
    assert Counter(ten) == {OLD: 90, NEW: 10}
    where = [i for i, r in enumerate(ten) if r == NEW]
    assert all(b - a == 10 for a, b in itertools.pairwise(where))  # never bunched
    assert Counter(picks(((OLD, 50), (NEW, 50)), 100)) == {OLD: 50, NEW: 50}
    # Within one request of the share at every point, not just per round.
    run_of = picks(((OLD, 70), (NEW, 30)), 1000)
    for i in range(1, 1001):
        assert abs(run_of[:i].count(NEW) - 0.3 * i) <= 1


def test_a_revision_at_zero_is_never_picked_and_no_weight_picks_none() -> None:
    assert set(picks(((OLD, 0), (NEW, 100)), 50)) == {NEW}
    assert picks(((OLD, 0),), 3) == [None, None, None]


def route(split: Split, hosted: bool = True) -> Route:
    failover = Failover("auto", HostedTarget("https://h", "m")) if hosted else None
    return Route("llm", "generate", "toy", (A, B, C), failover=failover, split=split)


def test_the_chosen_revisions_pods_come_first_and_the_others_back_them_up() -> None:
    split = ((OLD, 90), (NEW, 10))
    views = [PodView(A), PodView(B), PodView(C)]
    assert plan(route(split), views, revision=NEW).pods == (B, A)
    assert plan(route(split), views, revision=OLD).pods == (A, B)
    # A revision outside the split (a rolled-back canary's pod still listed) is never tried.
    assert C not in plan(route(split), views, revision=OLD).pods


def test_a_revision_without_a_pod_to_take_the_request_hands_it_to_the_other() -> None:
    split = ((OLD, 90), (NEW, 10))
    p = plan(route(split), [PodView(A), PodView(B, admits=False)], revision=NEW)
    assert p.pods == (A,) and p.reason == "triton"  # continuity before hosted failover
    none = plan(route(split), [PodView(A, healthy=False), PodView(C)], revision=OLD)
    assert none.pods == () and none.reason == "no_ready_replica" and none.hosted


# --- in-process -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_revisions(
    split: Split,
) -> AsyncIterator[tuple[TritonAPI, TritonAPI, RunningGateway]]:
    old, new, hosted = TritonAPI(), TritonAPI(), HostedServer()
    async with serve(old.app) as url_a, serve(new.app) as url_b, serve(hosted.app) as url_h:
        endpoints = (
            Endpoint("pod-old", url_a, url_a + "/metrics", OLD),
            Endpoint("pod-new", url_b, url_b + "/metrics", NEW),
        )
        table = RouteTable(
            {
                "llm": Route(
                    "llm",
                    "generate",
                    "toy_llm",
                    endpoints,
                    generate=GenerateMapping(chat_template=BUILTIN_TEMPLATES["plain"]),
                    failover=Failover("auto", HostedTarget(url_h + "/v1", "gpt-4.1")),
                    split=split,
                )
            }
        )
        settings = GatewaySettings(probe_interval_s=60, queue_interval_s=60)
        async with running_gateway(table, settings=settings) as gw:
            pods = gw.gateway.state.routes["llm"].pods.values()
            await until(lambda: all(p.healthy for p in pods), "every pod probed healthy")
            yield old, new, gw


def test_the_split_is_what_clients_see_and_what_metrics_say() -> None:
    async def main() -> None:
        async with two_revisions(((OLD, 80), (NEW, 20))) as (_, _, gw):
            answered: Counter[str] = Counter()
            for i in range(100):
                resp = await gw.chat("llm", f"request {i}", max_tokens=1)
                assert resp.status == 200
                answered[resp.headers["x-tritonfleet-revision"]] += 1
            assert answered == {OLD: 80, NEW: 20}
            page = await (await gw.client.get("/metrics")).text()
            parsed = parse_gateway_revisions(page)
            assert parsed[("llm", OLD)].ok == 80 and parsed[("llm", NEW)].ok == 20
            assert parsed[("llm", NEW)].buckets[-1][1] == 20  # every ok attempt timed

    run(main())


def test_a_canary_that_raises_is_counted_against_its_revision() -> None:
    """A python model that raises answers 400: the client gets it (as it would from the
    stable revision for a bad request), and the canary's numbers show it."""

    async def main() -> None:
        async with two_revisions(((OLD, 50), (NEW, 50))) as (_, new, gw):
            new.behaviour.fail_status = 400
            new.behaviour.fail_message = "Failed to process the request(s): RuntimeError"
            codes: Counter[int] = Counter()
            for i in range(20):
                resp = await gw.chat("llm", f"request {i}", max_tokens=1)
                codes[resp.status] += 1
            assert codes == {200: 10, 400: 10}
            page = await (await gw.client.get("/metrics")).text()
            parsed = parse_gateway_revisions(page)
            assert (parsed[("llm", NEW)].rejected, parsed[("llm", NEW)].ok) == (10, 0)
            assert parsed[("llm", OLD)].errors == 0

    run(main())


def test_a_failing_canary_pod_is_retried_on_the_stable_one_and_counted_failed() -> None:
    async def main() -> None:
        async with two_revisions(((OLD, 50), (NEW, 50))) as (_, new, gw):
            new.behaviour.fail_status = 503
            for i in range(10):
                resp = await gw.chat("llm", f"request {i}", max_tokens=1)
                assert resp.status == 200 and resp.headers["x-tritonfleet-backend"] == "triton"
                assert resp.headers["x-tritonfleet-revision"] == OLD
            page = await (await gw.client.get("/metrics")).text()
            assert parse_gateway_revisions(page)[("llm", NEW)].failed >= 3

    run(main())


def test_series_of_revisions_no_longer_served_leave_the_page() -> None:
    async def main() -> None:
        async with two_revisions(((OLD, 50), (NEW, 50))) as (_, _, gw):
            for i in range(4):
                await gw.chat("llm", f"request {i}", max_tokens=1)
            state = gw.gateway.state
            rolled_back = state.table.routes["llm"]
            only_old = Route(
                rolled_back.name,
                rolled_back.kind,
                rolled_back.triton_model,
                rolled_back.endpoints[:1],
                generate=rolled_back.generate,
                failover=rolled_back.failover,
                split=((OLD, 100),),
            )
            state.publish(RouteTable({"llm": only_old}))
            page = await (await gw.client.get("/metrics")).text()
            assert set(parse_gateway_revisions(page)) == {("llm", OLD)}

    run(main())
