"""Credentials as kubectl has them, against the testbed's real API server.

The operator and the gateway run as real processes with kubeconfigs a platform
engineer would have on a laptop against a managed cluster:

* an ``exec`` user (a script printing an ExecCredential, as ``aws eks get-token`` or
  ``gke-gcloud-auth-plugin`` do) whose tokens expire and are fetched again;
* a ``tokenFile`` user whose token rotates: the old token is revoked (the Secret it is
  bound to is deleted) and a new one written, as the kubelet rotates a pod's token;
* a server that answers 429 with ``Retry-After`` (a proxy in front of the testbed),
  where the request is sent again only after the time asked for.

Each user is a ServiceAccount of the testbed bound to cluster-admin: what is under
test is how credentials are obtained and refreshed, not RBAC (the chart tests cover it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from hack.devtools.api_proxy import Throttle, ThrottlingProxy
from hack.devtools.gateway import GatewayProcess, start_gateway
from hack.devtools.operator import OperatorProcess
from hack.devtools.testbed import Testbed
from tests.support.builders import model_doc
from tritonfleet.adapters.kube import KubeClient, endpoint_from_kubeconfig
from tritonfleet.adapters.kube_auth import KubeCredentials

pytestmark = pytest.mark.integration

USER = "tf-credentials"

EXEC_PLUGIN = (
    "#!"
    + sys.executable
    + """
import datetime, json, os, sys
calls, token_file, lifetime = sys.argv[1], sys.argv[2], int(sys.argv[3])
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(calls, "a") as log:
    log.write(json.dumps({"spec": info["spec"], "env": os.environ.get("PLUGIN_ENV")}) + "\\n")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
status = {"expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
if token_file == "-":
    status["clientCertificateData"] = open(os.environ["CERT"]).read()
    status["clientKeyData"] = open(os.environ["KEY"]).read()
else:
    status["token"] = open(token_file).read().strip()
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": status}))
"""
)


@pytest.fixture(scope="module")
def identity(testbed: Testbed, crds: None) -> Iterator[str]:
    """A ServiceAccount (and the namespace holding it and its token-binding Secrets)."""
    with testbed.namespace("creds") as namespace:
        testbed.kubectl("create", "serviceaccount", USER, "-n", namespace)
        testbed.kubectl(
            "create", "clusterrolebinding", f"{namespace}-{USER}", "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{USER}",
        )  # fmt: skip
        try:
            yield namespace
        finally:
            testbed.kubectl("delete", "clusterrolebinding", f"{namespace}-{USER}", check=False)


def bound_token(testbed: Testbed, namespace: str, secret: str) -> str:
    """A token of the ServiceAccount that stops working when Secret ``secret`` goes."""
    testbed.kubectl("create", "secret", "generic", secret, "-n", namespace)
    return testbed.kubectl(
        "create", "token", USER, "-n", namespace, "--duration=20m",
        "--bound-object-kind=Secret", f"--bound-object-name={secret}",
    ).stdout.strip()  # fmt: skip


def kubeconfig(testbed: Testbed, path: Path, user: dict[str, object]) -> Path:
    """A kubeconfig for the testbed's server with ``user`` (no client certificate)."""
    admin = yaml.safe_load(testbed.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "testbed", "cluster": cluster}],
                "users": [{"name": "me", "user": user}],
                "contexts": [{"name": "laptop", "context": {"cluster": "testbed", "user": "me"}}],
                "current-context": "laptop",
            }
        )
    )
    return path


def refused(testbed: Testbed, token: str) -> bool:
    """Whether the API server answers 401 to ``token`` (it caches token reviews briefly)."""
    cluster = yaml.safe_load(testbed.kubeconfig.read_text())["clusters"][0]["cluster"]
    context = ssl.create_default_context(cafile=cluster["certificate-authority"])
    request = urllib.request.Request(
        testbed.server + "/api", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5):
            return False
    except urllib.error.HTTPError as error:
        return error.code == 401


def children_of(testbed: Testbed, namespace: str, model: str) -> bool:
    found = testbed.get("deployment", "-l", f"tritonfleet.io/model={model}", namespace=namespace)
    return bool(found and found.get("items"))


def wait_for_children(testbed: Testbed, namespace: str, model: str) -> None:
    testbed.wait_for(
        lambda: children_of(testbed, namespace, model), 60, f"the Deployment of {model}"
    )


def listed_by(gateway_url_get: object, model: str) -> bool:
    assert callable(gateway_url_get)
    return model in {m["id"] for m in json.loads(gateway_url_get("/v1/models"))["data"]}


@contextlib.contextmanager
def operator_and_gateway(
    testbed: Testbed, namespace: str, config: Path, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, GatewayProcess]]:
    """The operator and the gateway of ``namespace``, both with kubeconfig ``config``."""
    operator = OperatorProcess(testbed, [namespace], env={"KUBECONFIG": str(config)}).start()
    try:
        gateway = start_gateway(
            ["--kubeconfig", str(config), "--namespace", namespace, "--poll-interval", "0.3"],
            tmp_path / "gateway.log",
        )
        try:
            yield operator, gateway
        finally:
            gateway.stop()
    finally:
        operator.stop()
        testbed.kubectl("delete", "tritonmodels", "--all", "-n", namespace, "--wait=false")


def operator_metric(operator: OperatorProcess, name: str, **labels: str) -> float:
    return sum(
        value
        for metric, found, value in operator.metrics()
        if metric == name and labels.items() <= found.items()
    )


def test_exec_plugin_user_drives_the_operator_and_the_gateway(
    testbed: Testbed, identity: str, tmp_path: Path
) -> None:
    calls, token = tmp_path / "calls.jsonl", tmp_path / "token"
    token.write_text(bound_token(testbed, identity, "exec-token"))
    write_plugin(tmp_path)
    # 30 s (whole seconds, rounded down): inside the 30 s renewal margin from the start, so
    # every later request runs it again. (31 s left up to a second of validity, and the
    # operator's writes for "second" could all fall inside it: a flake seen in CI.)
    # "./plugin" is found next to the kubeconfig, as kubectl finds it (the processes run
    # in the checkout).
    config = kubeconfig(
        testbed,
        tmp_path / "exec.kubeconfig",
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "./plugin",
                "args": [str(calls), str(token), "30"],
                "env": [{"name": "PLUGIN_ENV", "value": "from-kubeconfig"}],
                "provideClusterInfo": True,
                "interactiveMode": "Never",
            }
        },
    )
    with (
        testbed.namespace("exec") as namespace,
        operator_and_gateway(testbed, namespace, config, tmp_path) as (operator, gateway),
    ):
        testbed.apply(yaml.safe_dump(model_doc("first", namespace)))
        wait_for_children(testbed, namespace, "first")
        before = len(calls.read_text().splitlines())
        testbed.apply(yaml.safe_dump(model_doc("second", namespace)))
        wait_for_children(testbed, namespace, "second")
        testbed.wait_for(
            lambda: listed_by(gateway.get, "second"), 30, "the gateway to list 'second'"
        )
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(runs) > before >= 1, "an expiring credential is fetched again"
    assert all(r["env"] == "from-kubeconfig" for r in runs)
    assert all(r["spec"]["interactive"] is False for r in runs)
    assert {r["spec"]["cluster"]["server"] for r in runs} == {testbed.server}
    log = operator.log_path.read_text()
    assert f"system:serviceaccount:{identity}:{USER}" in log  # the identity it started as
    assert token.read_text() not in log + gateway.log_text()


def test_token_file_user_keeps_working_when_its_token_rotates(
    testbed: Testbed, identity: str, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(bound_token(testbed, identity, "rotating-1"))
    # A relative tokenFile is relative to the kubeconfig that names it.
    config = kubeconfig(testbed, tmp_path / "token.kubeconfig", {"tokenFile": "token"})
    with (
        testbed.namespace("tokenfile") as namespace,
        operator_and_gateway(testbed, namespace, config, tmp_path) as (operator, gateway),
    ):
        testbed.apply(yaml.safe_dump(model_doc("before", namespace)))
        wait_for_children(testbed, namespace, "before")
        old = token.read_text()
        # Rotate as the kubelet does (a new file swapped in), then revoke the old token.
        fresh = tmp_path / "token.new"
        fresh.write_text(bound_token(testbed, identity, "rotating-2"))
        fresh.replace(token)
        testbed.kubectl("delete", "secret", "rotating-1", "-n", identity)
        testbed.wait_for(
            lambda: refused(testbed, old), 30, "the API server to refuse the revoked token"
        )
        testbed.apply(yaml.safe_dump(model_doc("after", namespace)))
        wait_for_children(testbed, namespace, "after")
        testbed.wait_for(lambda: listed_by(gateway.get, "after"), 30, "the gateway to list 'after'")
        # Within the minute before a periodic re-read: the 401 made it read the file.
        assert operator_metric(operator, "tritonfleet_api_retries_total", reason="401") >= 1


def test_429_is_sent_again_only_after_retry_after(
    testbed: Testbed, crds: None, tmp_path: Path
) -> None:
    def first_deployment_apply(method: str, path: str, agent: str) -> bool:
        return method == "PATCH" and "/deployments/" in path

    def first_model_list(method: str, path: str, agent: str) -> bool:
        # The gateway's listing (kopf lists the same path for the operator's watch).
        return method == "GET" and path.endswith("/tritonmodels") and "gateway" in agent

    proxy = ThrottlingProxy(
        testbed.kubeconfig,
        [
            Throttle(first_deployment_apply, times=1, retry_after=3),
            Throttle(first_model_list, times=1, retry_after=2),
        ],
    ).start()
    config = proxy.write_kubeconfig(tmp_path / "proxy.kubeconfig")
    try:
        with (
            testbed.namespace("throttled") as namespace,
            operator_and_gateway(testbed, namespace, config, tmp_path) as (operator, gateway),
        ):
            testbed.apply(yaml.safe_dump(model_doc("throttled", namespace)))
            wait_for_children(testbed, namespace, "throttled")
            testbed.wait_for(lambda: listed_by(gateway.get, "throttled"), 30, "gateway list")
            retried = operator_metric(operator, "tritonfleet_api_retries_total", reason="429")
    finally:
        proxy.stop()
    assert retried >= 1
    for throttle, wanted in ((first_deployment_apply, 3.0), (first_model_list, 2.0)):
        seen = [s for s in proxy.seen if throttle(s.method, s.path, s.user_agent)]
        first = next(s for s in seen if s.status == 429)
        again = next(s for s in seen if s.at > first.at and s.path == first.path)
        waited = again.at - first.at
        assert wanted - 0.1 <= waited < wanted + 5, f"{first.path} sent again after {waited:.2f}s"
        assert again.status < 400


def write_plugin(directory: Path) -> Path:
    plugin = directory / "plugin"
    plugin.write_text(EXEC_PLUGIN)
    plugin.chmod(0o755)
    return plugin


def test_certificate_data_never_touches_the_disk(testbed: Testbed, tmp_path: Path) -> None:
    """A client certificate given as data (the kubeconfig's or an exec plugin's) authenticates
    without a file holding the key appearing anywhere under the temporary directory."""
    admin = yaml.safe_load(testbed.kubeconfig.read_text())
    user = admin["users"][0]["user"]
    cert, key = Path(user["client-certificate"]), Path(user["client-key"])
    plugin = write_plugin(tmp_path)
    inline = kubeconfig(
        testbed,
        tmp_path / "inline.kubeconfig",
        {
            "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
            "client-key-data": base64.b64encode(key.read_bytes()).decode(),
        },
    )
    via_exec = kubeconfig(
        testbed,
        tmp_path / "exec.kubeconfig",
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": str(plugin),
                "args": [str(tmp_path / "calls"), "-", "3600"],
                "env": [{"name": "CERT", "value": str(cert)}, {"name": "KEY", "value": str(key)}],
            }
        },
    )
    secret = key.read_bytes()
    temp = Path(tempfile.gettempdir())

    def holding_the_key() -> list[Path]:
        found = []
        for path in temp.rglob("*"):
            try:
                if path.is_file() and path.stat().st_size < 65536 and secret in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
        return found

    before = set(holding_the_key())

    async def whoami(config: Path) -> str:
        async with KubeClient(endpoint_from_kubeconfig(config)) as client:
            return await client.whoami()

    for config in (inline, via_exec):
        assert asyncio.run(whoami(config)) == "kwok-admin"
    assert set(holding_the_key()) - before == set()
    assert not list(temp.glob("tritonfleet-kube-*"))


def jwt(expires_in: float) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': int(time.time() + expires_in)})}.x"


def test_oidc_id_token_is_refreshed_at_the_issuer_and_written_back(tmp_path: Path) -> None:
    """No OIDC issuer runs here, so a small one answers discovery and the token endpoint;
    the refresh is what kubectl's oidc provider does: refresh-token grant, client
    credentials, both new tokens persisted to the kubeconfig that holds the user."""
    expired, fresh = jwt(-60), jwt(3600)
    grants: list[dict[str, str]] = []

    async def scenario() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        async def discovery(request: web.Request) -> web.Response:
            return web.json_response({"token_endpoint": f"{issuer}/token"})

        async def token(request: web.Request) -> web.Response:
            grants.append({**dict(await request.post()), "auth": request.headers["Authorization"]})
            return web.json_response({"id_token": fresh, "refresh_token": "refresh-2"})

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_post("/token", token)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        issuer = f"http://127.0.0.1:{port}"
        provider = {
            "client-id": "kubectl",
            "client-secret": "shh",
            "idp-issuer-url": issuer,
            "id-token": expired,
            "refresh-token": "refresh-1",
        }
        config = tmp_path / "oidc.kubeconfig"
        config.write_text(
            yaml.safe_dump(
                {
                    "clusters": [{"name": "c", "cluster": {"server": "https://k8s"}}],
                    "users": [{"name": "me", "user": {"auth-provider": {"name": "oidc",
                                                                        "config": provider}}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "me"}}],
                    "current-context": "c",
                }
            )
        )  # fmt: skip
        credentials = KubeCredentials(endpoint_from_kubeconfig(config))
        try:
            first = await credentials.headers()
            second = await credentials.headers()  # still fresh: no second refresh
        finally:
            await runner.cleanup()
        return first, second

    first, second = asyncio.run(scenario())
    assert first == second == [("Authorization", f"Bearer {fresh}")]
    assert len(grants) == 1
    assert grants[0]["grant_type"] == "refresh_token"
    assert grants[0]["refresh_token"] == "refresh-1"
    assert grants[0]["auth"] == "Basic " + base64.b64encode(b"kubectl:shh").decode()
    saved = yaml.safe_load((tmp_path / "oidc.kubeconfig").read_text())
    stored = saved["users"][0]["user"]["auth-provider"]["config"]
    assert (stored["id-token"], stored["refresh-token"]) == (fresh, "refresh-2")
    assert stored["client-secret"] == "shh"
