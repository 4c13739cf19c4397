"""Where the routing table comes from.

A :class:`RouteSource` runs for the gateway's lifetime and calls ``publish``
with a fresh :class:`~tritonfleet.desired.gateway.routes.RouteTable` whenever its
input changes. Both modes share everything downstream (routing, failover,
metrics); only the source differs:

* :class:`StaticRouteSource` — ``--routes FILE``: reads the YAML at start,
  then re-reads it when its mtime changes (a ConfigMap update, an edit). A
  broken edit is logged and the last good table stays in force.
* :class:`ClusterRouteSource` — in-cluster: lists ``TritonModel`` and
  ``ModelEnsemble`` objects (read-only) every ``poll_s`` seconds through
  :class:`~tritonfleet.adapters.kube.KubeClient` and feeds them, with their
  ``status.pods``, to :func:`~tritonfleet.desired.gateway.cluster.routes_from_cluster`.
  Level-based polling rather than a watch: a missed event cannot leave a stale
  route, every gateway replica converges on the same table, and a list of a
  few hundred small objects every two seconds is cheap for the API server.
  The table is re-published only when it changes; an API error keeps the last
  good table.

In-cluster, a route's hosted API key is a reference to a Secret key
(``spec.failover.provider.apiKeySecret``). :class:`ClusterRouteSource` reads
each referenced key from the API server (``get`` on that one Secret, see
:meth:`~tritonfleet.adapters.kube.KubeClient.get_secret_value`) before it
publishes a table naming it, and re-reads it every ``secret_refresh_s``
seconds (30 by default), so a rotated key takes effect without a restart. The
values live in a :class:`ClusterKeyStore`, registered with the log redactor
as they arrive; a failed re-read keeps the last good value. ``--secrets-dir``
(Secrets projected as files) is only a fallback for keys the API server did
not give.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from tritonfleet.adapters.kube import ApiError, KubeClient, SecretValueError
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.desired.gateway.cluster import routes_from_cluster
from tritonfleet.desired.gateway.prices import PriceTable
from tritonfleet.desired.gateway.routes import (
    DEFAULT_TRITON_HTTP_PORT,
    DEFAULT_TRITON_METRICS_PORT,
    ApiKeyRef,
    RoutesError,
    RouteTable,
)
from tritonfleet.desired.gateway.routes_file import load_prices, load_routes
from tritonfleet.gateway.secrets import REDACTOR, KeyStore, MissingKeyError

log = logging.getLogger("tritonfleet.gateway")

Publish = Callable[[RouteTable], None]
SecretId = tuple[str, str, str]  # namespace, name, key

SECRET_REFRESH_S = 30.0


def _secret_id(ref: ApiKeyRef | None) -> SecretId | None:
    if ref is None or not (ref.secret_name and ref.secret_key):
        return None
    return (ref.secret_namespace or "default", ref.secret_name, ref.secret_key)


class ClusterKeyStore(KeyStore):
    """A :class:`KeyStore` whose Secret references are served from values that
    :class:`ClusterRouteSource` read from the API server; ``--secrets-dir``
    files only when the API server gave none."""

    def __init__(self, secrets_dir: Path | None = None) -> None:
        super().__init__(secrets_dir)
        self._secrets_dir_fallback = secrets_dir is not None
        self._values: dict[SecretId, str] = {}
        self._errors: dict[SecretId, str] = {}

    def put(self, ident: SecretId, value: str) -> None:
        value = value.strip()
        REDACTOR.add(value)  # before it can reach any code path that logs
        self._values[ident] = value
        self._errors.pop(ident, None)

    def failed(self, ident: SecretId, error: str) -> None:
        """A read failed (``error`` names the reference only); the last value stays."""
        self._errors[ident] = error

    def error(self, ident: SecretId) -> str | None:
        return self._errors.get(ident)

    def forget(self, keep: set[SecretId]) -> None:
        for ident in set(self._values) - keep:
            del self._values[ident]
        for ident in set(self._errors) - keep:
            del self._errors[ident]

    def get(self, ref: ApiKeyRef | None) -> str | None:
        ident = _secret_id(ref)
        if ident is not None:
            value = self._values.get(ident)
            if value:
                return value
            if not self._secrets_dir_fallback:
                namespace, name, key = ident
                raise MissingKeyError(
                    self._errors.get(ident) or f"secret {namespace}/{name} key {key!r} not read yet"
                )
        return super().get(ref)


class RouteSource(Protocol):
    async def run(self, publish: Publish) -> None: ...


def read_routes(path: Path, prices_path: Path | None = None) -> RouteTable:
    """Read and validate a routes file (and an optional prices file)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise RoutesError([f"cannot read {path}: {err.strerror}"]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise RoutesError([f"{path}{where}: not valid YAML"]) from None
    table = load_routes(doc)
    if prices_path is not None:
        table = RouteTable(table.routes, read_prices(prices_path, table.prices))
    return table


def read_prices(path: Path, base: PriceTable | None = None) -> PriceTable:
    """A ``--prices FILE``: the ``prices`` section of a routes file, alone or
    under a ``prices:`` key (the chart's values)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RoutesError([f"cannot read prices file {path}: {err}"]) from None
    if isinstance(doc, dict) and "prices" in doc:
        doc = doc["prices"]
    return load_prices(doc, base)


class StaticRouteSource:
    def __init__(self, path: Path, prices_path: Path | None = None, poll_s: float = 2.0) -> None:
        self.path = path
        self.prices_path = prices_path
        self.poll_s = poll_s

    def _stamp(self) -> tuple[float, ...]:
        stamps = []
        for p in (self.path, self.prices_path):
            if p is None:
                continue
            try:
                stamps.append(p.stat().st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)

    def load(self) -> RouteTable:
        return read_routes(self.path, self.prices_path)

    async def run(self, publish: Publish) -> None:
        stamp = self._stamp()
        while True:
            await asyncio.sleep(self.poll_s)
            now = self._stamp()
            if now == stamp:
                continue
            stamp = now
            try:
                table = self.load()
            except RoutesError as err:
                log.error(
                    "routes file changed but is invalid; keeping the last good table: %s", err
                )
                continue
            publish(table)
            log.info("routes reloaded from %s: %d models", self.path, len(table.routes))


class ClusterRouteSource:
    def __init__(
        self,
        client: KubeClient,
        namespace: str | Sequence[str] | None = None,
        *,
        prices: PriceTable | None = None,
        poll_s: float = 2.0,
        http_port: int = DEFAULT_TRITON_HTTP_PORT,
        metrics_port: int = DEFAULT_TRITON_METRICS_PORT,
        keys: ClusterKeyStore | None = None,
        secret_refresh_s: float = SECRET_REFRESH_S,
    ) -> None:
        self.client = client
        # None: every namespace (one cluster-wide list); else each one listed.
        self.namespaces: tuple[str | None, ...] = (
            (namespace,) if namespace is None or isinstance(namespace, str) else tuple(namespace)
        ) or (None,)
        self.prices = prices or PriceTable()
        self.poll_s = poll_s
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.keys = keys
        self.secret_refresh_s = secret_refresh_s
        self._problems: tuple[str, ...] = ()
        self._secrets_read: dict[SecretId, float] = {}

    async def load(self) -> RouteTable:
        models: list[TritonModel] = []
        ensembles: list[ModelEnsemble] = []
        bad: list[str] = []
        for namespace in self.namespaces:
            for obj in await self.client.list("TritonModel", namespace):
                try:
                    models.append(TritonModel.from_object(obj))
                except ValidationError:
                    bad.append(_object_name(obj))
            for obj in await self.client.list("ModelEnsemble", namespace):
                try:
                    ensembles.append(ModelEnsemble.from_object(obj))
                except ValidationError:
                    bad.append(_object_name(obj))
        result = routes_from_cluster(
            models,
            ensembles,
            prices=self.prices,
            http_port=self.http_port,
            metrics_port=self.metrics_port,
        )
        problems = result.problems + tuple(f"{n}: not a valid object, skipped" for n in bad)
        if problems != self._problems:
            for problem in problems:
                log.warning("not routed: %s", problem)
            self._problems = problems
        await self.refresh_keys(result.table)
        return result.table

    async def refresh_keys(self, table: RouteTable) -> None:
        """Read the Secret keys ``table`` refers to that are due (never read,
        last read failed, or read more than ``secret_refresh_s`` ago)."""
        if self.keys is None:
            return
        wanted: set[SecretId] = set()
        for route in table.routes.values():
            ident = _secret_id(route.hosted.api_key if route.hosted is not None else None)
            if ident is not None:
                wanted.add(ident)
        now = time.monotonic()
        for ident in sorted(wanted):
            last = self._secrets_read.get(ident)
            if last is not None and now - last < self.secret_refresh_s:
                continue
            try:
                value = await self.client.get_secret_value(*ident)
            except (SecretValueError, ApiError) as err:
                # Retried at the next poll; said once per distinct problem.
                self._secrets_read.pop(ident, None)
                if self.keys.error(ident) != str(err):
                    log.warning("hosted API key: %s (keeping the last value read, if any)", err)
                self.keys.failed(ident, str(err))
                continue
            self._secrets_read[ident] = now
            self.keys.put(ident, value)
        for ident in set(self._secrets_read) - wanted:
            del self._secrets_read[ident]
        self.keys.forget(wanted)

    async def close(self) -> None:
        await self.client.close()

    async def run(self, publish: Publish) -> None:
        last: RouteTable | None = None
        while True:
            started = time.monotonic()
            try:
                table = await self.load()
            except ApiError as err:
                log.warning("listing models failed, keeping the last routing table: %s", err)
            except Exception:  # never let the source die: the table would freeze
                log.exception("building routes failed, keeping the last routing table")
            else:
                took = time.monotonic() - started
                if took > max(1.0, self.poll_s):
                    log.info("listing models took %.1f s", took)
                if table != last:
                    publish(table)
                    if last is None or set(table.routes) != set(last.routes):
                        log.info("routing %d models: %s", len(table.routes), sorted(table.routes))
                    last = table
            await asyncio.sleep(self.poll_s)


def _object_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')} {meta.get('namespace', '')}/{meta.get('name', '?')}"
