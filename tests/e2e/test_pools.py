"""Many models on one shared pool of real Triton servers, as a user drives it.

``helm install`` the chart (operator and gateway as containers of the image, through
the local pod runner), ``kubectl apply`` the pool sample (manifests/samples/runnable/
pool/toy-pool.yaml: the toy RAG members and the ensemble over them) plus three more toy
LLMs, all with a hosted failover, then with the openai SDK through the gateway:

* a pool of 2 replicas holding 6 models and an ensemble over 3 of them: all Loaded,
  all answer, each member loaded once per pod (the pods' own repository index);
* a 7th model that does not fit: Placed=False with the numbers, no pod restarted,
  the others unaffected;
* deleting a pooled model under load on the others: unloaded from every pod, its
  files gone, 0 failed requests;
* an idle pooled model is unloaded and the next request brings it back, no failure;
* the pool scaled from 2 to 3 on queue time: the new replica is routed to only once
  its models are loaded there;
* a pool pod killed under load: 0 failed requests, its models reloaded after restart.

One pool for the module (the chart and the fleet take about two minutes to come up);
the tests run in file order and each leaves the fleet serving.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from hack.devtools.chart import Serving, serving
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.operator import apply_crds, condition, delete_models
from hack.devtools.pod_runner import PodRunner
from hack.devtools.testbed import REPO_ROOT, Testbed

pytestmark = pytest.mark.e2e

SAMPLE = REPO_ROOT / "manifests/samples/runnable/pool/toy-pool.yaml"
HOSTED_KEY = f"sk-pool-{uuid.uuid4().hex}"
POOL_PODS = "tritonfleet.io/kind=tritonserverpool,tritonfleet.io/model=toy-pool"
LLMS = ("toy_llm", "toy_llm_b", "toy_llm_c", "toy_llm_d")  # answer chat completions


def fleet_documents(hosted: HostedAPI) -> list[dict[str, Any]]:
    """The sample (pool, toy-embed, vector-search, toy-llm, toy-rag) and three more
    copies of toy-llm, every model with the hosted failover."""
    docs = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    pool = docs[0]
    pool["spec"]["autoscaling"] = {"queueTimeTargetMs": 50, "windowSeconds": 10}
    llm = next(d for d in docs if d["metadata"]["name"] == "toy-llm")
    llm["spec"]["serving"]["pool"]["memory"] = "2Gi"
    for suffix in ("b", "c", "d"):
        copy_ = copy.deepcopy(llm)
        copy_["metadata"]["name"] = f"toy-llm-{suffix}"
        copy_["spec"]["modelName"] = f"toy_llm_{suffix}"
        docs.insert(-1, copy_)
    failover = {
        "provider": {
            "baseUrl": hosted.base_url,
            "model": "toy-hosted",
            "apiKeySecret": {"name": "hosted-api-key", "key": "api-key"},
        }
    }
    for doc in docs[1:]:
        doc["spec"]["failover"] = copy.deepcopy(failover)
    return docs


@dataclass
class Fleet:
    testbed: Testbed
    runner: PodRunner
    namespace: str
    url: str
    hosted: HostedAPI
    docs: list[dict[str, Any]] = field(default_factory=list)

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=30)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        body: dict[str, Any] | None = self.testbed.get(kind, name, namespace=self.namespace)
        return body

    def pool(self) -> dict[str, Any]:
        body = self.get("tritonserverpool", "toy-pool")
        assert body is not None
        return body

    def pods(self) -> list[dict[str, Any]]:
        found = self.testbed.get("pods", "-l", POOL_PODS, namespace=self.namespace)["items"]
        return [p for p in found if not p["metadata"].get("deletionTimestamp")]

    def wait(self, check: Callable[[], Any], seconds: float, what: str) -> Any:
        return self.testbed.wait_for(check, seconds, what)

    def ready(self, kind: str, name: str, pods: int = 2) -> dict[str, Any] | None:
        body = self.get(kind, name)
        states = [p["state"] for p in ((body or {}).get("status") or {}).get("pods") or []]
        ok = condition(body, "Ready").get("status") == "True" and states == ["Ready"] * pods
        return body if ok else None


def ask(client: OpenAI, model: str, prompt: str = "the pool answers") -> tuple[str, str, str]:
    """One chat completion: (answer, backend, pod)."""
    # The ensemble takes the prompt only (toy_rag has no max_tokens input).
    extra: dict[str, Any] = {} if model == "toy_rag" else {"max_tokens": 4}
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **extra
    )
    answer = raw.parse().choices[0].message.content or ""
    return (
        answer,
        raw.headers.get("x-tritonfleet-backend", ""),
        raw.headers.get("x-tritonfleet-pod", ""),
    )


def gibibytes_used(pool: dict[str, Any]) -> int:
    """The pool's GPU memory placed, over every replica (from "20Gi/32Gi")."""
    return int(pool["status"]["memorySummary"].split("/")[0].removesuffix("Gi"))


def index(pod: dict[str, Any]) -> dict[str, list[str]]:
    """The pod's own repository index: model name -> the states of its versions."""
    request = urllib.request.Request(
        f"http://{pod['status']['podIP']}:8000/v2/repository/index", data=b"{}"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        entries = json.loads(response.read())
    out: dict[str, list[str]] = {}
    for entry in entries:
        out.setdefault(entry["name"], []).append(entry.get("state", ""))
    return out


@contextlib.contextmanager
def load(
    client_of: Callable[[], OpenAI], models: tuple[str, ...], workers: int = 3
) -> Iterator[dict[str, list[Any]]]:
    """Clients asking ``models`` in a loop until the block ends: outcomes and failures."""
    seen: dict[str, list[Any]] = {"ok": [], "failed": []}
    stop = threading.Event()

    def loop(worker: int) -> None:
        client = client_of()
        i = 0
        while not stop.is_set():
            model = models[(worker + i) % len(models)]
            try:
                _, backend, pod = ask(client, model, f"request {worker} {i}")
                seen["ok"].append((time.monotonic(), model, backend, pod))
            except Exception as error:
                seen["failed"].append(f"{model}: {error!r}")
            i += 1
            time.sleep(0.05)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(loop, w) for w in range(workers)]
        try:
            yield seen
        finally:
            stop.set()
            for future in futures:
                future.result()


@pytest.fixture(scope="module")
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    try:
        yield api
    finally:
        api.stop()


def setup(
    testbed: Testbed, runner: PodRunner, chart: Serving, models: str, hosted: HostedAPI
) -> Fleet:
    """The fleet applied on the chart's operator and gateway, and Ready."""
    testbed.kubectl("create", "secret", "generic", "hosted-api-key",
                    f"--from-literal=api-key={HOSTED_KEY}", "-n", models)  # fmt: skip
    fleet = Fleet(testbed, runner, models, chart.gateway_url, hosted, fleet_documents(hosted))
    started = time.monotonic()
    testbed.apply("\n---\n".join(json.dumps(d) for d in fleet.docs), namespace=models)
    for doc in fleet.docs[1:]:
        kind, name = str(doc["kind"]), str(doc["metadata"]["name"])
        fleet.wait(lambda k=kind, n=name: fleet.ready(k, n), 360,
                   f"{name} Ready on the 2 pool pods")  # fmt: skip
    print(f"pool of 2 replicas with 6 models and the ensemble Ready in "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip
    # The gateways read Ready from the models' status on their own poll: wait until each
    # chat model is routed to the pool (not answered by the failover) before the tests ask.
    client = fleet.client()
    for model in (*LLMS, "toy_rag"):
        fleet.wait(lambda m=model: ask(client, m)[1] == "triton", 60,
                   f"the gateway routing {model} to the pool")  # fmt: skip
    return fleet


@pytest.fixture(scope="module")
def fleet(testbed: Testbed, tritonfleet_image: str, hosted: HostedAPI) -> Iterator[Fleet]:
    from hack.devtools.pod_runner import PodRunner

    apply_crds(testbed)
    runner = PodRunner(testbed.kubeconfig, testbed.state_dir, project_image=tritonfleet_image)
    runner.start()
    system = f"tf-system-{uuid.uuid4().hex[:5]}"
    try:
        with serving(testbed, runner, system) as chart, testbed.namespace("pool") as models:
            try:
                yield setup(testbed, runner, chart, models, hosted)
            finally:
                delete_models(testbed, models)  # while the operator runs to release them
    finally:
        runner.stop()


def test_a_pool_of_two_serves_six_models_and_an_ensemble_loaded_once_per_pod(fleet: Fleet) -> None:
    pool = fleet.pool()
    assert pool["status"]["modelSummary"] == "7/7"
    assert pool["status"]["replicaSummary"] == "2/2"
    assert pool["status"]["memorySummary"] == "20Gi/32Gi"
    assert condition(pool, "Placed")["status"] == "True"
    table = fleet.testbed.kubectl("get", "tsp", "-n", fleet.namespace).stdout
    assert table.split()[:6] == ["NAME", "READY", "MODELS", "REPLICAS", "MEMORY", "AGE"], table
    assert table.split()[6:11] == ["toy-pool", "True", "7/7", "2/2", "20Gi/32Gi"], table
    # One Deployment for everything: the pool's.
    deployments = fleet.testbed.get("deployments", namespace=fleet.namespace)["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["tsp-toy-pool"]
    pods = fleet.pods()
    assert len(pods) == 2
    placed = {r["pod"] for r in pool["status"]["placement"]}
    assert placed == {p["metadata"]["name"] for p in pods}
    # Each pod's own index: every model once, READY (members loaded once, not per user).
    expected = {"toy_embed", "vector_search", "toy_rag", *LLMS}
    for pod in pods:
        held = index(pod)
        loaded = {name for name, states in held.items() if "READY" in states}
        assert loaded == expected, held
        assert all(len(states) == 1 for name, states in held.items() if name in expected)
    client = fleet.client()
    for model in (*LLMS, "toy_rag"):
        answer, backend, _ = ask(client, model)
        assert backend == "triton" and answer, model
    embedding = client.embeddings.create(model="toy_embed", input=["a shared pool"])
    assert len(embedding.data[0].embedding) == 64


def test_a_seventh_model_that_does_not_fit_is_refused_with_the_numbers(fleet: Fleet) -> None:
    before = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
              for p in fleet.pods()}  # fmt: skip
    big = copy.deepcopy(next(d for d in fleet.docs if d["metadata"]["name"] == "toy-llm-d"))
    big["metadata"]["name"] = "toy-big"
    big["spec"]["modelName"] = "toy_big"
    big["spec"]["serving"]["pool"]["memory"] = "8Gi"
    fleet.testbed.apply(json.dumps(big), namespace=fleet.namespace)

    def refused() -> dict[str, Any] | None:
        placed = condition(fleet.get("tritonmodel", "toy-big"), "Placed")
        return placed if placed.get("reason") == "DoesNotFit" else None

    placed = fleet.wait(refused, 120, "toy-big refused by placement")
    assert placed["status"] == "False"
    assert "needs 8Gi on 2 replicas; free: 6Gi, 6Gi" in placed["message"], placed
    body = fleet.get("tritonmodel", "toy-big")
    assert body is not None and body["status"].get("pods", []) == []
    assert condition(fleet.pool(), "Placed")["reason"] == "DoesNotFit"

    def pool_warned() -> bool:
        events = fleet.testbed.get("events", "--field-selector",
                                   "involvedObject.kind=TritonServerPool",
                                   namespace=fleet.namespace)["items"]  # fmt: skip
        return any(e["reason"] == "DoesNotFit" and "toy-big" in e["message"] for e in events)

    fleet.wait(pool_warned, 30, "a DoesNotFit Warning on the pool naming toy-big")
    assert fleet.pool()["status"]["modelSummary"] == "7/8"
    # Nothing restarted, nothing else moved, everything else still answers.
    after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in fleet.pods()}  # fmt: skip
    assert after == before
    # Its files may be synced to the shared repository, which Triton's index lists as
    # unavailable; what matters is that no pod ever loaded it.
    for pod in fleet.pods():
        assert "READY" not in index(pod).get("toy_big", []), index(pod)
    client = fleet.client()
    for model in LLMS:
        assert ask(client, model)[1] == "triton"
    fleet.testbed.kubectl("delete", "tritonmodel", "toy-big", "-n", fleet.namespace,
                          "--timeout=120s", timeout=150)  # fmt: skip
    fleet.wait(lambda: fleet.pool()["status"]["modelSummary"] == "7/7", 60, "the pool at 7/7")


def test_deleting_a_pooled_model_unloads_it_everywhere_and_the_others_keep_serving(
    fleet: Fleet,
) -> None:
    claim = fleet.testbed.get("pvc", "tritonfleet-models", namespace=fleet.namespace)
    repository = Path(fleet.testbed.pv_path(claim["spec"]["volumeName"]), "repository")
    assert (repository / "toy_llm_c").exists()
    with load(fleet.client, ("toy_llm", "toy_llm_b", "toy_rag")) as seen:
        time.sleep(1)
        fleet.testbed.kubectl("delete", "tritonmodel", "toy-llm-c", "-n", fleet.namespace,
                              "--timeout=120s", timeout=150)  # fmt: skip
        fleet.wait(lambda: not (repository / "toy_llm_c").exists(), 60, "toy_llm_c's files gone")
        time.sleep(1)
    assert seen["failed"] == [], seen["failed"][:5]
    assert len(seen["ok"]) > 10 and {b for _, _, b, _ in seen["ok"]} == {"triton"}
    for pod in fleet.pods():
        assert "READY" not in index(pod).get("toy_llm_c", []), index(pod)
    fleet.wait(lambda: fleet.pool()["status"]["memorySummary"] == "16Gi/32Gi", 60,
               "the pool's memory freed")  # fmt: skip


def test_an_idle_pooled_model_is_unloaded_and_the_next_request_brings_it_back(
    fleet: Fleet,
) -> None:
    idle_after = 30
    used_before = gibibytes_used(fleet.pool())
    patch = {"spec": {"serving": {"pool": {"scaleToZeroAfterSeconds": idle_after}}}}
    fleet.testbed.kubectl("patch", "tritonmodel", "toy-llm-d", "-n", fleet.namespace,
                          "--type=merge", "-p", json.dumps(patch))  # fmt: skip

    def unloaded() -> dict[str, Any] | None:
        body = fleet.get("tritonmodel", "toy-llm-d")
        placed = condition(body, "Placed")
        gone = body is not None and not body["status"].get("pods")
        return body if placed.get("reason") == "ScaledToZero" and gone else None

    # Idle is counted from its last request (the tests before asked it), not the patch.
    body = fleet.wait(unloaded, idle_after + 120, "toy-llm-d unloaded from the pool")
    assert "no request for 30 s" in condition(body, "Placed")["message"]
    for pod in fleet.pods():
        assert "READY" not in index(pod).get("toy_llm_d", [])
    replicas = len(fleet.pool()["status"]["placement"])
    fleet.wait(lambda: gibibytes_used(fleet.pool()) == used_before - 2 * replicas, 60,
               "its memory freed on every replica")  # fmt: skip
    # The next request: answered (by the hosted failover while it loads), and it
    # brings the model back onto the pool.
    client = fleet.client()
    asked = time.monotonic()
    answer, backend, _ = ask(client, "toy_llm_d", "anyone home?")
    assert answer and backend in ("hosted", "triton")
    fleet.wait(lambda: fleet.ready("TritonModel", "toy-llm-d"), 120, "toy-llm-d loaded again")
    print(f"pooled model back from zero {time.monotonic() - asked:.1f} s after a request")

    def from_triton() -> bool:
        with contextlib.suppress(Exception):
            return ask(client, "toy_llm_d")[1] == "triton"
        return False

    fleet.wait(from_triton, 60, "the gateway routing toy_llm_d to the pool again")
    events = fleet.testbed.get("events", "--field-selector",
                               "involvedObject.kind=TritonModel,involvedObject.name=toy-llm-d",
                               namespace=fleet.namespace)["items"]  # fmt: skip
    assert {"ScaledToZero", "Activated"} <= {e["reason"] for e in events}
    off = {"spec": {"serving": {"pool": {"scaleToZeroAfterSeconds": None}}}}
    fleet.testbed.kubectl("patch", "tritonmodel", "toy-llm-d", "-n", fleet.namespace,
                          "--type=merge", "-p", json.dumps(off))  # fmt: skip


def test_the_pool_scales_on_queue_time_and_a_new_replica_serves_once_loaded(
    fleet: Fleet,
) -> None:
    pod = fleet.pods()[0]
    ip = pod["status"]["podIP"]
    stop = threading.Event()

    def spike() -> None:
        # Straight at one pod, each token 100 ms: a dozen clients queue on one instance.
        body = {"text_input": "a b c", "max_tokens": 4, "token_delay_ms": 100}
        while not stop.is_set():
            request = urllib.request.Request(
                f"http://{ip}:8000/v2/models/toy_llm/generate", data=json.dumps(body).encode()
            )
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=60).read()

    threads = [threading.Thread(target=spike, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    try:
        with load(fleet.client, ("toy_llm_b", "toy_rag")) as seen:
            started = time.monotonic()
            fleet.wait(lambda: len(fleet.pods()) == 3, 90, "the HPA adding a third pool replica")
            print(f"queue-time spike to a third pool replica: {time.monotonic() - started:.1f} s")
            old = {r["pod"] for r in fleet.pool()["status"]["placement"][:2]}
            new = next(p["metadata"]["name"] for p in fleet.pods()
                       if p["metadata"]["name"] not in old)  # fmt: skip
            ready_at: float | None = None
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                body = fleet.get("tritonmodel", "toy-llm-b")
                states = {
                    p["name"]: p["state"] for p in (body or {}).get("status", {}).get("pods", [])
                }
                if states.get(new) == "Ready":
                    ready_at = time.monotonic()
                    break
                time.sleep(0.1)
            assert ready_at is not None, "toy-llm-b never Loaded on the new replica"
            fleet.wait(lambda: any(p == new for _, m, _, p in seen["ok"] if m == "toy_llm_b"), 60,
                       "the gateway routing toy_llm_b to the new replica")  # fmt: skip
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=70)
    assert seen["failed"] == [], seen["failed"][:5]
    first = min(t for t, m, _, p in seen["ok"] if p == new and m == "toy_llm_b")
    assert first >= ready_at - 0.2, "routed to the new replica before it was Loaded there"
    pool = fleet.pool()
    assert pool["status"]["replicaSummary"] == "3/3"
    for replica in pool["status"]["placement"]:
        assert set(replica["models"]) >= {"toy_llm_b", "toy_rag"}


def test_a_pool_pod_killed_under_load_fails_no_request_and_reloads_its_models(
    fleet: Fleet,
) -> None:
    pod = fleet.pods()[0]
    name = pod["metadata"]["name"]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    with load(fleet.client, ("toy_llm", "toy_llm_b", "toy_rag"), workers=4) as seen:
        time.sleep(1)
        fleet.runner.kill(fleet.namespace, name)

        def back() -> bool:
            current = fleet.get("pod", name)
            if current is None:
                return False
            count = current["status"]["containerStatuses"][0]["restartCount"]
            models = fleet.get("tritonmodel", "toy-llm-b")
            states = {
                p["name"]: p["state"] for p in (models or {}).get("status", {}).get("pods", [])
            }
            return count > restarts and states.get(name) == "Ready"

        killed = time.monotonic()
        fleet.wait(back, 180, f"{name} restarted")

        def reloaded() -> bool:
            with contextlib.suppress(OSError):
                held = index(fleet.get("pod", name) or pod)
                loaded = {n for n, states in held.items() if "READY" in states}
                return {"toy_llm", "toy_llm_b", "toy_rag", "toy_embed", "vector_search"} <= loaded
            return False

        fleet.wait(reloaded, 180, f"{name}'s models loaded again after its restart")
        print(f"killed pool pod serving its models again {time.monotonic() - killed:.1f} s later")
        time.sleep(1)
    assert seen["failed"] == [], seen["failed"][:5]
    assert len(seen["ok"]) > 20
