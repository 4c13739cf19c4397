"""The operator's own Prometheus metrics, served on ``/metrics`` (its own port).

Reconciles (by kind and outcome), their duration, errors, the work queue,
and how many objects the operator manages. The API requests it issues, by
verb, are counted where they are made (``adapters.kube``) and exported here too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
