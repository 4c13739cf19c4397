"""Benchmark: what a pool saves, and how fast placement decides (no cluster needed).

* GPUs requested by the demo fleet (the runnable samples: toy-llm, toy-llm-stream and
  the toy RAG ensemble over toy-embed, vector-search and toy-llm) as each model's own
  Deployment requests them on a GPU cluster (``gpus`` left at its default, 1), against
  the same models on one pool of 2 replicas of 1 GPU each, in the same run. Both
  counted from the Deployments the operator's own builders produce.
* Time to place 50 models (1-2 GiB each, and an ensemble over three of them) on a
  2-replica pool of 80 GiB per replica: the pure placement, and the pool's whole
  reconcile plan (children, status, events), each the median of repeated runs.

Loading the 50 models into real Triton servers is not measured here (the e2e
``tests/e2e/test_pools.py`` prints the time to Ready of its 7-item pool).

Not a test: prints figures. ``python bench/bench_pools.py``.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

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


def main() -> None:
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


if __name__ == "__main__":
    main()
