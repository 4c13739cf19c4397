"""An in-process stand-in for the Kubernetes API, as far as the gateway reads it.

The in-cluster gateway lists ``TritonModel`` and ``ModelEnsemble`` objects
(cluster-wide or per namespace) and gets the Secrets its models' failover keys
are in; this app answers exactly those REST calls as the API server does
(``<Kind>List`` bodies, base64 Secret data, ``Status`` bodies on errors), so the
real :class:`~tritonfleet.adapters.kube.KubeClient` talks to it unchanged. The
real API server (the testbed) runs in the integration tests.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

GROUP_VERSION = "tritonfleet.io/v1alpha1"
KINDS = {"tritonmodels": "TritonModel", "modelensembles": "ModelEnsemble"}


@dataclass
class KubeAPI:
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    fail_status: int | None = None  # answer every request with this status
    requests: list[str] = field(default_factory=list)
    app: web.Application = field(init=False)

    def __post_init__(self) -> None:
        self.app = web.Application()
        r = self.app.router
        r.add_get(f"/apis/{GROUP_VERSION}/{{plural}}", self.list)
        r.add_get(f"/apis/{GROUP_VERSION}/namespaces/{{ns}}/{{plural}}", self.list)
        r.add_get("/api/v1/namespaces/{ns}/secrets/{name}", self.secret)

    def put(self, doc: dict[str, Any]) -> None:
        """Create or replace an object (a deep copy: later edits need another put)."""
        meta = doc["metadata"]
        key = (doc["kind"], meta.get("namespace") or "default", meta["name"])
        self.objects[key] = copy.deepcopy(doc)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        del self.objects[(kind, namespace, name)]

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.json_response(body, status=code)

    async def list(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if self.fail_status is not None:
            return self._status(self.fail_status, "InternalError", "injected failure")
        kind = KINDS[request.match_info["plural"]]
        namespace = request.match_info.get("ns")
        items = [
            {**obj, "metadata": {**obj["metadata"], "namespace": ns}}
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and namespace in (None, ns)
        ]
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(len(self.requests))},
            "items": items,
        }
        return web.json_response(body)

    async def secret(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        ns, name = request.match_info["ns"], request.match_info["name"]
        if self.fail_status is not None:
            return self._status(self.fail_status, "InternalError", "injected failure")
        data = self.secrets.get((ns, name))
        if data is None:
            return self._status(404, "NotFound", f'secrets "{name}" not found')
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "data": encoded,
        }
        return web.json_response(body)
