"""The operator's own list-then-watch streams (adapters.kube_watch.ResourceStream)
against the real API server: a list in pages hands over every object and says which
were there; the watch delivers what changes after it; a watch call the server ends is
resumed where it stopped without listing again; a resourceVersion the server no longer
has ("410 Gone", either form) is answered by a fresh list. What each event wakes:
tests/unit/test_watches.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.faulty_apiserver import FaultyApiServer
from hack.devtools.testbed import Testbed
from tritonfleet.adapters import kube_watch
from tritonfleet.adapters.kube import KubeClient, Obj, endpoint_from_kubeconfig
from tritonfleet.adapters.kube_watch import ResourceStream

pytestmark = pytest.mark.integration

SELECTOR = "tritonfleet.io/test=watch"


class Recorder:
    """A WatchSink that keeps what it was told."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, str]] = {}  # name -> data
        self.events: list[tuple[str, str]] = []
        self.lists: list[set[tuple[str, str]]] = []

    def upsert(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.objects[name] = obj.get("data") or {}
        self.events.append(("upsert", name))

    def delete(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.objects.pop(name, None)
        self.events.append(("delete", name))

    def listed(self, kind: str, namespace: str | None, present: set[tuple[str, str]]) -> None:
        self.lists.append(present)


class CountingClient(KubeClient):
    """The real client, counting list pages and watch calls."""

    pages = 0
    watches = 0

    async def request(self, method: str, kind: str, *args: Any, **kwargs: Any) -> Obj:
        if method == "GET" and "limit" in (kwargs.get("params") or {}):
            self.pages += 1
        return await super().request(method, kind, *args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        self.watches += 1
        return super().stream(*args, **kwargs)


def configmap(name: str, value: str = "1") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"tritonfleet.io/test": "watch"}},
            "data": {"value": value},
        }
    )


async def until(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within:.0f}s: {what}")
        await asyncio.sleep(0.05)


def streaming(
    testbed: Testbed,
    namespace: str,
    scenario: Callable[[ResourceStream, Recorder, CountingClient], Awaitable[None]],
    kubeconfig: Path | None = None,
    **options: Any,
) -> None:
    async def main() -> None:
        endpoint = endpoint_from_kubeconfig(kubeconfig or testbed.kubeconfig)
        client = CountingClient(endpoint, label="test")
        recorder = Recorder()
        stream = ResourceStream(
            client, "ConfigMap", namespace, recorder, label_selector=SELECTOR, **options
        )
        task = asyncio.create_task(stream.run())
        try:
            await scenario(stream, recorder, client)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()

    asyncio.run(main())


@pytest.fixture
def ns(testbed: Testbed) -> Iterator[str]:
    with testbed.namespace("watch") as name:
        yield name


def test_a_paged_list_then_every_change_after_it(
    testbed: Testbed, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_watch, "PAGE_SIZE", 2)
    for i in range(5):
        testbed.apply(configmap(f"cm-{i}"), namespace=ns)

    async def scenario(stream: ResourceStream, seen: Recorder, client: CountingClient) -> None:
        await until(lambda: bool(seen.lists), "the list to complete")
        assert seen.lists == [{(ns, f"cm-{i}") for i in range(5)}]
        assert client.pages == 3  # 2 + 2 + 1
        await until(lambda: client.watches == 1, "the watch to open")
        await asyncio.to_thread(testbed.apply, configmap("cm-new"), namespace=ns)
        await asyncio.to_thread(testbed.apply, configmap("cm-0", "2"), namespace=ns)
        await asyncio.to_thread(testbed.kubectl, "delete", "configmap", "cm-1", "-n", ns)
        await until(
            lambda: (
                "cm-new" in seen.objects
                and seen.objects["cm-0"] == {"value": "2"}
                and "cm-1" not in seen.objects
            ),
            "the watch to deliver the create, the update and the delete",
        )
        assert stream.lists == 1

    streaming(testbed, ns, scenario)


def test_a_watch_the_server_ends_is_resumed_without_listing_again(
    testbed: Testbed, ns: str
) -> None:
    async def scenario(stream: ResourceStream, seen: Recorder, client: CountingClient) -> None:
        await until(lambda: client.watches >= 3, "the server to end two watch calls", 60)
        await asyncio.to_thread(testbed.apply, configmap("late"), namespace=ns)
        await until(lambda: "late" in seen.objects, "the resumed watch to deliver it")
        assert stream.lists == 1
        assert client.pages == 1
        assert seen.events == [("upsert", "late")]  # nothing delivered twice

    streaming(testbed, ns, scenario, server_timeout=2.0)


@pytest.mark.parametrize("form", ["event", "status"])
def test_a_resource_version_the_server_no_longer_has_means_a_fresh_list(
    testbed: Testbed, ns: str, tmp_path: Path, form: str
) -> None:
    """Both forms of "410 Gone": an ERROR event in the stream (the watch cache) and an
    HTTP 410 before it (etcd). A young testbed never compacts what a watch asks for
    (its watch cache replays its whole store), so the proxy in front of it answers the
    first watch from a version as a server that has compacted it does."""
    testbed.apply(configmap("there"), namespace=ns)
    proxy = FaultyApiServer(testbed.kubeconfig).start()
    proxy.expire_next_watch(form)

    async def scenario(stream: ResourceStream, seen: Recorder, client: CountingClient) -> None:
        await until(lambda: stream.lists == 1, "a list after the 410")
        assert client.watches >= 1  # it watched first, from the old version
        assert proxy.counts["410"] == 1
        assert seen.lists == [{(ns, "there")}]
        await until(lambda: client.watches >= 2, "the watch from the fresh list")
        await asyncio.to_thread(testbed.apply, configmap("after"), namespace=ns)
        await until(lambda: "after" in seen.objects, "the new watch to deliver it")
        assert seen.events == [("upsert", "there"), ("upsert", "after")]  # nothing twice

    def from_an_old_version(
        stream: ResourceStream, seen: Recorder, client: CountingClient
    ) -> Awaitable[None]:
        stream.resource_version = "1"  # long gone on a server that compacted it
        return scenario(stream, seen, client)

    try:
        streaming(testbed, ns, from_an_old_version, kubeconfig=proxy.kubeconfig(tmp_path / "kc"))
    finally:
        proxy.stop()
