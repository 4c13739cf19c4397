"""The operator's Kubernetes API client: server-side apply, get/list, delete,
status and metadata patches, Events - and nothing else.

It is an async client on aiohttp (the HTTP stack kopf already runs on), so
the operator has one event loop, one TLS stack and no thread pool. kopf owns
the watch streams; this client does the writes the reconciler decides on.
Every request is counted by verb and resource
(``tritonfleet_api_requests_total``): the benchmark and the idle-write check
read those numbers.

This is the only module of the operator and the gateway that talks to the API
server; the handlers and the scaler call it, through :class:`KubeApi`, with objects
built by ``tritonfleet.desired``. Where the server is and who we are come from
``adapters.kubeconfig`` (kubeconfig merged as kubectl merges it, or the pod's service
account); the headers and TLS of every request, refreshed and retried as client-go
does (exec plugins, rotating tokens, 401, 429 Retry-After), from ``adapters.kube_auth``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import aiohttp
from prometheus_client import Counter, Histogram

from tritonfleet.adapters.kube_auth import (
    CredentialError,
    KubeCredentials,
    endpoint_credentials,
    expiration_of,
    kube_middleware,
)
from tritonfleet.adapters.kubeconfig import (
    Endpoint,
    KubeconfigError,
    discover_endpoint,
    endpoint_from_kubeconfig,
)
from tritonfleet.desired.kube.objects import FIELD_MANAGER

__all__ = [
    "RESOURCES",
    "ApiError",
    "CredentialError",
    "Endpoint",
    "KubeApi",
    "KubeClient",
    "KubeconfigError",
    "Resource",
    "SecretValueError",
    "check_access",
    "discover_endpoint",
    "endpoint_from_kubeconfig",
    "traced_session",
]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PatchType = Literal["merge", "strategic", "json", "apply"]

_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}

API_REQUESTS = Counter(
    "tritonfleet_api_requests_total",
    "Kubernetes API requests the operator issued, by client (reconciler: our writes and "
    "reads; kopf: its watches and its own patches), verb, resource and HTTP code.",
    ["client", "verb", "resource", "code"],
)
API_LATENCY = Histogram(
    "tritonfleet_api_request_seconds",
    "Latency of the reconciler's Kubernetes API requests.",
    ["verb"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

WRITE_VERBS = frozenset({"create", "apply", "patch", "update", "delete"})


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    group_version: str  # "v1" or "apps/v1"
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


RESOURCES: dict[str, Resource] = {
    "ConfigMap": Resource("v1", "configmaps"),
    "Service": Resource("v1", "services"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "Event": Resource("v1", "events"),
    "Namespace": Resource("v1", "namespaces", namespaced=False),
    "Pod": Resource("v1", "pods"),
    "Secret": Resource("v1", "secrets"),
    "Deployment": Resource("apps/v1", "deployments"),
    "Job": Resource("batch/v1", "jobs"),
    "HorizontalPodAutoscaler": Resource("autoscaling/v2", "horizontalpodautoscalers"),
    "Lease": Resource("coordination.k8s.io/v1", "leases"),
    "TritonModel": Resource("tritonfleet.io/v1alpha1", "tritonmodels"),
    "ModelEnsemble": Resource("tritonfleet.io/v1alpha1", "modelensembles"),
    "TritonServerPool": Resource("tritonfleet.io/v1alpha1", "tritonserverpools"),
    "SelfSubjectReview": Resource(
        "authentication.k8s.io/v1", "selfsubjectreviews", namespaced=False
    ),
}


class ApiError(Exception):
    """A non-2xx answer of the API server, with its Status reason and message."""

    def __init__(self, status: int, reason: str, message: str, verb: str, path: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{verb} {path}: {status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class SecretValueError(LookupError):
    """A Secret, or the key asked for in it, is missing or unreadable.

    The message names namespace, name and key - never a value.
    """


def _verb(method: str, name: str | None, patch_type: str | None) -> str:
    if method == "GET":
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "DELETE":
        return "delete"
    return "apply" if patch_type == "apply" else "patch"


def _resource_of(path: str) -> tuple[str, bool]:
    """(plural, names an object?) of a REST path (``/apis/apps/v1/namespaces/x/deployments/y``)."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    # Drop the API prefix: api/v1 or apis/<group>/<version>.
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(parts) >= 3 and parts[0] == "namespaces":
        parts = parts[2:]
    if not parts:
        return "discovery", False
    return parts[0], len(parts) >= 2


async def traced_session(
    endpoint: Endpoint, client_label: str
) -> tuple[aiohttp.ClientSession, datetime | None]:
    """An unlimited session for kopf (its watches hold connections open), requests counted,
    and when it must be replaced (an exec plugin's client certificate expires; else None).

    kopf accepts a ready-made session (``kopf.AiohttpSession``); counting at the
    session level means the benchmark sees kopf's requests too, not only ours. The
    credentials come from the same middleware as the reconciler's client.
    """
    trace = aiohttp.TraceConfig()

    async def on_end(
        _session: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        method = params.method.upper()
        query = params.url.query
        resource, named = _resource_of(params.url.path)
        verb = "watch" if query.get("watch") in ("true", "1") else None
        if verb is None:
            content = params.headers.get("Content-Type", "")
            patch_type = "apply" if "apply-patch" in content else None
            verb = _verb(method, "x" if named else None, patch_type)
        API_REQUESTS.labels(client_label, verb, resource, str(params.response.status)).inc()

    trace.on_request_end.append(on_end)
    credentials = endpoint_credentials(endpoint)
    tls = await credentials.ssl_context()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=tls),
        trace_configs=[trace],
        middlewares=(kube_middleware(credentials),),
        proxy=endpoint.proxy_url,
    )
    return session, expiration_of(credentials)


def _status_error(
    response: aiohttp.ClientResponse, payload: Obj, text: str, verb: str, path: str
) -> ApiError:
    """The error of a non-2xx answer, in the API server's own words (its Status)."""
    return ApiError(
        response.status,
        str(payload.get("reason") or response.reason or ""),
        str(payload.get("message") or text[:500]),
        verb,
        path,
    )


class KubeApi(Protocol):
    """The calls the operator's processes make on the API server: what
    :class:`KubeClient` does, and what a stand-in must do in a unit test."""

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None: ...
    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]: ...
    async def apply(self, obj: Obj, *, force: bool = True) -> Obj: ...
    async def create(self, obj: Obj) -> Obj: ...
    async def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        sub: str | None = None,
    ) -> Obj: ...
    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj: ...
    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: Literal["Background", "Foreground", "Orphan"] = "Background",
    ) -> bool: ...
    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "tritonfleet-operator",
    ) -> None: ...
    async def close(self) -> None: ...


class KubeClient:
    """Async Kubernetes client for the reconciler's requests (see the module docstring)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        field_manager: str = FIELD_MANAGER,
        max_connections: int = 32,
        timeout: float = 30.0,
        label: str = "reconciler",
    ) -> None:
        self.endpoint = endpoint
        self.label = label  # the ``client`` label of its requests in tritonfleet_api_requests_total
        self.field_manager = field_manager
        self.credentials: KubeCredentials = endpoint_credentials(endpoint)
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._streams: aiohttp.ClientSession | None = None  # watches: one connection each
        self._streams_tls: tuple[int, float | None] = (-1, None)
        self._session_tls: tuple[int, float | None] = (-1, None)
        self._headers = {"Accept": "application/json", "User-Agent": f"{field_manager}-operator"}

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _session_now(self) -> aiohttp.ClientSession:
        """The session, renewed when the client certificate changed or is about to expire."""
        self._session, self._session_tls = await self._renewed(
            self._session, self._session_tls, limit=self._max_connections, timeouts=self._timeout
        )
        return self._session

    async def _streams_now(self, read_timeout: float) -> aiohttp.ClientSession:
        """The watches' session: no connection limit (open watches never hold back the
        writes), renewed like :meth:`_session_now`."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        self._streams, self._streams_tls = await self._renewed(
            self._streams, self._streams_tls, limit=0, timeouts=timeout
        )
        return self._streams

    async def _renewed(
        self,
        session: aiohttp.ClientSession | None,
        tls_of: tuple[int, float | None],
        *,
        limit: int,
        timeouts: aiohttp.ClientTimeout,
    ) -> tuple[aiohttp.ClientSession, tuple[int, float | None]]:
        tls = await self.credentials.ssl_context()
        expires = self.credentials.certificate_expires_at
        stale = tls_of[0] != self.credentials.tls_generation or (
            expires is not None and expires - time.time() < 60
        )
        if session is not None and not session.closed and not stale:
            return session, tls_of
        fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ssl=tls),
            timeout=timeouts,
            json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
            middlewares=(kube_middleware(self.credentials),),
            proxy=self.endpoint.proxy_url,
        )
        if session is not None and not session.closed:
            await session.close()  # requests in flight on it finish or fail and are retried
        return fresh, (self.credentials.tls_generation, expires)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._streams is not None:
            await self._streams.close()
            self._streams = None

    async def request(
        self,
        method: str,
        kind: str,
        namespace: str | None = None,
        name: str | None = None,
        *,
        sub: str | None = None,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        patch_type: PatchType | None = None,
        accept: str | None = None,
        verb: str | None = None,
    ) -> Obj:
        resource = RESOURCES[kind]
        path = resource.path(namespace, name, sub)
        verb = verb or _verb(method, name, patch_type)
        headers = dict(self._headers)
        if accept:
            headers["Accept"] = accept
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = (
                _CONTENT_TYPES[patch_type] if patch_type else "application/json"
            )
            data = json.dumps(body, separators=(",", ":")).encode()
        started = time.perf_counter()
        code = "error"
        try:
            session = await self._session_now()
            async with session.request(
                method, self.endpoint.server + path, params=params, data=data, headers=headers
            ) as response:
                code = str(response.status)
                text = await response.text()
        except CredentialError as error:
            # No credentials, no request: the message says which plugin or file failed.
            raise ApiError(0, "CredentialError", str(error), verb, path) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            # One error type for callers: a connection problem is an API error without a status.
            raise ApiError(
                0, "ConnectionError", str(error) or type(error).__name__, verb, path
            ) from error
        finally:
            API_REQUESTS.labels(self.label, verb, resource.plural, code).inc()
            API_LATENCY.labels(verb).observe(time.perf_counter() - started)
        payload: Obj = json.loads(text) if text and text.lstrip().startswith("{") else {}
        if response.status >= 400:
            raise _status_error(response, payload, text, verb, path)
        return payload

    @contextlib.asynccontextmanager
    async def stream(
        self, kind: str, namespace: str | None, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[aiohttp.StreamReader]:
        """A long-lived GET (a watch): the response body as it arrives.

        Streams have their own connection pool, without a limit, so that open watches
        never hold back the writes; ``read_timeout`` ends a stream that went silent.
        """
        resource = RESOURCES[kind]
        path = resource.path(namespace)
        verb = "watch" if params.get("watch") in ("true", "1") else "list"
        code = "error"
        try:
            streams = await self._streams_now(read_timeout)
            async with streams.get(
                self.endpoint.server + path, params=dict(params), headers=self._headers
            ) as response:
                code = str(response.status)
                if response.status >= 400:
                    text = await response.text()
                    payload = json.loads(text) if text.lstrip().startswith("{") else {}
                    raise _status_error(response, payload, text, verb, path)
                yield response.content
        except CredentialError as error:
            raise ApiError(0, "CredentialError", str(error), verb, path) from error
        finally:
            API_REQUESTS.labels(self.label, verb, resource.plural, code).inc()

    # --- reads ---------------------------------------------------------------------------

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", kind, namespace, name)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", kind, namespace, params=params)
        items: list[Obj] = result.get("items") or []
        return items

    async def get_raw(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """GET any API path (an aggregated API, a pod's proxy) and return the body, as
        ``kubectl get --raw`` does; a non-2xx answer raises :class:`ApiError`."""
        headers = dict(self._headers)
        headers["Accept"] = "*/*"
        try:
            session = await self._session_now()
            async with session.get(
                self.endpoint.server + path, params=params, headers=headers
            ) as response:
                text = await response.text()
        except CredentialError as error:
            raise ApiError(0, "CredentialError", str(error), "get", path) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise ApiError(0, "ConnectionError", reason, "get", path) from error
        finally:
            API_REQUESTS.labels(self.label, "get", _resource_of(path)[0], "raw").inc()
        if response.status >= 400:
            raise ApiError(response.status, response.reason or "", text[:500], "get", path)
        return text

    async def get_secret_value(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of ``key`` in Secret ``namespace/name``.

        The value is never logged and never part of an exception: a missing
        Secret or key raises :class:`SecretValueError` naming only the
        reference; other API errors (403 ...) raise :class:`ApiError`, whose
        message comes from the API server's Status, not from the Secret.
        """
        where = f"secret {namespace}/{name}"
        try:
            obj = await self.request("GET", "Secret", namespace, name)
        except ApiError as error:
            if error.not_found:
                raise SecretValueError(f"{where} not found (wanted key {key!r})") from None
            raise
        data = obj.get("data") or {}
        if key not in data:
            raise SecretValueError(f"{where} has no key {key!r}")
        try:
            return base64.b64decode(str(data[key]), validate=True).decode()
        except ValueError:  # binascii.Error, UnicodeDecodeError
            # No chaining: the original exception could quote bytes of the value.
            raise SecretValueError(f"{where}: key {key!r} is not base64-encoded UTF-8") from None

    async def whoami(self) -> str:
        """Who the API server takes us for (a SelfSubjectReview), "" if it cannot say.

        Credential problems raise here, at start, with the plugin's or file's own message,
        instead of as an endless retry later; a 401 says the server refused them.
        """
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        try:
            # Counted as a "review": the API server stores nothing, so it is no write.
            answer = await self.request("POST", "SelfSubjectReview", body=review, verb="review")
        except ApiError as error:
            if error.status == 401:
                raise CredentialError(
                    f"the API server refused the credentials ({self.endpoint.auth_kind}, "
                    f"{self.endpoint.source}): {error.message}"
                ) from None
            if error.reason == "CredentialError":
                raise CredentialError(error.message) from None
            return ""  # an older server, a policy forbidding the review, or unreachable now
        user = (answer.get("status") or {}).get("userInfo") or {}
        return str(user.get("username") or "")

    # --- writes --------------------------------------------------------------------------

    async def apply(self, obj: Obj, *, force: bool = True) -> Obj:
        """Server-side apply ``obj`` as the ``tritonfleet`` field manager."""
        meta = obj["metadata"]
        params = {"fieldManager": self.field_manager, "force": "true" if force else "false"}
        return await self.request(
            "PATCH",
            obj["kind"],
            meta.get("namespace"),
            meta["name"],
            params=params,
            body=obj,
            patch_type="apply",
        )

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        return await self.request(
            "POST",
            obj["kind"],
            meta.get("namespace"),
            params={"fieldManager": self.field_manager},
            body=obj,
        )

    async def patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        sub: str | None = None,
    ) -> Obj:
        return await self.request(
            "PATCH",
            kind,
            namespace,
            name,
            sub=sub,
            params={"fieldManager": self.field_manager},
            body=patch,
            patch_type=patch_type,
        )

    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch ``/status``; include ``metadata.resourceVersion`` for a conditional write."""
        return await self.patch(kind, namespace, name, patch, patch_type="merge", sub="status")

    async def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: Literal["Background", "Foreground", "Orphan"] = "Background",
    ) -> bool:
        """Delete; True if it existed."""
        try:
            await self.request(
                "DELETE",
                kind,
                namespace,
                name,
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": propagation,
                },
            )
        except ApiError as error:
            if error.not_found:
                return False
            raise
        return True

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type_: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "tritonfleet-operator",
    ) -> None:
        """A core/v1 Event on ``involved`` (what ``kubectl describe`` shows)."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or self.endpoint.default_namespace or "default"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name'][:200]}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": os.environ.get("HOSTNAME", component),
            "action": "Reconcile",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", "Event", namespace, body=event)


async def check_access(endpoint: Endpoint) -> str:
    """Credentials work (or :class:`CredentialError` says why not); the user name if known."""
    async with KubeClient(endpoint, timeout=30) as client:
        return await client.whoami()
