"""The gateway's live route table (gateway/state.py) and its refresh from the cluster
(gateway/sources.py ClusterRouteSource): what a reload keeps and forgets, and how
the table follows TritonModel objects, their pods' revisions and their key Secrets.

In-process: the real KubeClient against a stand-in of the Kubernetes API that
answers the gateway's list and get calls as the API server does
(tests/support/kube_api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.support.builders import model_doc, tensor
from tests.support.gateway import run, serve, until
from tests.support.kube_api import KubeAPI
from tritonfleet import __version__
from tritonfleet.adapters.kube import Endpoint as KubeEndpoint
from tritonfleet.adapters.kube import KubeClient
from tritonfleet.desired.gateway.routes import Endpoint, Route, RouteTable
from tritonfleet.desired.gateway.routes_file import load_routes
from tritonfleet.gateway.breaker import BreakerState
from tritonfleet.gateway.metrics import GatewayMetrics
from tritonfleet.gateway.sources import ClusterKeyStore, ClusterRouteSource
from tritonfleet.gateway.state import GatewayState

# --- what a reload keeps ----------------------------------------------------------------


def table(pods: str, failure_threshold: int = 3, name: str = "llm") -> RouteTable:
    endpoints = [{"url": f"http://10.0.0.{ord(p) - 96}:8000", "name": f"pod-{p}"} for p in pods]
    return load_routes(
        {
            "models": [
                {
                    "name": name,
                    "tritonModel": "toy_llm",
                    "endpoints": endpoints,
                    "breaker": {"failureThreshold": failure_threshold},
                }
            ]
        }
    )


def test_a_reload_keeps_what_the_gateway_learnt_about_pods_that_stay() -> None:
    state = GatewayState(GatewayMetrics())
    state.publish(table("ab"))
    a = state.routes["llm"].pods["http://10.0.0.1:8000"]
    a.healthy = False
    a.breaker.failure(hard=True)
    state.publish(table("ac"))  # b went, c came
    pods = state.routes["llm"].pods
    assert set(pods) == {"http://10.0.0.1:8000", "http://10.0.0.3:8000"}
    assert pods["http://10.0.0.1:8000"] is a and a.breaker.state is BreakerState.OPEN
    assert pods["http://10.0.0.3:8000"].healthy
    assert pods["http://10.0.0.3:8000"].breaker.state is BreakerState.CLOSED
    # the plan sees it: the open pod is not tried
    assert [e.name for e in state.plan_for(state.routes["llm"]).pods] == ["pod-c"]


def test_a_new_breaker_policy_starts_from_fresh_breakers() -> None:
    state = GatewayState(GatewayMetrics())
    state.publish(table("a"))
    state.routes["llm"].pods["http://10.0.0.1:8000"].breaker.failure(hard=True)
    state.publish(table("a", failure_threshold=5))
    rr = state.routes["llm"]
    assert rr.pods["http://10.0.0.1:8000"].breaker.state is BreakerState.CLOSED
    assert rr.route.breaker.failure_threshold == 5


def test_a_removed_model_leaves_the_table_and_its_gauge() -> None:
    metrics = GatewayMetrics()
    state = GatewayState(metrics)
    state.publish(RouteTable({**table("a").routes, **table("b", name="other").routes}))
    state.publish(table("a"))
    assert set(state.routes) == {"llm"}
    rendered = metrics.render().decode()
    assert 'ready_pods{model="llm"} 1.0' in rendered
    assert 'ready_pods{model="other"}' not in rendered


def test_per_pod_series_leave_metrics_with_their_pods() -> None:
    """Five rollouts of three pods: the breaker, in-flight and queue-time series name the
    three live pods only, not the fifteen ever seen."""
    metrics = GatewayMetrics()
    state = GatewayState(metrics)
    for rollout in range(5):
        letters = "".join(chr(ord("a") + 3 * rollout + i) for i in range(3))
        state.publish(table(letters))
        for pod in state.routes["llm"].pods.values():
            pod.queue_ms = 12.5
    series = [
        line
        for line in metrics.render().decode().splitlines()
        if 'pod="pod-' in line and not line.startswith("#")
    ]
    live = {"pod-m", "pod-n", "pod-o"}
    for name in ("breaker_state", "outstanding_requests", "triton_queue_time_seconds"):
        named = [line for line in series if line.startswith(f"tritonfleet_gateway_{name}{{")]
        assert {line.split('pod="')[1].split('"')[0] for line in named} == live, name
    assert 'triton_queue_time_seconds{model="llm",pod="pod-m"} 0.0125' in "\n".join(series)
    # The model-wide breaker stays as long as the model does.
    assert 'breaker_state{backend="triton",model="llm",pod="*"} 0.0' in metrics.render().decode()


def test_build_info_names_the_version() -> None:
    rendered = GatewayMetrics().render().decode()
    assert f'tritonfleet_build_info{{component="gateway",version="{__version__}"}} 1.0' in rendered


def test_a_plan_counts_requests_in_flight_per_pod() -> None:
    state = GatewayState(GatewayMetrics())
    state.publish(table("ab"))
    state.outstanding["http://10.0.0.1:8000"] = 3
    assert [e.name for e in state.plan_for(state.routes["llm"]).pods] == ["pod-b", "pod-a"]


# --- refreshed from the cluster ------------------------------------------------------------


def chat_model(revision: str, pods: list[tuple[str, str, str]]) -> dict[str, Any]:
    doc = model_doc(
        "chat",
        "team-a",
        config={
            "backend": "python",
            "decoupled": True,
            "inputs": [tensor("text_input", "TYPE_STRING")],
            "outputs": [tensor("text_output", "TYPE_STRING")],
        },
        failover={
            "provider": {
                "baseUrl": "https://api.deepseek.com/v1",
                "model": "deepseek-chat",
                "apiKeySecret": {"name": "deepseek", "key": "api-key"},
            }
        },
    )
    doc["status"] = {
        "revision": revision,
        "pods": [{"name": n, "ip": ip, "revision": rev, "state": "Ready"} for n, ip, rev in pods],
    }
    return doc


@contextlib.asynccontextmanager
async def cluster_source(kube: KubeAPI) -> AsyncIterator[tuple[GatewayState, ClusterKeyStore]]:
    """The cluster source publishing into a state, polling every 20 ms."""
    state = GatewayState(GatewayMetrics())
    keys = ClusterKeyStore()
    async with serve(kube.app) as url:
        source = ClusterRouteSource(
            KubeClient(KubeEndpoint(server=url), timeout=5),
            poll_s=0.02,
            keys=keys,
            secret_refresh_s=0.05,
        )
        task = asyncio.create_task(source.run(state.publish))
        try:
            yield state, keys
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await source.close()


def endpoints(state: GatewayState, model: str = "chat") -> list[str]:
    rr = state.routes.get(model)
    return [] if rr is None else [p.endpoint.name for p in rr.pods.values()]


def test_the_table_follows_pods_revisions_and_deletions() -> None:
    async def main() -> None:
        kube = KubeAPI()
        kube.secrets[("team-a", "deepseek")] = {"api-key": "sk-first-0123456789abcdef"}
        kube.put(chat_model("r1", [("p1", "10.0.0.1", "r1"), ("p2", "10.0.0.2", "r0")]))
        async with cluster_source(kube) as (state, keys):
            await until(lambda: endpoints(state) == ["p1", "p2"], "the pods serving the model")
            route: Route = state.routes["chat"].route
            assert route.origin == "TritonModel team-a/chat" and route.generate is not None
            hosted = route.hosted
            assert hosted is not None
            assert keys.get(hosted.api_key) == "sk-first-0123456789abcdef"
            p1 = state.routes["chat"].pods["http://10.0.0.1:8000"]
            p1.breaker.failure(hard=True)

            # a new pod becomes Ready: p1 stays, with what the gateway knew about it
            kube.put(chat_model("r1", [("p1", "10.0.0.1", "r1"), ("p3", "10.0.0.3", "r1")]))
            await until(lambda: endpoints(state) == ["p1", "p3"], "the new pod routed")
            pods = state.routes["chat"].pods
            assert pods["http://10.0.0.1:8000"] is p1 and p1.breaker.state is BreakerState.OPEN
            assert pods["http://10.0.0.3:8000"].breaker.state is BreakerState.CLOSED

            # a rollout: p4 serves r2 beside p1 at r1; both answer until p1 goes
            kube.put(chat_model("r1", [("p1", "10.0.0.1", "r1"), ("p4", "10.0.0.4", "r2")]))
            await until(lambda: endpoints(state) == ["p1", "p4"], "both revisions routed")
            assert state.routes["chat"].pods["http://10.0.0.4:8000"].endpoint == Endpoint(
                "p4", "http://10.0.0.4:8000", "http://10.0.0.4:8002/metrics", "r2"
            )
            kube.put(chat_model("r2", [("p3", "10.0.0.3", "r2"), ("p4", "10.0.0.4", "r2")]))
            await until(lambda: endpoints(state) == ["p3", "p4"], "the old pods gone")

            # a rotated key is read again without a restart
            kube.secrets[("team-a", "deepseek")] = {"api-key": "sk-second-0123456789abcdef"}
            await until(
                lambda: keys.get(hosted.api_key) == "sk-second-0123456789abcdef",
                "the rotated key in use",
            )

            # the API server failing keeps the last good table
            kube.fail_status = 500
            seen = len(kube.requests)
            await until(lambda: len(kube.requests) >= seen + 3, "three failed polls")
            assert endpoints(state) == ["p3", "p4"]
            kube.fail_status = None

            kube.delete("TritonModel", "team-a", "chat")
            await until(lambda: "chat" not in state.routes, "the deleted model unrouted")

    run(main())
