"""The operator's external metrics API: ``external.metrics.k8s.io/v1beta1`` over TLS.

Why: the HPA controller reads External metrics through the API server's aggregation
layer; serving them from the operator (which already scrapes every Triton pod) means
queue-time autoscaling needs nothing else installed — no Prometheus, no adapter, and
none of their "query returned nothing, scale down" failure modes.

Where it sits: ``tritonfleet.scaling`` (data plane). The chart registers an
``APIService`` (``v1beta1.external.metrics.k8s.io``) pointing at the operator's Service;
:func:`build_app` answers discovery and
``GET /apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector=...``
from the collector's latest results via the pure
:func:`tritonfleet.desired.kube.autoscaling.select_metric`. No data → HTTP 503 with a
Status (the HPA keeps its replicas); idle → a value of 0.

Authentication: the aggregator presents the front-proxy client certificate; with a
client CA (``requestheader-client-ca-file`` from ConfigMap
kube-system/extension-apiserver-authentication) the TLS layer requires and verifies it,
and :func:`build_app` checks the CN is an allowed front-proxy name when given.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from tritonfleet.desired.kube.autoscaling import (
    METRICS,
    MetricValue,
    parse_selector,
    quantity,
    select_metric,
)
from tritonfleet.desired.triton.metrics import QueueResult

log = logging.getLogger(__name__)

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"

ResultsSource = Callable[[], Mapping[tuple[str, str], QueueResult]]
EnsemblesSource = Callable[[], Mapping[tuple[str, str], Sequence[str]]]


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status=code,
    )


def _discovery_group() -> dict[str, Any]:
    gv = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [gv],
        "preferredVersion": gv,
    }


def _resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": name,
                "singularName": "",
                "namespaced": True,
                "kind": "ExternalMetricValueList",
                "verbs": ["get"],
            }
            for name in METRICS
        ],
    }


def _peer_cn(request: web.Request) -> str | None:
    transport = request.transport
    ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_obj is None:
        return None
    cert = ssl_obj.getpeercert()
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def build_app(
    results: ResultsSource,
    ensembles: EnsemblesSource,
    *,
    pools: EnsemblesSource = dict,
    allowed_names: Sequence[str] = (),
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> web.Application:
    """The aiohttp application (TLS and client-cert checks are the server's, see
    :func:`ssl_context`; ``allowed_names`` further restricts the client's CN)."""

    @web.middleware
    async def authn(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/healthz", "/livez", "/readyz"):
            return await handler(request)  # type: ignore[no-any-return]
        if allowed_names:
            cn = _peer_cn(request)
            if cn not in allowed_names:
                return _status(403, "Forbidden", f"client {cn!r} is not a front proxy")
        return await handler(request)  # type: ignore[no-any-return]

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def apis(_: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_discovery_group()]}
        )

    async def group(_: web.Request) -> web.Response:
        return web.json_response(_discovery_group())

    async def version(_: web.Request) -> web.Response:
        return web.json_response(_resource_list())

    async def metric(request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["metric"]
        if name not in METRICS:
            return _status(
                404, "NotFound", f"no external metric {name!r} (have {', '.join(METRICS)})"
            )
        selector = parse_selector(request.query.get("labelSelector", ""))
        if selector is None:
            return _status(400, "BadRequest", "only equality label selectors are supported")
        answer = select_metric(name, namespace, selector, results(), ensembles(), pools())
        if not isinstance(answer, MetricValue):
            # Not 404: "no data" is a temporary failure, and the HPA holds its replicas.
            return _status(503, "ServiceUnavailable", f"no data for {name}: {answer.reason}")
        labels = {k: v for k, v in selector.items()}
        labels.setdefault("namespace", namespace)
        return web.json_response(
            {
                "kind": "ExternalMetricValueList",
                "apiVersion": GROUP_VERSION,
                "metadata": {},
                "items": [
                    {
                        "metricName": name,
                        "metricLabels": labels,
                        "timestamp": clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "value": quantity(answer.value),
                    }
                ],
            }
        )

    app = web.Application(middlewares=[authn])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/apis", apis)
    app.router.add_get(f"/apis/{GROUP}", group)
    app.router.add_get(f"/apis/{GROUP_VERSION}", version)
    app.router.add_get(f"/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{{metric}}", metric)
    return app


def ssl_context(cert_file: str, key_file: str, client_ca: str | None) -> ssl.SSLContext:
    """Server TLS; with ``client_ca`` (PEM text) a verified client certificate is required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca:
        ctx.load_verify_locations(cadata=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def reload_certificate(
    context: ssl.SSLContext, cert_file: str, key_file: str, interval_s: float = 60.0
) -> None:
    """Load the serving certificate again whenever its files change (cert-manager renews
    the Secret, the kubelet swaps the mounted files): new connections get the new
    certificate, open ones keep theirs, and the operator needs no restart. Runs until
    cancelled; a half-written pair is retried at the next look."""
    paths = (Path(cert_file), Path(key_file))
    seen = _read_pair(paths)
    while True:
        await asyncio.sleep(interval_s)
        now = _read_pair(paths)
        if now is None or now == seen:
            continue
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as error:
            log.warning("external metrics API: the renewed certificate does not load: %s", error)
            continue
        seen = now
        log.info("external metrics API: certificate renewed, loaded from %s", cert_file)


def _read_pair(paths: tuple[Path, Path]) -> tuple[bytes, bytes] | None:
    try:
        return paths[0].read_bytes(), paths[1].read_bytes()
    except OSError:
        return None


async def serve(
    app: web.Application, host: str, port: int, context: ssl.SSLContext
) -> web.AppRunner:
    """Start serving (the caller keeps the runner and calls ``cleanup()`` to stop)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    return runner
