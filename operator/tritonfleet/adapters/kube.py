"""The operator's Kubernetes API client: server-side apply, get/list, delete,
status and metadata patches, Events - and nothing else.

It is an async client on aiohttp (the HTTP stack kopf already runs on), so
the operator has one event loop, one TLS stack and no thread pool. kopf owns
the watch streams; this client does the writes the reconciler decides on.
Every request is counted by verb and resource
(``tritonfleet_api_requests_total``): the benchmark and the idle-write check
read those numbers.

This is the only module of the operator that talks to the API server; the
handlers and the scaler call it, through :class:`KubeApi`, with objects built by
``tritonfleet.desired``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import yaml
from prometheus_client import Counter, Histogram

from tritonfleet.desired.kube.objects import FIELD_MANAGER

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


@dataclass(frozen=True)
class Endpoint:
    """How to reach and authenticate to the API server (from kubeconfig or in-cluster)."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None  # PEM
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: bytes | None = None  # PEM
    private_key_path: str | None = None
    private_key_data: bytes | None = None  # PEM
    token: str | None = None
    token_path: str | None = None  # re-read: in-cluster tokens rotate
    default_namespace: str | None = None


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _maybe_b64(data: str | bytes | None) -> bytes | None:
    if data is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----BEGIN") else base64.b64decode(raw)


def endpoint_from_kubeconfig(path: str | os.PathLike[str]) -> Endpoint:
    """The current context of a kubeconfig file (certificates, token, CA; no exec plugins)."""
    config = yaml.safe_load(Path(path).read_text()) or {}
    base = Path(path).resolve().parent

    def named(section: str, name: str) -> Mapping[str, Any]:
        for item in config.get(section) or ():
            if item.get("name") == name:
                return dict(item.get(section.rstrip("s")) or {})
        raise ValueError(f"{path}: no {section.rstrip('s')} named {name!r}")

    def rel(value: str | None) -> str | None:
        return str(base / value) if value and not Path(value).is_absolute() else value

    context_name = config.get("current-context")
    if not context_name:
        raise ValueError(f"{path}: no current-context")
    context = named("contexts", context_name)
    cluster = named("clusters", str(context["cluster"]))
    user = named("users", str(context["user"]))
    return Endpoint(
        server=str(cluster["server"]).rstrip("/"),
        ca_path=rel(cluster.get("certificate-authority")),
        ca_data=_maybe_b64(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=rel(user.get("client-certificate")),
        certificate_data=_maybe_b64(user.get("client-certificate-data")),
        private_key_path=rel(user.get("client-key")),
        private_key_data=_maybe_b64(user.get("client-key-data")),
        token=user.get("token"),
        token_path=rel(user.get("tokenFile")),
        default_namespace=context.get("namespace"),
    )


def endpoint_in_cluster() -> Endpoint | None:
    token = SERVICE_ACCOUNT_DIR / "token"
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not (token.exists() and host and port):
        return None
    namespace = SERVICE_ACCOUNT_DIR / "namespace"
    server_host = f"[{host}]" if ":" in host else host
    return Endpoint(
        server=f"https://{server_host}:{port}",
        ca_path=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        token_path=str(token),
        default_namespace=namespace.read_text().strip() if namespace.exists() else None,
    )


def discover_endpoint(kubeconfig: str | None = None) -> Endpoint:
    """``--kubeconfig``, then ``$KUBECONFIG``, then in-cluster, then ``~/.kube/config``."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if path:
        return endpoint_from_kubeconfig(path)
    in_cluster = endpoint_in_cluster()
    if in_cluster is not None:
        return in_cluster
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return endpoint_from_kubeconfig(default)
    raise ValueError("no kubeconfig found and not running in a cluster")


def _ssl_context(endpoint: Endpoint) -> ssl.SSLContext | bool:
    if not endpoint.server.startswith("https"):
        return False
    if endpoint.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(
        cafile=endpoint.ca_path,
        cadata=endpoint.ca_data.decode() if endpoint.ca_data else None,
    )
    cert, key = endpoint.certificate_path, endpoint.private_key_path
    if endpoint.certificate_data or endpoint.private_key_data:
        # ssl only loads client certificates from files: write them to a private temp dir.
        tmp = Path(tempfile.mkdtemp(prefix="tritonfleet-kube-"))
        if endpoint.certificate_data:
            cert = str(tmp / "client.crt")
            Path(cert).write_bytes(endpoint.certificate_data)
        if endpoint.private_key_data:
            key = str(tmp / "client.key")
            Path(key).touch(mode=0o600)
            Path(key).write_bytes(endpoint.private_key_data)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


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


def traced_session(endpoint: Endpoint, client_label: str) -> aiohttp.ClientSession:
    """An unlimited session for kopf (its watches hold connections open), requests counted.

    kopf accepts a ready-made session (``kopf.AiohttpSession``); counting at the
    session level means the benchmark sees kopf's requests too, not only ours.
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
    headers = {}
    token = endpoint.token
    if endpoint.token_path:
        token = Path(endpoint.token_path).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=_ssl_context(endpoint)),
        headers=headers,
        trace_configs=[trace],
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
    ) -> None:
        self.endpoint = endpoint
        self.field_manager = field_manager
        self._ssl = _ssl_context(endpoint)
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._token = endpoint.token
        self._token_read = 0.0

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"{self.field_manager}-operator"}
        if self.endpoint.token_path and time.monotonic() - self._token_read > 60:
            self._token = Path(self.endpoint.token_path).read_text().strip()
            self._token_read = time.monotonic()
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

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
    ) -> Obj:
        resource = RESOURCES[kind]
        path = resource.path(namespace, name, sub)
        verb = _verb(method, name, patch_type)
        headers = self._headers()
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = (
                _CONTENT_TYPES[patch_type] if patch_type else "application/json"
            )
            data = json.dumps(body, separators=(",", ":")).encode()
        started = time.perf_counter()
        code = "error"
        try:
            async with self._session_now().request(
                method, self.endpoint.server + path, params=params, data=data, headers=headers
            ) as response:
                code = str(response.status)
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            # One error type for callers: a connection problem is an API error without a status.
            raise ApiError(
                0, "ConnectionError", str(error) or type(error).__name__, verb, path
            ) from error
        finally:
            API_REQUESTS.labels("reconciler", verb, resource.plural, code).inc()
            API_LATENCY.labels(verb).observe(time.perf_counter() - started)
        payload: Obj = json.loads(text) if text and text.lstrip().startswith("{") else {}
        if response.status >= 400:
            raise ApiError(
                response.status,
                str(payload.get("reason") or response.reason or ""),
                str(payload.get("message") or text[:500]),
                verb,
                path,
            )
        return payload

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
