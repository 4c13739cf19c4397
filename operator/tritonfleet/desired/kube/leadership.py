"""Which operator replica is the active one: a ``coordination.k8s.io/v1`` Lease, decided purely.

Several operator replicas may run (the chart's ``operator.replicaCount``); all of
them watch, so a standby has the cluster in memory when it takes over, but only
the holder of the Lease writes: the reconciler, the loader, scale to zero, and
the queue-time collector and metrics API run there alone. Why a Lease of our own
and not kopf's peering: peering pauses only kopf's own handlers (the operator's
work runs in its own loops, started once per process), and replicas of equal
priority all freeze. The loop that reads and writes the Lease is
``handlers.leadership``; this module says what a Lease read means and what to
write back, like client-go's leader election:

* the holder renews ``renewTime`` every few seconds and steps down (stops its
  work) when it could not renew for a renew deadline shorter than the lease;
* a standby takes the Lease over only once it has seen the record unchanged for
  ``leaseDurationSeconds`` by its *own* clock (no trust in the other's clock);
* a holder shutting down clears ``holderIdentity``, so a standby takes over at
  its next look instead of after the lease duration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from tritonfleet.desired.kube.objects import LABEL_MANAGED_BY

# On the active operator pod only: the external metrics API's Service selects it,
# so the aggregator never reaches a standby (which has no queue-time data).
LEADER_LABEL = "tritonfleet.io/leader"

Decision = Literal["acquire", "renew", "wait"]


@dataclass(frozen=True)
class LeaseState:
    """What one read of the Lease says."""

    holder: str  # "" when nobody holds it (released)
    duration_s: float
    transitions: int
    acquired: str | None  # acquireTime, kept across renewals
    version: str  # resourceVersion: tells a renewal from a record left alone


def lease_state(obj: dict[str, Any]) -> LeaseState:
    spec = obj.get("spec") or {}
    return LeaseState(
        holder=str(spec.get("holderIdentity") or ""),
        duration_s=float(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquired=spec.get("acquireTime"),
        version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
    )


def decide(state: LeaseState | None, me: str, unchanged_for_s: float) -> Decision:
    """What to do after a read. ``unchanged_for_s``: how long this replica has seen
    the same record (resourceVersion), by its own clock."""
    if state is None or not state.holder:
        return "acquire"
    if state.holder == me:
        return "renew"
    if unchanged_for_s > state.duration_s:
        return "acquire"  # its holder stopped renewing: gone, or cut off from the API
    return "wait"


def micro_time(now: datetime) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds, UTC)."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_object(
    namespace: str,
    name: str,
    me: str,
    duration_s: float,
    now: datetime,
    previous: LeaseState | None,
) -> dict[str, Any]:
    """The Lease held by ``me``: a new one, a take-over of ``previous``, or its renewal."""
    renewing = previous is not None and previous.holder == me
    transitions = previous.transitions if previous is not None else 0
    if previous is not None and not renewing:
        transitions += 1
    acquired = previous.acquired if renewing and previous is not None else micro_time(now)
    obj: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: "tritonfleet"},
        },
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": max(1, round(duration_s)),
            "acquireTime": acquired,
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        },
    }
    if previous is not None:
        # A conditional write: it fails (409) if anyone wrote the Lease since our read.
        obj["metadata"]["resourceVersion"] = previous.version
    return obj


def released(previous: LeaseState, now: datetime) -> dict[str, Any]:
    """The patch a holder shutting down writes: nobody holds it, take it now."""
    return {
        "metadata": {"resourceVersion": previous.version},
        "spec": {"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": micro_time(now)},
    }
