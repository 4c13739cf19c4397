"""Benchmark: 1,000 TritonModels applied at once on the testbed.

Measures, with the operator running as a local process against the real
API server (hack/testbed):

* time from the first create until every model has all its children
  (ConfigMap, sync Job, Service, Deployment) and a status naming its revision
  (target: <= 30 s), and until every status reports the Deployment;
* API requests the operator issued, by verb (its own /metrics: reconciler and kopf);
* operator RSS at the end and at its peak (target: <= 150 MB);
* API writes during 60 idle seconds afterwards (target: 0), counted both by the
  operator and by the API server itself (apiserver_request_total).

Not a test: prints figures. ``make bench`` runs it; ``BENCH_MODELS`` and
``BENCH_IDLE_SECONDS`` shrink it for a quick look.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from hack.devtools import testbed as tb  # noqa: E402
from hack.devtools.operator import (  # noqa: E402
    WRITE_VERBS,
    OperatorProcess,
    apply_crds,
    parse_metrics,
)
from tritonfleet.adapters.kube import (  # noqa: E402
    ApiError,
    KubeClient,
    endpoint_from_kubeconfig,
)

MODELS = int(os.environ.get("BENCH_MODELS", "1000"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "300"))

# Resources whose writes the operator could cause; the API server's own counter
# over these (verbs that write) is the independent idle-write check.
WATCHED_RESOURCES = {
    "tritonmodels",
    "modelensembles",
    "deployments",
    "jobs",
    "services",
    "configmaps",
    "persistentvolumeclaims",
    "events",
}
WRITE_HTTP_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"}


def model(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {
                "inline": {"files": {"1/model.py": f"# {name}\nclass TritonPythonModel: pass\n"}}
            },
            "config": {
                "backend": "python",
                "maxBatchSize": 8,
                "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
            },
            # CPU models: the testbed has 32 GPUs, not 1,000.
            "serving": {"gpus": 0},
        },
    }


async def create_all(client: KubeClient, namespace: str, count: int) -> float:
    semaphore = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with semaphore:
            await client.create(model(f"bench-{i:04d}", namespace))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


async def count(client: KubeClient, kind: str, namespace: str) -> int:
    """How many managed children of ``kind`` exist: a metadata-only list, light on the server."""
    body = await client.request(
        "GET",
        kind,
        namespace,
        params={"labelSelector": "app.kubernetes.io/managed-by=tritonfleet"},
        accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    )
    return len(body.get("items") or [])


async def progress(client: KubeClient, namespace: str) -> dict[str, int]:
    models = await client.list("TritonModel", namespace)
    statuses = [m.get("status") or {} for m in models]
    counts = {
        "status": sum(1 for s in statuses if s.get("revision")),
        "synced": sum(
            1
            for s in statuses
            if any(c["type"] == "Synced" and c["status"] == "True" for c in s.get("conditions", []))
        ),
        "deployment_in_status": sum(1 for s in statuses if s.get("deployment")),
        "ready": sum(
            1
            for s in statuses
            if any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
        ),
    }
    for kind in ("ConfigMap", "Job", "Service", "Deployment"):
        counts[kind] = await count(client, kind, namespace)
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (load-independent cost of the operator)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apiserver_writes(bed: tb.Testbed) -> int:
    text = bed.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0
    for name, labels, value in parse_metrics(text):
        if name != "apiserver_request_total":
            continue
        if labels.get("resource") in WATCHED_RESOURCES and labels.get("verb") in WRITE_HTTP_VERBS:
            total += int(value)
    return total


def mb(value: float) -> str:
    return f"{value / 2**20:.0f} MB"


async def run(bed: tb.Testbed) -> None:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    bed.kubectl("create", "namespace", namespace)
    operator = OperatorProcess(bed, [namespace], log_path=Path(f"/tmp/{namespace}-operator.log"))
    operator.start()
    client = KubeClient(endpoint_from_kubeconfig(bed.kubeconfig), max_connections=64)
    try:
        before = operator.requests_by_verb()
        cpu_before = cpu_seconds(operator.pid)
        print(f"creating {MODELS} TritonModels in namespace {namespace} ...", flush=True)
        t0 = time.perf_counter()
        create_seconds = await create_all(client, namespace, MODELS)
        print(f"  created in {create_seconds:.1f}s", flush=True)
        children_done = status_done = None
        counts: dict[str, int] = {}
        while time.perf_counter() - t0 < TIMEOUT:
            counts = await progress(client, namespace)
            elapsed = time.perf_counter() - t0
            kinds = ("ConfigMap", "Job", "Service", "Deployment")
            children = all(counts[k] >= MODELS for k in kinds)
            if children and counts["status"] >= MODELS and children_done is None:
                children_done = elapsed
                cpu_children = cpu_seconds(operator.pid) - cpu_before
                writes_children = operator.writes()
            if counts["synced"] >= MODELS and counts["deployment_in_status"] >= MODELS:
                status_done = elapsed
                break
            print(f"  t={elapsed:5.1f}s {json.dumps(counts)}", flush=True)
            await asyncio.sleep(2.0)
        rss_end, rss_peak = operator.rss_bytes(), operator.rss_bytes(peak=True)
        cpu_total = cpu_seconds(operator.pid) - cpu_before
        after = operator.requests_by_verb()
        issued = {v: int(after.get(v, 0) - before.get(v, 0)) for v in sorted(after)}
        # "Nothing changed" needs the rest of the cluster to settle too: Deployments
        # rolling their pods (the controller-manager is slow under this load) change
        # readiness, which the operator rightly reports. Wait until its writes stop.
        print("waiting for the cluster to settle (no operator write for 15 s) ...", flush=True)
        settle_start = time.perf_counter()
        last, quiet_since = operator.writes(), time.perf_counter()
        while time.perf_counter() - quiet_since < 15 and time.perf_counter() - settle_start < 600:
            await asyncio.sleep(3)
            now_writes = operator.writes()
            if now_writes != last:
                last, quiet_since = now_writes, time.perf_counter()
        settled_after = time.perf_counter() - settle_start
        final = await progress(client, namespace)
        op_writes_0, api_writes_0 = operator.writes(), apiserver_writes(bed)
        idle_by_verb_0 = operator.requests_by_verb()
        await asyncio.sleep(IDLE_SECONDS)
        op_writes_1, api_writes_1 = operator.writes(), apiserver_writes(bed)
        idle_by_verb_1 = operator.requests_by_verb()
        idle_requests = {
            v: int(idle_by_verb_1.get(v, 0) - idle_by_verb_0.get(v, 0))
            for v in sorted(idle_by_verb_1)
            if idle_by_verb_1.get(v, 0) != idle_by_verb_0.get(v, 0)
        }
        load = os.getloadavg()
        print()
        print(f"== bench_operator: {MODELS} TritonModels, one namespace, inline sources")
        print(
            "  machine load average (1/5/15 min)             "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores"
        )
        print(f"  creates sent by the bench client              {create_seconds:6.1f} s")
        shown = f"{children_done:6.1f} s" if children_done is not None else "  not reached"
        print(f"  all children exist + status written           {shown}  (target <= 30 s)")
        if children_done is not None:
            print(
                f"    operator CPU until then                     {cpu_children:6.1f} s, "
                f"writes {int(writes_children)}"
            )
        shown = f"{status_done:6.1f} s" if status_done is not None else "  not reached"
        print(f"  every model Synced, Deployment in status      {shown}")
        print(f"  operator CPU for the whole burst              {cpu_total:6.1f} s")
        print(f"  API requests by the operator, by verb:        {json.dumps(issued)}")
        print(
            f"    writes: {sum(v for k, v in issued.items() if k in WRITE_VERBS)}"
            f" ({sum(v for k, v in issued.items() if k in WRITE_VERBS) / MODELS:.1f} per model)"
        )
        print(
            f"  operator RSS at the end / peak                {mb(rss_end)} / {mb(rss_peak)}"
            "  (target <= 150 MB)"
        )
        print(
            f"  settled after a further                       {settled_after:6.1f} s: "
            f"{json.dumps(final)}"
        )
        print(
            f"  idle {IDLE_SECONDS:.0f}s: operator writes                  "
            f"{int(op_writes_1 - op_writes_0)}  (target 0)"
        )
        print(
            f"  idle {IDLE_SECONDS:.0f}s: API server writes on operator resources "
            f"{api_writes_1 - api_writes_0} (any client: controllers and kwok included)"
        )
        print(
            f"  idle {IDLE_SECONDS:.0f}s: operator requests by verb         "
            f"{json.dumps(idle_requests)}"
        )
    finally:
        print(
            "cleaning up (namespace deletion; the operator releases its finalizers) ...", flush=True
        )
        with_timeout = time.perf_counter()
        bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        while time.perf_counter() - with_timeout < 300 and bed.get("namespace", namespace):  # noqa: ASYNC110
            await asyncio.sleep(2)
        operator.stop()
        await client.close()
        try:
            bed.recycle_volumes()
        except tb.TestbedError as error:
            print(f"  could not recycle volumes: {error}")


def main() -> int:
    bed = tb.Testbed.from_environment()
    if not bed.is_healthy():
        bed = tb.start()
    apply_crds(bed)
    try:
        asyncio.run(run(bed))
    except ApiError as error:
        print(f"API error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
