"""The operator's own Prometheus metrics, served on ``/metrics`` (its own port).

Reconciles (by kind and outcome), their duration, errors, the work queue,
how many objects the operator manages, and per model its status conditions,
replicas and queue-time target (what the chart's alerts and dashboard read). The
API requests it issues, by verb, are counted where they are made (``adapters.kube``)
and exported here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tritonfleet import __version__

BUILD_INFO = Gauge(
    "tritonfleet_build_info",
    "Always 1; the labels say which tritonfleet runs here.",
    ["version", "component"],
)
BUILD_INFO.labels(__version__, "operator").set(1)

RECONCILES = Counter(
    "tritonfleet_reconcile_total",
    "Reconciles run, by kind and outcome (noop: nothing written; changed; error).",
    ["kind", "outcome"],
)
RECONCILE_SECONDS = Histogram(
    "tritonfleet_reconcile_seconds",
    "Duration of one reconcile, writes included.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "tritonfleet_reconcile_errors_total",
    "Reconciles that failed, by kind and reason (the API server's reason or exception type).",
    ["kind", "reason"],
)
QUEUE_DEPTH = Gauge("tritonfleet_reconcile_queue_depth", "Objects waiting for a reconcile.")
MANAGED = Gauge(
    "tritonfleet_managed_objects",
    "Objects the operator manages, by kind (owners and their children).",
    ["kind"],
)
WRITES = Counter(
    "tritonfleet_writes_total",
    "Writes the reconciler decided on, by verb and kind (apply, create, delete...).",
    ["verb", "kind"],
)


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
    """Start the /metrics HTTP server on host:port in a daemon thread (port 0: disabled)."""
    if port:
        start_http_server(port, addr=host)


CONDITION_VALUES = {"True": 1.0, "False": 0.0}


def _owner_series(body: Mapping[str, Any]) -> Iterator[tuple[str, list[str], float]]:
    """(metric, label values, value) of one TritonModel or ModelEnsemble, from its status."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    name = str(meta.get("name") or "")
    base = [str(meta.get("namespace") or ""), str(body.get("kind") or ""), name]
    model = str(spec.get("modelName") or name)  # Triton's name: joins the queue-time series
    for condition in status.get("conditions") or ():
        value = CONDITION_VALUES.get(str(condition.get("status")), -1.0)
        kind_reason = [str(condition.get("type")), str(condition.get("reason") or "")]
        yield "condition", [*base, model, *kind_reason], value
    for state, field in (("desired", "replicas"), ("ready", "readyReplicas")):
        if status.get(field) is not None:
            yield "replicas", [*base, model, state], float(status[field])
    target = ((spec.get("serving") or {}).get("autoscaling") or {}).get("queueTimeTargetMs")
    if target is not None:
        yield "target", [*base, model], float(target) / 1000


class ModelStatusCollector(Collector):
    """Per-model series read from the operator's memory at scrape time (no gauges kept,
    so a deleted model's series go with it and a thousand models cost no resident memory)."""

    def __init__(self, owners: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.owners = owners

    def collect(self) -> Iterable[Metric]:
        labels = ["namespace", "kind", "name", "model"]
        families = {
            "condition": GaugeMetricFamily(
                "tritonfleet_model_condition",
                "Status conditions of each TritonModel/ModelEnsemble: 1 True, 0 False, "
                "-1 Unknown (Valid, Synced, Available, Loaded, Ready, Autoscaling), with "
                "the condition's reason (e.g. ScaledToZero, SyncFailed).",
                labels=[*labels, "condition", "reason"],
            ),
            "replicas": GaugeMetricFamily(
                "tritonfleet_model_replicas",
                "Triton replicas of each model, by state (desired, ready), from its status.",
                labels=[*labels, "state"],
            ),
            "target": GaugeMetricFamily(
                "tritonfleet_model_queue_time_target_seconds",
                "serving.autoscaling.queueTimeTargetMs of each autoscaled model, in seconds.",
                labels=labels,
            ),
        }
        for body in self.owners():
            for family, values, value in _owner_series(body):
                families[family].add_metric(values, value)
        yield from families.values()


_status_collector: ModelStatusCollector | None = None


def collect_model_status(owners: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
    """Serve the per-model series of ``owners`` on the operator's /metrics (once per process;
    a later call, e.g. a new operator in the same test process, takes over)."""
    global _status_collector
    if _status_collector is None:
        _status_collector = ModelStatusCollector(owners)
        REGISTRY.register(_status_collector)
    _status_collector.owners = owners
