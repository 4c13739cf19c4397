"""The whole chain as a user drives it, on the testbed, with every part real.

``helm install`` the chart (the operator and the gateway run as pods, through
the local pod runner: containers of the image built from the Dockerfile, with
their ServiceAccounts' tokens) → ``kubectl apply``
a model with failover → the operator's sync Job publishes its files → real
Triton pods → loaded on every replica → the openai SDK gets answers through
the gateway's Service → every Triton pod dies → the hosted provider answers,
no request fails → Triton comes back → traffic returns → delete → nothing
left, not even the files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from hack.devtools.chart import CHART, TRITON_PODS, installed
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.operator import apply_crds
from hack.devtools.pod_runner import PodRunner
from hack.devtools.testbed import REPO_ROOT, Testbed
from tritonfleet.desired.kube.autoscaling import parse_quantity

pytestmark = pytest.mark.e2e

SAMPLE = yaml.safe_load((REPO_ROOT / "manifests/samples/runnable/toy-llm.yaml").read_text())
HOSTED_KEY = f"sk-e2e-{uuid.uuid4().hex}"


@pytest.fixture
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    try:
        yield api
    finally:
        api.stop()


def toy_llm(hosted: HostedAPI) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    serving = body["spec"]["serving"]
    serving["replicas"] = {"min": 2, "max": 2}
    serving.pop("autoscaling", None)
    body["spec"]["failover"] = {
        "provider": {
            "baseUrl": hosted.base_url,
            "model": "toy-hosted",
            "apiKeySecret": {"name": "hosted-api-key", "key": "api-key"},
        },
        "triggers": {"unavailable": True},
    }
    return dict(body)


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((body or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def ask(client: OpenAI, prompt: str) -> tuple[str, str]:
    """One chat completion: (answer, who answered)."""
    raw = client.chat.completions.with_raw_response.create(
        model="toy_llm", messages=[{"role": "user", "content": prompt}], max_tokens=4
    )
    answer = raw.parse().choices[0].message.content or ""
    return answer, raw.headers.get("x-tritonfleet-backend", "")


def gateway_url(testbed: Testbed, release: str, namespace: str) -> str:
    """The OpenAI base URL of the chart's gateway Service (its loopback cluster IP)."""
    service = testbed.get("service", f"{release}-tritonfleet-gateway", namespace=namespace)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v1"


def triton_answers(client: OpenAI) -> bool:
    try:
        return ask(client, "are you Triton?")[1] == "triton"
    except Exception:
        return False


def test_helm_install_apply_serve_survive_triton_dying_and_delete(
    testbed: Testbed, pod_runner: PodRunner, hosted: HostedAPI, tritonfleet_image: str
) -> None:
    apply_crds(testbed)
    suffix = uuid.uuid4().hex[:5]
    system = f"tf-system-{suffix}"
    # The models' namespace goes first (while the operator runs to release them), even
    # when the test fails: a leftover model would serve the next test's route name.
    with installed(testbed, system) as release, testbed.namespace("team") as models:
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        pod_runner.wait_ready(system, "app.kubernetes.io/component=gateway", 1, timeout=120)

        testbed.kubectl("create", "secret", "generic", "hosted-api-key",
                        f"--from-literal=api-key={HOSTED_KEY}", "-n", models)  # fmt: skip
        testbed.apply(json.dumps(toy_llm(hosted)), namespace=models)

        def ready() -> dict[str, Any] | None:
            body = testbed.get("tritonmodel", "toy-llm", namespace=models)
            pods = ((body or {}).get("status") or {}).get("pods") or []
            ok = condition(body, "Ready").get("status") == "True" and len(pods) == 2
            return body if ok else None

        body = testbed.wait_for(ready, 300, "toy-llm Ready, Loaded on 2 Triton pods")
        revision = body["status"]["revision"]
        assert {(p["state"], p["revision"]) for p in body["status"]["pods"]} == {
            ("Ready", revision)
        }

        # Ready means served (by at least one loaded replica); the printer column
        # reaches 2/2 once Kubernetes reports the second pod Ready as well.
        def table_shows_both() -> str | None:
            table = testbed.kubectl("get", "tritonmodels", "-n", models).stdout
            return table if "toy-llm" in table and "True" in table and "2/2" in table else None

        testbed.wait_for(table_shows_both, 30, "kubectl get tritonmodels showing Ready 2/2")

        url = gateway_url(testbed, release, system)
        client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        testbed.wait_for(
            lambda: triton_answers(client), 60, "the gateway routing toy_llm to Triton"
        )
        answer, backend = ask(client, "the fleet answers")
        assert backend == "triton" and answer

        # Every Triton pod dies while clients keep asking: no request fails.
        outcomes: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client_loop(worker: int) -> None:
            mine = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
            for i in range(400):
                if stop.is_set():
                    return
                try:
                    outcomes.append(ask(mine, f"request {worker} {i}")[1])
                except Exception as error:
                    failures.append(repr(error))
                time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client_loop, w) for w in range(4)]
            time.sleep(2)
            triton = testbed.get("pods", "-l", TRITON_PODS, namespace=models)["items"]
            for pod in triton:
                pod_runner.stop_pod(models, pod["metadata"]["name"])
            testbed.wait_for(lambda: outcomes.count("hosted") >= 10, 60,
                             "the hosted provider answering")  # fmt: skip
            stop.set()
            for future in futures:
                future.result()
        assert failures == [], failures[:5]
        assert outcomes.count("triton") > 0 and outcomes.count("hosted") >= 10
        assert any(r.headers.get("Authorization") == f"Bearer {HOSTED_KEY}"
                   for r in hosted.requests)  # fmt: skip

        # Triton comes back (the dead pods are replaced) and traffic returns to it.
        for pod in triton:
            testbed.kubectl("delete", "pod", pod["metadata"]["name"], "-n", models,
                            "--wait=false")  # fmt: skip
        testbed.wait_for(ready, 300, "toy-llm Ready again on 2 new Triton pods")
        testbed.wait_for(lambda: triton_answers(client), 60, "traffic back on Triton")

        # Delete: nothing left, not even the model's files on the shared volume.
        claim = testbed.get("pvc", "tritonfleet-models", namespace=models)
        volume = testbed.pv_path(claim["spec"]["volumeName"])
        assert (volume / "repository" / "toy_llm").exists()
        testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", models, "--timeout=120s",
                        timeout=150)  # fmt: skip

        def nothing_left() -> bool:
            kinds = "deployments,services,jobs,configmaps,pods"
            left = testbed.get(kinds, "-l", "app.kubernetes.io/managed-by=tritonfleet",
                               namespace=models)["items"]  # fmt: skip
            return not left and not (volume / "repository" / "toy_llm").exists()

        testbed.wait_for(nothing_left, 120, "children and files gone")
        assert not list(Path(volume, "repository").glob("toy_llm*"))

        # All of it ran from the image built from the Dockerfile, as containers.
        ran = {
            (start["component"], start["image"])
            for start in pod_runner.starts
            if start["namespace"] in (system, models)
        }
        for component in ("operator", "gateway", "model-sync", "model-cleanup"):
            assert (component, tritonfleet_image) in ran, (component, ran)


def raw_metric(testbed: Testbed, namespace: str, model: str) -> float | None:
    """``kubectl get --raw`` on the external metrics API: the value in ms, None without data."""
    path = (f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/"
            f"tritonfleet_queue_time_seconds?labelSelector=model%3D{model}")  # fmt: skip
    out = testbed.kubectl("get", "--raw", path, check=False)
    if out.returncode != 0:
        return None
    return parse_quantity(str(json.loads(out.stdout)["items"][0]["value"])) * 1000


def test_queue_time_drives_the_real_hpa_up_and_down_through_the_operators_metrics_api(
    testbed: Testbed, pod_runner: PodRunner
) -> None:
    apply_crds(testbed)
    suffix = uuid.uuid4().hex[:5]
    system = f"tf-system-{suffix}"
    stabilization = 20
    sets = (f"externalMetrics.scaleDownStabilizationSeconds={stabilization}",)
    with installed(testbed, system, *sets), testbed.namespace("scale") as models:
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)

        def api_available() -> bool:
            service = testbed.get("apiservice", "v1beta1.external.metrics.k8s.io")
            conditions = (service or {}).get("status", {}).get("conditions") or []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        testbed.wait_for(api_available, 60, "APIService v1beta1.external.metrics.k8s.io Available")

        body = copy.deepcopy(SAMPLE)
        body["spec"]["serving"]["replicas"] = {"min": 1, "max": 3}
        body["spec"]["serving"]["autoscaling"] = {"queueTimeTargetMs": 50, "windowSeconds": 10}
        # Every token takes 100 ms: a dozen concurrent clients queue on one instance.
        body["spec"]["config"].setdefault("parameters", {})["token_delay_ms"] = "100"
        testbed.apply(json.dumps(body), namespace=models)

        def loaded_on(count: int) -> Any:
            def check() -> dict[str, Any] | None:
                obj = testbed.get("tritonmodel", "toy-llm", namespace=models)
                pods = ((obj or {}).get("status") or {}).get("pods") or []
                ok = condition(obj, "Ready").get("status") == "True" and len(pods) == count
                return obj if ok and all(p["state"] == "Ready" for p in pods) else None

            return check

        testbed.wait_for(loaded_on(1), 240, "toy-llm Ready on 1 replica")
        testbed.wait_for(lambda: raw_metric(testbed, models, "toy_llm") == 0.0, 60,
                         "an idle queue time of 0 ms from kubectl get --raw")  # fmt: skip

        (pod,) = testbed.get("pods", "-l", TRITON_PODS, namespace=models)["items"]
        ip = pod["status"]["podIP"]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                request = urllib.request.Request(
                    f"http://{ip}:8000/v2/models/toy_llm/generate",
                    data=json.dumps({"text_input": "a b c", "max_tokens": 4}).encode(),
                )
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(request, timeout=60).read()

        threads = [threading.Thread(target=load, daemon=True) for _ in range(12)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            # One HPA sync period (15 s) plus the 10 s window, and scheduling slack.
            def scaled_up() -> int | None:
                dep = testbed.get("deployment", "tm-toy-llm", namespace=models)
                wanted = int(dep["spec"].get("replicas") or 0)
                return wanted if wanted > 1 else None

            testbed.wait_for(scaled_up, 45, "the HPA raising toy-llm's replicas")
            reaction = time.monotonic() - started
            assert (raw_metric(testbed, models, "toy_llm") or 0) > 50

            def says_scaling_up() -> dict[str, Any] | None:
                cond = condition(testbed.get("tritonmodel", "toy-llm", namespace=models),
                                 "Autoscaling")  # fmt: skip
                return cond if cond.get("reason") in ("ScalingUp", "ScalingLimited") else None

            words = testbed.wait_for(says_scaling_up, 30, "Autoscaling saying it scales up")
            assert words["status"] == "True" and "50 ms" in words["message"], words
            # The new replicas are loaded before they count (status.pods, Loaded).
            testbed.wait_for(loaded_on(3), 180, "toy-llm Loaded on 3 replicas")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=70)
        print(f"queue-time spike to more replicas: {reaction:.1f} s")

        def scaled_down() -> bool:
            dep = testbed.get("deployment", "tm-toy-llm", namespace=models)
            return int(dep["spec"].get("replicas") or 0) == 1

        testbed.wait_for(scaled_down, stabilization + 120, "the HPA back to 1 replica when idle")
        testbed.wait_for(
            lambda: condition(testbed.get("tritonmodel", "toy-llm", namespace=models),
                              "Autoscaling").get("message")
            == "steady at the minimum of 1 replica: idle",
            60, "Autoscaling: steady at the minimum of 1 replica, idle",
        )  # fmt: skip
        # An upgrade keeps the serving certificate the running operator holds, so the
        # aggregator keeps trusting it (a fresh one would break the API until a restart).
        testbed.helm("upgrade", "tf", str(CHART), "-n", system, "--reuse-values", "--wait",
                     "--timeout", "120s", timeout=180)  # fmt: skip
        assert raw_metric(testbed, models, "toy_llm") is not None, "metrics API lost after upgrade"
        testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", models, "--timeout=120s",
                        timeout=150)  # fmt: skip


def test_an_idle_model_scales_to_zero_and_a_request_through_the_gateway_brings_it_back(
    testbed: Testbed, pod_runner: PodRunner, hosted: HostedAPI
) -> None:
    apply_crds(testbed)
    suffix = uuid.uuid4().hex[:5]
    system = f"tf-system-{suffix}"
    idle_after = 30  # the smallest scaleToZeroAfterSeconds the API accepts
    with installed(testbed, system) as release, testbed.namespace("zero") as models:
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=120)
        pod_runner.wait_ready(system, "app.kubernetes.io/component=gateway", 1, timeout=120)
        testbed.kubectl("create", "secret", "generic", "hosted-api-key",
                        f"--from-literal=api-key={HOSTED_KEY}", "-n", models)  # fmt: skip
        body = toy_llm(hosted)
        body["spec"]["serving"]["replicas"] = {"min": 0, "max": 2}
        body["spec"]["serving"]["autoscaling"] = {
            "windowSeconds": 10,
            "scaleToZeroAfterSeconds": idle_after,
        }
        testbed.apply(json.dumps(body), namespace=models)

        def serving_on_one() -> dict[str, Any] | None:
            obj = testbed.get("tritonmodel", "toy-llm", namespace=models)
            pods = ((obj or {}).get("status") or {}).get("pods") or []
            ok = condition(obj, "Ready").get("status") == "True" and len(pods) == 1
            return obj if ok else None

        # A min-0 model starts on one replica, so its files are proven to load.
        testbed.wait_for(serving_on_one, 300, "toy-llm Ready on its first replica")
        loaded_at = time.monotonic()

        def at_zero() -> dict[str, Any] | None:
            obj = testbed.get("tritonmodel", "toy-llm", namespace=models)
            dep = testbed.get("deployment", "tm-toy-llm", namespace=models)
            cond = condition(obj, "Autoscaling")
            zero = dep is not None and dep["spec"].get("replicas") == 0
            return cond if zero and cond.get("reason") == "ScaledToZero" else None

        # Idle time, plus the queue window for the idleness to show, plus a few rounds.
        words = testbed.wait_for(at_zero, idle_after + 90, "toy-llm scaled to zero")
        assert time.monotonic() - loaded_at >= idle_after - 5  # idle as observed, not before
        assert f"no request for {idle_after} s" in words["message"], words
        obj = testbed.get("tritonmodel", "toy-llm", namespace=models)
        assert condition(obj, "Ready")["reason"] == "ScaledToZero"
        assert obj["status"]["replicaSummary"] == "0/0"
        testbed.wait_for(lambda: not testbed.get("pods", "-l", TRITON_PODS,
                                                 namespace=models)["items"],
                         60, "the Triton pod gone")  # fmt: skip

        # A client asks while nothing runs: the hosted provider answers (no failure),
        # and that request is the gateway's signal to bring a replica back.
        client = OpenAI(base_url=gateway_url(testbed, release, system), api_key="unused",
                        max_retries=0, timeout=30)  # fmt: skip
        asked = time.monotonic()
        answer, backend = ask(client, "anyone home?")
        assert backend == "hosted" and answer

        def activated() -> bool:
            dep = testbed.get("deployment", "tm-toy-llm", namespace=models)
            return int(dep["spec"].get("replicas") or 0) >= 1

        testbed.wait_for(activated, 60, "the Deployment back to 1 replica")
        print(f"request at zero to a replica wanted: {time.monotonic() - asked:.1f} s")
        testbed.wait_for(serving_on_one, 240, "toy-llm Ready again on 1 replica")

        testbed.wait_for(lambda: triton_answers(client), 60,
                         "the gateway routing toy_llm to Triton again")  # fmt: skip
        events = testbed.get("events", "--field-selector",
                             "involvedObject.kind=TritonModel,involvedObject.name=toy-llm",
                             namespace=models)["items"]  # fmt: skip
        reasons = {e["reason"] for e in events}
        assert {"ScaledToZero", "Activated"} <= reasons, reasons
        testbed.kubectl("delete", "tritonmodel", "toy-llm", "-n", models, "--timeout=120s",
                        timeout=150)  # fmt: skip
