"""The operator's external metrics API over TLS, answering from real tritonservers.

Why: the HPA reads ``tritonfleet_queue_time_ms`` through the aggregation layer; the
API must speak TLS, require the front-proxy client certificate, answer discovery,
give idle as 0, the worst member for an ensemble, and an error (not 0) when there is
no data, so the HPA never scales down on missing metrics. Triton listens on
127.0.0.2 and 127.0.0.3; every connection stays on loopback.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from hack.devtools.triton import TritonProcess, copy_model_repository, free_port
from tritonfleet.desired.kube.autoscaling import parse_quantity as seconds
from tritonfleet.desired.triton.metrics import QueueSignal
from tritonfleet.scaling.collector import QueueMetricsCollector
from tritonfleet.scaling.metrics_api import build_app, reload_certificate, serve, ssl_context

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MODEL = "toy_llm"
NS = "team-a"
BASE = "/apis/external.metrics.k8s.io/v1beta1"
METRIC = "tritonfleet_queue_time_seconds"
SLOW = {"text_input": "a b c d", "max_tokens": 4, "parameters": {"token_delay_ms": 25}}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _self_signed(d: Path, name: str, cn: str) -> None:
    """``<name>.crt``/``<name>.key``: a self-signed certificate (a CA, or an untrusted client)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={cn}",
             "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.crt"))  # fmt: skip


def _signed(d: Path, name: str, cn: str, ca: str, *extra: str) -> None:
    """``<name>.crt``/``<name>.key``: a certificate for ``cn`` signed by CA ``<ca>``."""
    csr = d / f"{name}.csr"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
             "-keyout", str(d / f"{name}.key"), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.crt"),
             "-CAkey", str(d / f"{ca}.key"), "-CAcreateserial", "-days", "1", *extra,
             "-out", str(d / f"{name}.crt"))  # fmt: skip


def make_pki(d: Path) -> dict[str, Path]:
    """A serving CA + cert for 127.0.0.1, and a front-proxy CA + client cert."""
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _self_signed(d, "ca", "tf-ca")
    _self_signed(d, "fp", "front-proxy-ca")
    _signed(d, "tls", "tritonfleet-operator", "ca", "-extfile", str(d / "ext"))
    _signed(d, "cl", "front-proxy-client", "fp")
    # a client cert from a CA the API does not trust
    _self_signed(d, "other", "front-proxy-client")
    names = ("ca", "tls", "fp", "cl", "other")
    return {f"{n}.{kind}": d / f"{n}.{kind}" for n in names for kind in ("crt", "key")}


def client_ctx(p: dict[str, Path], cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(p["ca.crt"]))
    if cert:
        ctx.load_cert_chain(str(p[f"{cert}.crt"]), str(p[f"{cert}.key"]))
    return ctx


async def get(url: str, ctx: ssl.SSLContext) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.get(url, ssl=ctx) as r:
        return r.status, await r.json()


async def scenario(servers: list[TritonProcess], p: dict[str, Path]) -> None:
    targets = [(f"triton-{i}", f"http://{s.host}:{s.metrics_port}") for i, s in enumerate(servers)]
    pods: dict[Any, Any] = {
        (NS, MODEL): targets[:1],
        (NS, "other"): targets[1:],  # no such model on that server: no data
    }
    collector = QueueMetricsCollector(
        lambda: pods,
        namespace=NS,
        interval=0.25,
        window=6.0,
        timeout=1.0,
        registry=CollectorRegistry(),
    )
    ensembles = {(NS, "pipe"): [MODEL], (NS, "broken"): [MODEL, "other"]}
    app = build_app(
        lambda: collector.results, lambda: ensembles, allowed_names=("front-proxy-client",)
    )
    port = free_port()
    runner = await serve(
        app,
        "127.0.0.1",
        port,
        ssl_context(str(p["tls.crt"]), str(p["tls.key"]), p["fp.crt"].read_text()),
    )
    root = f"https://127.0.0.1:{port}"
    ok = client_ctx(p, "cl")
    collector.start()
    try:
        # the front-proxy client is required: none, or one from another CA, is refused
        for bad in (None, "other"):
            with pytest.raises(aiohttp.ClientError):
                await get(f"{root}/apis", client_ctx(p, bad))

        status, body = await get(f"{root}/apis", ok)
        assert status == 200 and body["groups"][0]["name"] == "external.metrics.k8s.io"
        status, body = await get(f"{root}{BASE}", ok)
        assert body["kind"] == "APIResourceList"
        assert {r["name"] for r in body["resources"]} == {
            "tritonfleet_queue_time_seconds",
            "tritonfleet_pending_requests",
            "tritonfleet_queue_time_ms",  # deprecated, answered for one more release
        }

        for _ in range(100):
            if isinstance(collector.result(MODEL, NS), QueueSignal):
                break
            await asyncio.sleep(0.1)
        url = f"{root}{BASE}/namespaces/{NS}/{METRIC}?labelSelector=model%3D{MODEL}"
        status, body = await get(url, ok)
        assert status == 200, body
        assert body["kind"] == "ExternalMetricValueList"
        assert seconds(body["items"][0]["value"]) == 0  # idle: a real zero
        assert body["items"][0]["metricLabels"] == {"model": MODEL, "namespace": NS}

        # load: queue time shows up, and the ensemble answers with its worst member
        async with aiohttp.ClientSession() as s:
            gen = f"{servers[0].http_url}/v2/models/{MODEL}/generate"

            async def one() -> None:
                async with s.post(gen, json=SLOW) as r:
                    assert r.status == 200

            await asyncio.gather(*(one() for _ in range(12)))
        await asyncio.sleep(0.8)
        sig = collector.result(MODEL, NS)
        assert isinstance(sig, QueueSignal) and sig.queue_ms > 10
        status, body = await get(url, ok)
        served_ms = seconds(body["items"][0]["value"]) * 1000
        assert served_ms > 10, body
        legacy = url.replace(METRIC, "tritonfleet_queue_time_ms")
        status, body = await get(legacy, ok)
        assert status == 200 and seconds(body["items"][0]["value"]) > 10  # the same, in ms
        ens = f"{root}{BASE}/namespaces/{NS}/{METRIC}?labelSelector=ensemble%3Dpipe"
        status, body = await get(ens, ok)
        assert status == 200 and seconds(body["items"][0]["value"]) > 0.010

        # no data: an error, never 0 (the HPA then keeps its replicas)
        for sel in ("model%3Dother", "ensemble%3Dbroken", "model%3Dnope"):
            status, body = await get(
                f"{root}{BASE}/namespaces/{NS}/{METRIC}?labelSelector={sel}", ok
            )
            assert status == 503 and body["kind"] == "Status", (sel, body)
        servers[0].kill()
        for _ in range(100):
            status, body = await get(url, ok)
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503 and "no data" in body["message"]
        status, _ = await get(
            f"{root}{BASE}/namespaces/{NS}/nope?labelSelector=model%3D{MODEL}", ok
        )
        assert status == 404
    finally:
        await collector.stop()
        await runner.cleanup()


def test_metrics_api_serves_real_triton_queue_time(
    triton_factory: Callable[..., TritonProcess], tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    p = make_pki(pki)
    repo = copy_model_repository(tmp_path / "models", [MODEL])
    servers = [
        triton_factory(repo, host="127.0.0.2", load_models=[MODEL]),
        triton_factory(repo, host="127.0.0.3", load_models=[MODEL]),
    ]
    asyncio.run(scenario(servers, p))


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    """cert-manager renews the Secret, the kubelet swaps the mounted files: the next
    connection gets the new certificate from the running server."""
    p = make_pki(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    for name in ("tls.crt", "tls.key"):
        (served / name).write_bytes(p[name].read_bytes())
    # The renewal: a new key and certificate from the same CA.
    _signed(tmp_path, "renewed", "tritonfleet-operator", "ca", "-extfile", str(tmp_path / "ext"))

    def served_serial(port: int) -> int:
        pem = ssl.get_server_certificate(("127.0.0.1", port))
        der = ssl.PEM_cert_to_DER_cert(pem)
        return hash(der)

    async def main() -> tuple[int, int, int]:
        crt, key = str(served / "tls.crt"), str(served / "tls.key")
        ctx = ssl_context(crt, key, None)
        port = free_port()
        runner = await serve(build_app(dict, dict), "127.0.0.1", port, ctx)
        reloader = asyncio.create_task(reload_certificate(ctx, crt, key, interval_s=0.1))
        try:
            before = await asyncio.to_thread(served_serial, port)
            (served / "tls.key").write_bytes((tmp_path / "renewed.key").read_bytes())
            (served / "tls.crt").write_bytes((tmp_path / "renewed.crt").read_bytes())
            for _ in range(100):
                after = await asyncio.to_thread(served_serial, port)
                if after != before:
                    break
                await asyncio.sleep(0.1)
            renewed = ssl.PEM_cert_to_DER_cert((tmp_path / "renewed.crt").read_text())
            return before, after, hash(renewed)
        finally:
            reloader.cancel()
            await runner.cleanup()

    before, after, renewed = asyncio.run(main())
    assert before != after == renewed
