"""Models on the testbed for the chaos suite's control-plane cases, and what
"converged" and "no duplicates, no orphans" mean for them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import yaml

from hack.devtools.operator import WRITE_VERBS, OperatorProcess, cpu_model
from hack.devtools.testbed import Testbed

CHILD_KINDS = ("deployments", "services", "configmaps")


def apply(testbed: Testbed, ns: str, models: dict[str, int]) -> None:
    docs = [cpu_model(name, version) for name, version in models.items()]
    testbed.apply(yaml.safe_dump_all(docs), namespace=ns)


def _converged(obj: dict[str, Any]) -> bool:
    """Status at the latest generation, Available, and the loader has reported."""
    status = obj.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    return bool(
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and conditions.get("Available", {}).get("status") == "True"
        and conditions.get("Loaded", {}).get("reason") == "Unreachable"
    )


def converged(testbed: Testbed, ns: str, live: set[str]) -> bool:
    items = testbed.get("tritonmodels", namespace=ns)["items"]
    names = {m["metadata"]["name"] for m in items}
    return names == live and all(_converged(m) for m in items)


def children_problems(testbed: Testbed, ns: str, live: set[str]) -> list[str]:
    """Duplicates (two children of one kind for a model) and orphans (a child of a
    model that is gone, or of none)."""
    models = {m["metadata"]["uid"]: m["metadata"]["name"]
              for m in testbed.get("tritonmodels", namespace=ns)["items"]}  # fmt: skip
    problems: list[str] = []
    for kind in CHILD_KINDS:
        items = testbed.get(kind, "-l", "app.kubernetes.io/managed-by=tritonfleet", namespace=ns)
        owners: Counter[str] = Counter()
        for item in items["items"]:
            refs = [r for r in item["metadata"].get("ownerReferences", [])
                    if r.get("kind") == "TritonModel"]  # fmt: skip
            if not refs or refs[0]["uid"] not in models:
                problems.append(f"orphan {kind} {item['metadata']['name']}")
                continue
            owners[models[refs[0]["uid"]]] += 1
        problems += [f"{n} {kind} of {name}" for name, n in owners.items() if n > 1]
        if kind != "configmaps":  # a revision's ConfigMap is needed only until it is synced
            problems += [f"no {kind} of {name}" for name in live - set(owners)]
    return problems


def writes_besides_leadership(samples: Iterable[tuple[str, dict[str, str], float]]) -> float:
    """API writes counted in an operator's /metrics ``samples``, other than leader
    election's own (the Lease, and the label on its pod that selects the metrics
    API's endpoint)."""
    return sum(
        value
        for name, labels, value in samples
        if name == "tritonfleet_api_requests_total"
        and labels.get("verb") in WRITE_VERBS
        and labels.get("resource") not in ("leases", "pods")
    )


def work_writes(operator: OperatorProcess) -> float:
    """:func:`writes_besides_leadership` of an operator process."""
    return writes_besides_leadership(operator.metrics())
