"""List-then-watch streams of the API server: how the operator's memory is filled.

One :class:`ResourceStream` follows one resource in one namespace (or in all of them):
it lists in pages, hands every object to a :class:`WatchSink`, says when the list is
complete (with the names it held, so the sink can drop what went while nobody was
watching), then watches from the list's ``resourceVersion`` for ever. A watch call
ends every ``server_timeout`` seconds (the API server closes it) and is resumed from
the last ``resourceVersion`` seen, bookmarks included; "410 Gone" (that version was
compacted away) or a broken connection after retries means a fresh list.

Why not kopf's watches: kopf runs every event of every watched object through its
handler machinery (a deep copy of the body, per-object memories, a diff base for
change handlers the operator does not use), which was about a third of the
operator's CPU at a thousand models and a good part of its memory. The operator only
needs the events, and summarises each one at once (``handlers.watches``); kopf still
runs the process (startup, cleanup, peering).

Where it sits: ``adapters`` (the only layer doing I/O). The sink is
``handlers.watches.Watches``; requests are made and counted by
:class:`~tritonfleet.adapters.kube.KubeClient` (verbs ``list`` and ``watch``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp

from tritonfleet.adapters.kube import ApiError, KubeClient, Obj

log = logging.getLogger("tritonfleet.watch")

SERVER_TIMEOUT = 300.0  # s; the API server ends each watch call after about this long
PAGE_SIZE = 500  # objects per list page: bounded memory for a big list
MAX_BACKOFF = 30.0
CHUNK = 1 << 20  # watch lines can be far longer than aiohttp's readline limit (a big ConfigMap)


class WatchSink(Protocol):
    """Where a stream's objects go (``handlers.watches``)."""

    def upsert(self, kind: str, obj: Obj) -> None:
        """An object as it is now: listed, added or modified."""

    def delete(self, kind: str, obj: Obj) -> None:
        """An object went (its last state)."""

    def listed(self, kind: str, namespace: str | None, present: set[tuple[str, str]]) -> None:
        """A list is complete: ``present`` holds (namespace, name) of every object in it;
        anything else the sink knows of ``kind`` in ``namespace`` (all namespaces: None)
        is gone."""


class ResourceVersionGoneError(Exception):
    """The watch's resourceVersion is too old (410): list again."""


async def json_lines(content: aiohttp.StreamReader) -> AsyncIterator[Obj]:
    """The JSON objects of a watch response, one per line, however long the line."""
    pending = b""
    async for chunk in content.iter_chunked(CHUNK):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


class ResourceStream:
    """List, then watch, one resource in one namespace (None: all), for ever."""

    def __init__(
        self,
        client: KubeClient,
        kind: str,
        namespace: str | None,
        sink: WatchSink,
        *,
        label_selector: str | None = None,
        server_timeout: float = SERVER_TIMEOUT,
    ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.sink = sink
        self.label_selector = label_selector
        self.server_timeout = server_timeout
        self.resource_version: str | None = None
        self.lists = 0  # how many complete lists (1 after start; more after 410 or outages)

    @property
    def where(self) -> str:
        return f"{self.kind} in {self.namespace or 'all namespaces'}"

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                failures = 0
            except asyncio.CancelledError:
                raise
            except ResourceVersionGoneError:
                log.debug("%s: resourceVersion too old, listing again", self.where)
                self.resource_version = None
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                failures += 1
                delay = min(MAX_BACKOFF, 2.0 ** min(failures, 5)) * random.uniform(0.5, 1.0)  # noqa: S311
                log.warning("watching %s: %s; again in %.1fs", self.where, error, delay)
                if failures >= 3:
                    self.resource_version = None  # a long outage: start from a fresh list
                await asyncio.sleep(delay)

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def _list(self) -> None:
        present: set[tuple[str, str]] = set()
        params = {**self._params(), "limit": str(PAGE_SIZE)}
        while True:
            page = await self.client.request("GET", self.kind, self.namespace, params=params)
            for obj in page.get("items") or ():
                # List items carry no kind: the sink summarises by kind.
                obj.setdefault("kind", self.kind)
                meta = obj.get("metadata") or {}
                present.add((str(meta.get("namespace") or ""), str(meta.get("name"))))
                self.sink.upsert(self.kind, obj)
            listing = page.get("metadata") or {}
            token = listing.get("continue")
            if not token:
                self.resource_version = str(listing.get("resourceVersion") or "") or None
                break
            params = {**params, "continue": token}
        self.lists += 1
        self.sink.listed(self.kind, self.namespace, present)

    async def _watch(self) -> None:
        params = {
            **self._params(),
            "watch": "true",
            "allowWatchBookmarks": "true",
            # A little jitter: a fleet of streams should not all reconnect at once.
            "timeoutSeconds": str(int(self.server_timeout * random.uniform(0.9, 1.0))),  # noqa: S311
        }
        if self.resource_version:
            params["resourceVersion"] = self.resource_version
        try:
            async with self.client.stream(
                self.kind, self.namespace, params, read_timeout=self.server_timeout + 60
            ) as content:
                async for event in json_lines(content):
                    self._handle(event)
        except ApiError as error:
            if error.status == 410:  # refused before the stream began (no watch cache)
                raise ResourceVersionGoneError() from error
            raise

    def _handle(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise ResourceVersionGoneError()
            raise ApiError(
                int(obj.get("code") or 0),
                str(obj.get("reason") or "WatchError"),
                str(obj.get("message") or obj),
                "watch",
                self.where,
            )
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind in ("ADDED", "MODIFIED"):
            self.sink.upsert(self.kind, obj)
        elif kind == "DELETED":
            self.sink.delete(self.kind, obj)
