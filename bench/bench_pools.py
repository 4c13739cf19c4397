"""Benchmark: what a pool saves, and how fast placement decides (no cluster needed).

* GPUs requested by the demo fleet (the runnable samples: toy-llm, toy-llm-stream and
  the toy RAG ensemble over toy-embed, vector-search and toy-llm) as each model's own
  Deployment requests them on a GPU cluster (``gpus`` left at its default, 1), against
  the same models on one pool of 2 replicas of 1 GPU each, in the same run. Both
  counted from the Deployments the operator's own builders produce.
* Time to place 50 models (1-2 GiB each, and an ensemble over three of them) on a
  2-replica pool of 80 GiB per replica: the pure placement, and the pool's whole
  reconcile plan (children, status, events), each the median of repeated runs.

* Time to place and load 50 models into a 2-replica pool of real Triton servers: the
  e2e machinery of ``tests/e2e/test_pools.py`` on its own testbed (``TESTBED_NAME``
  poolbench, state in ``.bench/``): the chart's operator and gateway ``helm install``ed
  and the pool's tritonserver pods run by the local pod runner. One ``kubectl apply`` of
  the pool (2 replicas, CPU) and ``--models`` (50) distinct TritonModels, each the
  cheapest model there is here (a python-backend identity, ~1 stub process per model
  and replica). From the apply: when every model is Placed, when both pool pods are
  Ready, when every model is Loaded (Ready on both replicas); per model, the seconds
  from its placement to Loaded (median, p90, max); then the operator's and Triton's
  resident memory and CPU seconds, read from /proc. Status is polled every 0.25 s.

The machine has 2 shared cores: the load average is printed with the figures.

Not a test: prints figures.
``.venv/bin/python bench/bench_pools.py [--placement-only] [--models 50] [--keep-testbed]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))
# Our own testbed, never the default one another session may be using.
os.environ.setdefault("TESTBED_NAME", "poolbench")
os.environ.setdefault("TESTBED_DIR", str(ROOT / ".bench" / f"testbed-{os.environ['TESTBED_NAME']}"))

from hack.devtools import testbed as tb  # noqa: E402
from hack.devtools.chart import serving  # noqa: E402
from hack.devtools.image import ensure_image, podman  # noqa: E402
from hack.devtools.operator import apply_crds, condition, delete_models  # noqa: E402
from hack.devtools.pod_runner import Api, PodRunner  # noqa: E402
from tritonfleet.api.pool import TritonServerPool  # noqa: E402
from tritonfleet.api.settings import OperatorSettings  # noqa: E402
from tritonfleet.desired.kube.placement import PoolItem, place  # noqa: E402
from tritonfleet.desired.kube.pool import (  # noqa: E402
    PooledObject,
    plan_pool,
    pool_deployment,
    pool_target,
)
from tritonfleet.desired.kube.preview import preview_objects  # noqa: E402

RUNNABLE = ROOT / "manifests" / "samples" / "runnable"
GI = 2**30
SETTINGS = OperatorSettings()


def gpus_of(deployment: dict[str, Any]) -> int:
    spec = deployment["spec"]
    per_pod = sum(
        int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
        for c in spec["template"]["spec"]["containers"]
    )
    return per_pod * int(spec.get("replicas", 1))


def demo_fleet_on_gpus() -> tuple[int, int]:
    """(Deployments, GPUs) of the demo fleet, each model on its own Deployment."""
    docs = [
        d
        for path in sorted(RUNNABLE.glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    for doc in docs:
        doc["spec"].get("serving", {}).pop("gpus", None)  # the default: a GPU per replica
    deployments = [o for o in preview_objects(docs, SETTINGS) if o["kind"] == "Deployment"]
    return len(deployments), sum(gpus_of(d) for d in deployments)


def pooled_on_gpus() -> tuple[int, int]:
    """(Deployments, GPUs) of the same models on one pool of 2 replicas x 1 GPU."""
    doc = next(
        d
        for d in yaml.safe_load_all((RUNNABLE / "pool" / "toy-pool.yaml").read_text())
        if d and d["kind"] == "TritonServerPool"
    )
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = "default"
    doc["spec"]["gpus"] = 1
    doc["spec"].pop("autoscaling", None)
    doc["spec"]["replicas"] = {"min": 2, "max": 2}
    dep = pool_deployment(pool_target(TritonServerPool.from_object(doc)), SETTINGS)
    return 1, gpus_of(dep)


def fifty() -> list[PooledObject]:
    objects = [
        PooledObject("TritonModel", f"m{i:02d}", f"m{i:02d}", (1 + i % 2) * GI) for i in range(50)
    ]
    objects.append(PooledObject("ModelEnsemble", "rag", "rag", 0, members=("m00", "m01", "m02")))
    return objects


def pool_body() -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonServerPool",
        "metadata": {"name": "bench", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"gpus": 1, "gpuMemory": "80Gi", "replicas": {"min": 2, "max": 2}},
    }


def median_ms(run: Any, times: int = 50) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def placement_figures() -> None:
    own, own_gpus = demo_fleet_on_gpus()
    pools, pool_gpus = pooled_on_gpus()
    print(f"demo fleet, a Deployment per model: {own} Deployments, {own_gpus} GPUs requested")
    print(f"demo fleet on one pool of 2 replicas: {pools} Deployment, {pool_gpus} GPUs requested")

    objects = fifty()
    items = [
        PoolItem(
            o.key,
            o.triton_name,
            o.memory,
            o.replicas,
            tuple(("TritonModel", m) for m in o.members),
        )
        for o in objects
    ]
    placed = place(items, 2, 80 * GI)
    refused = [k for k, v in placed.items.items() if v.state == "DoesNotFit"]
    print(
        f"50 models + 1 ensemble on 2 x 80Gi: used {[u // GI for u in placed.used]} GiB, "
        f"{len(refused)} refused"
    )
    print(f"  placement alone: {median_ms(lambda: place(items, 2, 80 * GI)):.2f} ms (median)")
    now = datetime.now(UTC)
    body = pool_body()
    whole = median_ms(lambda: plan_pool(body, objects, [], {}, None, SETTINGS, now), 20)
    print(f"  the pool's whole reconcile plan: {whole:.2f} ms (median)")


# ------------------------------------------------------------ loading into real Triton

POOL = "bench"
POOL_PODS = f"tritonfleet.io/kind=tritonserverpool,tritonfleet.io/model={POOL}"
REPLICAS = 2
IDENTITY = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]
            )
            for r in requests
        ]
"""


def loading_documents(models: int) -> list[dict[str, Any]]:
    """A CPU pool of 2 replicas and ``models`` identity models placed on it."""
    pool = {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonServerPool",
        "metadata": {"name": POOL},
        "spec": {"gpus": 0, "gpuMemory": f"{models}Gi", "replicas": {"min": 2, "max": 2}},
    }
    tensor = {"dataType": "TYPE_FP32", "dims": [1]}
    return [pool] + [
        {
            "apiVersion": "tritonfleet.io/v1alpha1",
            "kind": "TritonModel",
            "metadata": {"name": f"m{i:02d}"},
            "spec": {
                "modelName": f"m{i:02d}",
                "source": {"inline": {"files": {"1/model.py": IDENTITY}}},
                "config": {
                    "backend": "python",
                    "maxBatchSize": 8,
                    "inputs": [{"name": "x", **tensor}],
                    "outputs": [{"name": "y", **tensor}],
                    "instanceGroups": [{"kind": "KIND_CPU", "count": 1}],
                },
                "serving": {"pool": {"name": POOL, "memory": "1Gi"}},
            },
        }
        for i in range(models)
    ]


def loaded(model: dict[str, Any]) -> bool:
    """Ready, and Ready on every replica of the pool."""
    states = [p.get("state") for p in (model.get("status") or {}).get("pods") or []]
    return condition(model, "Ready").get("status") == "True" and states == ["Ready"] * REPLICAS


@dataclass
class Timeline:
    """Seconds from the apply at which each thing was first seen."""

    placed: dict[str, float] = field(default_factory=dict)
    loaded: dict[str, float] = field(default_factory=dict)
    pods_ready: float | None = None


def watch(api: Api, ns: str, names: set[str], applied: float, timeout: float) -> Timeline:
    models_path = f"/apis/tritonfleet.io/v1alpha1/namespaces/{ns}/tritonmodels"
    pods_path = f"/api/v1/namespaces/{ns}/pods?labelSelector={POOL_PODS.replace('/', '%2F')}"
    seen = Timeline()
    deadline = applied + timeout
    while len(seen.loaded) < len(names):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(
                f"{len(seen.placed)} placed, {len(seen.loaded)}/{len(names)} Loaded "
                f"after {timeout:.0f} s"
            )
        for model in api.get(models_path)["items"]:
            name = model["metadata"]["name"]
            if condition(model, "Placed").get("status") == "True":
                seen.placed.setdefault(name, now - applied)
            if loaded(model):
                seen.loaded.setdefault(name, now - applied)
        if seen.pods_ready is None:
            pods = api.get(pods_path)["items"]
            ready = [
                p
                for p in pods
                if any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (p.get("status") or {}).get("conditions") or [])
            ]  # fmt: skip
            if len(ready) == REPLICAS:
                seen.pods_ready = now - applied
        time.sleep(0.25)
    return seen


def process_tree_usage(root: int) -> tuple[int, float, int]:
    """(resident bytes, CPU seconds, processes) of ``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    rss, cpu, count, todo = 0, 0.0, 0, [root]
    ticks = os.sysconf("SC_CLK_TCK")
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
        rss += int(stat[21]) * os.sysconf("SC_PAGE_SIZE")
        count += 1
    return rss, cpu, count


def operator_usage(bed: tb.Testbed, system: str) -> tuple[int, float, int, int]:
    """(resident bytes, CPU seconds since its container started, processes, restarts) of
    the operator: the host process tree of its running container (podman runs it)."""
    pod = bed.get("pods", "-l", "app.kubernetes.io/component=operator", namespace=system)
    status = pod["items"][0]["status"]["containerStatuses"][0]
    name = status["containerID"].removeprefix("podman://")
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    return (*process_tree_usage(pid), int(status["restartCount"]))


def triton_pids(runner: PodRunner, ns: str) -> list[int]:
    return [
        int(p["pid"])
        for p in runner.processes()
        if p["namespace"] == ns and p["runs"] == "process" and p["pid"]
    ]


def spread(values: list[float]) -> str:
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else 0
    return f"median {statistics.median(values):.1f} s, p90 {p90:.1f} s, max {max(values):.1f} s"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def loading_figures(bed: tb.Testbed, runner: PodRunner, models: int) -> None:
    """Apply the pool and ``models`` models, print the figures once all are Loaded
    (before the teardown, which is slow on a loaded machine)."""
    system = f"tfb-system-{uuid.uuid4().hex[:5]}"
    docs = loading_documents(models)
    names = {str(d["metadata"]["name"]) for d in docs if d["kind"] == "TritonModel"}
    mib = 2**20
    with serving(bed, runner, system), bed.namespace("poolbench") as ns:
        try:
            print(f"load average before the apply: {load_average()}", flush=True)
            applied = time.monotonic()
            bed.apply("\n---\n".join(json.dumps(d) for d in docs), namespace=ns)
            seen = watch(Api(bed.kubeconfig), ns, names, applied, timeout=900)
            load_after = load_average()
            operator_rss, operator_cpu, _, operator_restarts = operator_usage(bed, system)
            triton = [process_tree_usage(pid) for pid in triton_pids(runner, ns)]
            pool = bed.get("tritonserverpool", POOL, namespace=ns)["status"]
            print(f"\n== {models} python-backend identity models and a pool of {REPLICAS} CPU "
                  "Triton replicas, one kubectl apply")  # fmt: skip
            print(f"  pool: models {pool.get('modelSummary')}, replicas "
                  f"{pool.get('replicaSummary')}, memory {pool.get('memorySummary')}")  # fmt: skip
            print(f"  all placed:      {max(seen.placed.values()):6.1f} s after the apply")
            print(f"  pool pods Ready: {seen.pods_ready or float('nan'):6.1f} s")
            print(f"  all Loaded:      {max(seen.loaded.values()):6.1f} s (Ready on both replicas)")
            print(f"  per model, apply -> Loaded:  {spread(list(seen.loaded.values()))}")
            per_model = [seen.loaded[n] - seen.placed.get(n, 0.0) for n in names]
            print(f"  per model, Placed -> Loaded: {spread(per_model)}")
            print(f"  operator: RSS {operator_rss / mib:.0f} MiB, CPU {operator_cpu:.1f} s since "
                  f"its container started, {operator_restarts} restart(s)")  # fmt: skip
            print(f"  Triton: {len(triton)} servers, {sum(n for _, _, n in triton)} processes "
                  f"(servers and python stubs), RSS {sum(r for r, _, _ in triton) / mib:.0f} MiB, "
                  f"CPU {sum(c for _, c, _ in triton):.1f} s")  # fmt: skip
            print(f"  load average when all Loaded: {load_after} ({os.cpu_count()} cores)",
                  flush=True)  # fmt: skip
        finally:
            delete_models(bed, ns)
    print(f"  load average after the teardown: {load_average()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--placement-only", action="store_true", help="no cluster, no Triton")
    parser.add_argument("--models", type=int, default=50, help="models loaded into the pool")
    parser.add_argument("--keep-testbed", action="store_true", help="leave the testbed running")
    args = parser.parse_args()
    placement_figures()
    if args.placement_only:
        return 0
    image = ensure_image()
    with tb.for_a_run(keep=args.keep_testbed) as bed:
        apply_crds(bed)
        with PodRunner(bed.kubeconfig, bed.state_dir, project_image=image) as runner:
            loading_figures(bed, runner, args.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
