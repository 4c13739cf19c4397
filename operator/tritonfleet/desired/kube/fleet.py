"""The fleet at a glance: one row per TritonModel/ModelEnsemble, what ``tritonfleet get``
prints before anyone reaches for ``kubectl describe``.

Each row is read from the object's status (conditions, replicas, pods, served-by)
plus two live numbers when they can be had: the queue time the operator serves as an
external metric, and what the gateways counted for the model (hosted spend,
failovers). Pure: bodies and numbers in, rows and text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from tritonfleet.desired.triton.metrics import samples


@dataclass(frozen=True)
class GatewayCounts:
    """What every gateway replica counted for one OpenAI model name, summed."""

    hosted_usd: float = 0.0
    failovers: float = 0.0
    requests: float = 0.0


@dataclass(frozen=True)
class FleetRow:
    namespace: str
    kind: str
    name: str
    model: str  # Triton's name (and, by default, the OpenAI name)
    ready: str  # the Ready condition: True, False, Unknown
    reason: str  # why not Ready (the condition's reason), "" when Ready
    loaded: str  # "2/2": pods serving the current revision / pods known
    replicas: str  # "ready/desired"
    revision: str
    served_by: str
    queue_ms: float | None  # None: no live value (not autoscaled, or no data)
    hosted_usd: float | None  # None: no gateway could be read
    failovers: float | None
    message: str  # the Ready condition's message when not Ready

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COST = "tritonfleet_gateway_cost_usd_total"
_FAILOVERS = "tritonfleet_gateway_failovers_total"
_REQUESTS = "tritonfleet_gateway_requests_total"


def gateway_counts(texts: Iterable[str]) -> dict[str, GatewayCounts]:
    """Each gateway replica's ``/metrics`` → counts per model, summed over the replicas
    (counters since each replica started)."""
    out: dict[str, GatewayCounts] = {}
    for text in texts:
        for name, labels, value in samples(text, (_COST, _FAILOVERS, _REQUESTS)):
            model = labels.get("model")
            if model is None:
                continue
            counts = out.get(model, GatewayCounts())
            if name == _COST and labels.get("backend") == "hosted":
                counts = replace(counts, hosted_usd=counts.hosted_usd + value)
            elif name == _FAILOVERS:
                counts = replace(counts, failovers=counts.failovers + value)
            elif name == _REQUESTS:
                counts = replace(counts, requests=counts.requests + value)
            out[model] = counts
    return out


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in status.get("conditions") or ():
        if condition.get("type") == type_:
            return dict(condition)
    return {}


def fleet_rows(
    bodies: Iterable[Mapping[str, Any]],
    queue_seconds: Mapping[tuple[str, str], float],
    gateway: Mapping[str, GatewayCounts] | None,
) -> list[FleetRow]:
    """Rows sorted by namespace, kind and name. ``queue_seconds`` by (namespace, Triton
    name); ``gateway`` by model name, None when no gateway's metrics could be read."""
    rows = []
    for body in bodies:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        status = body.get("status") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        model = str(spec.get("modelName") or name)
        ready = _condition(status, "Ready")
        revision = str(status.get("revision") or "")
        pods = status.get("pods") or []
        serving = sum(
            1 for p in pods if p.get("state") == "Ready" and p.get("revision") == revision
        )
        counts = gateway.get(model, GatewayCounts()) if gateway is not None else None
        rows.append(
            FleetRow(
                namespace=namespace,
                kind=str(body.get("kind") or ""),
                name=name,
                model=model,
                ready=str(ready.get("status") or "Unknown"),
                reason="" if ready.get("status") == "True" else str(ready.get("reason") or ""),
                loaded=f"{serving}/{len(pods)}",
                replicas=f"{status.get('readyReplicas') or 0}/{status.get('replicas') or 0}",
                revision=revision,
                served_by=str(status.get("servedBy") or ""),
                queue_ms=(
                    queue_seconds[(namespace, model)] * 1000
                    if (namespace, model) in queue_seconds
                    else None
                ),
                hosted_usd=counts.hosted_usd if counts is not None else None,
                failovers=counts.failovers if counts is not None else None,
                message="" if ready.get("status") == "True" else str(ready.get("message") or ""),
            )
        )
    return sorted(rows, key=lambda r: (r.namespace, r.kind, r.name))


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def fleet_table(rows: Sequence[FleetRow], *, wide: bool = False) -> str:
    """The rows as a kubectl-style table (``wide`` adds revision, failovers and why)."""
    header = ["NAMESPACE", "KIND", "NAME", "READY", "LOADED", "REPLICAS", "QUEUE(ms)", "HOSTED($)"]
    header += ["SERVED-BY"]
    if wide:
        header += ["REVISION", "FAILOVERS", "REASON", "MESSAGE"]
    lines = [header]
    for r in rows:
        ready = r.ready if not r.reason else f"{r.ready}({r.reason})"
        line = [r.namespace, r.kind, r.name, ready, r.loaded, r.replicas]
        line += [_number(r.queue_ms, ".1f"), _number(r.hosted_usd, ".4f"), r.served_by or "-"]
        if wide:
            line += [r.revision or "-", _number(r.failovers, ".0f"), r.reason or "-"]
            line += [r.message.replace("\n", " ")[:120] or "-"]
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in lines
    )
