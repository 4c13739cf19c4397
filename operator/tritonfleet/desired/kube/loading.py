"""The loader's Kubernetes side, decided purely: which Triton pods belong to
which object, which of them the operator may dial and act on, what the loader
writes to status (``status.pods``, ``Loaded``, ``Ready``), which Events it posts,
and when a deleted model's files may go.

Where it sits: ``handlers.loading`` keeps a pod index (kopf, server-side label
selector on the operator's Triton pods), gathers an object's pods with
:func:`pods_of`, splits them with :func:`select_pods`, observes and converges
the dialable ones through ``adapters.triton_repository``, and plans with
``desired.triton.loading.plan_loading``. What it writes comes from
:func:`loading_status` and :func:`loading_events`, so an unchanged fleet means
an identical status and no write. No I/O here.

Each pod is judged against what its own template names (``tritonfleet.io/serves``:
the models and revisions it loads from their pinned repositories, see
``desired.kube.objects``), so during a rollout the old pods serve the old revision
and the new pods the new one, both Ready. Which pods are acted on (loads, i.e.
retries of the pod's own revision) and which only observed:

* a pod whose template names what it serves is acted on: a load re-reads its own
  pinned revision, never another (no second copy of a model on its GPU);
* a pod from before rollouts (no such annotation) is observed and reported against
  its template's revision, never loaded: the next rollout replaces it;
* a terminating pod is reported as such (the gateways stop choosing it at once) and
  never dialled;
* a pod outside ``dialPodNetworks`` is never dialled at all.

The readiness gate ``tritonfleet.io/loaded`` of each pod follows its state
(:func:`gate_changes`): True once it serves its revision and ``status.pods`` says so,
which is when the gateways can route to it; only then may a Deployment count it
available and remove an old pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tritonfleet.api.status import (
    AVAILABLE,
    LOADED,
    PLACED,
    READY,
    SYNCED,
    VALID,
    ModelStatus,
    PodModelState,
    find_condition,
    set_condition,
)
from tritonfleet.desired.kube.events import Event
from tritonfleet.desired.kube.objects import (
    COMPONENT_SERVER,
    FIELD_MANAGER,
    LABEL_COMPONENT,
    LABEL_KIND,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LOADED_GATE,
    REVISION_ANNOTATION,
    SERVES_ANNOTATION,
    Target,
    label_value,
    parse_serves,
)
from tritonfleet.desired.triton.loading import (
    REASON_LOAD_FAILED,
    LoadPlan,
    LoadTarget,
    PodObservation,
    PodPlan,
    WantedModel,
)

#: Server-side label selector of the Triton pods the loader watches.
TRITON_POD_SELECTOR = f"{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_COMPONENT}={COMPONENT_SERVER}"

PodKey = tuple[str, str, str]  # namespace, kind label, model label


@dataclass(frozen=True)
class TritonPod:
    """What the loader needs of one Triton pod (from its watch event)."""

    namespace: str
    name: str
    uid: str
    owner: PodKey
    ip: str | None = None
    phase: str = ""
    ready: bool = False  # the Kubernetes Ready condition (shown, not relied on)
    deleting: bool = False
    revision: str = ""  # the pod template's tritonfleet.io/revision
    created: str = ""
    serves: str = ""  # the pod template's tritonfleet.io/serves
    gated: bool = False  # the pod has our readiness gate
    gate: str = ""  # its condition's status: "True", "False", "" (not set yet)

    @property
    def usable(self) -> bool:
        """Can take repository calls: Running, with an IP, not terminating.

        Not the Ready condition: with ``--strict-readiness`` a pod whose load failed
        is NotReady, which is exactly the pod whose failure status must show.
        """
        return self.phase == "Running" and bool(self.ip) and not self.deleting


def summarize_pod(body: Mapping[str, Any]) -> TritonPod:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = body.get("status") or {}
    conditions = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    gate = next((str(c.get("status")) for c in conditions if c.get("type") == LOADED_GATE), "")
    gates = (body.get("spec") or {}).get("readinessGates") or ()
    annotations = meta.get("annotations") or {}
    namespace = str(meta.get("namespace") or "")
    return TritonPod(
        namespace=namespace,
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        owner=(namespace, str(labels.get(LABEL_KIND, "")), str(labels.get(LABEL_MODEL, ""))),
        ip=str(status["podIP"]) if status.get("podIP") else None,
        phase=str(status.get("phase") or ""),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        revision=str(annotations.get(REVISION_ANNOTATION, "")),
        created=str(meta.get("creationTimestamp") or ""),
        serves=str(annotations.get(SERVES_ANNOTATION, "")),
        gated=any(isinstance(g, Mapping) and g.get("conditionType") == LOADED_GATE for g in gates),
        gate=gate,
    )


def pod_key_of(target: Target) -> PodKey:
    """The index key under which ``target``'s Triton pods are found."""
    return (target.namespace, target.kind.lower(), label_value(target.name))


def owner_of_pod(pod: TritonPod, owner_names: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """(kind, name) of the object a pod serves, among ``owner_names`` (kind, name)
    of its namespace; None when none matches. Labels hold a possibly shortened
    name, so the match goes through :func:`label_value`."""
    _, kind_label, model_label = pod.owner
    for kind, name in owner_names:
        if kind.lower() == kind_label and label_value(name) == model_label:
            return (kind, name)
    return None


def pods_of(target: Target, pods: Iterable[TritonPod]) -> tuple[TritonPod, ...]:
    """``target``'s pods, oldest first (stable order: a stable ``status.pods``)."""
    key = pod_key_of(target)
    return tuple(sorted((p for p in pods if p.owner == key), key=lambda p: (p.created, p.name)))


def load_target(target: Target) -> LoadTarget:
    """What every pod must serve: the model, or the members then the ensemble."""
    if target.kind == "ModelEnsemble":
        revisions = dict(target.member_revisions)
        members = [WantedModel(name, revisions.get(name, "")) for name in target.load_models[:-1]]
        return LoadTarget.ensemble(target.triton_name, target.revision, members)
    return LoadTarget.model(target.triton_name, target.revision)


def wanted_by(pod: TritonPod, target: Target) -> LoadTarget:
    """What ``pod`` was started to serve: its template's ``tritonfleet.io/serves``; for a
    pod from before rollouts, the target's models at its template's revision (members
    at any revision: its template does not say)."""
    serves = parse_serves(pod.serves)
    if serves:
        *members, (name, revision) = serves
        if target.kind == "ModelEnsemble":
            return LoadTarget.ensemble(name, revision, [WantedModel(m, r) for m, r in members])
        return LoadTarget.model(name, revision)
    revision = pod.revision or target.revision
    if target.kind == "ModelEnsemble":
        members_any = [WantedModel(name, "") for name in target.load_models[:-1]]
        return LoadTarget.ensemble(target.triton_name, revision, members_any)
    return LoadTarget.model(target.triton_name, revision)


# --- which pods to dial, which to act on ------------------------------------------------


@dataclass(frozen=True)
class PodSelection:
    """``dial``: pods to observe; ``act``: names of those whose plan is carried out;
    ``blocked``: observations of pods the operator must not dial (said why);
    ``leaving``: terminating pods (reported, never dialled)."""

    dial: tuple[TritonPod, ...]
    act: frozenset[str]
    blocked: tuple[PodObservation, ...]
    order: tuple[str, ...]  # every pod, in status order
    leaving: tuple[PodObservation, ...] = ()


def select_pods(
    pods: Sequence[TritonPod],
    *,
    may_dial: Callable[[str], bool],
    networks: Sequence[str] = (),
    pooled_synced: bool | None = None,
) -> PodSelection:
    """Split ``pods`` into dialled, acted on, blocked and leaving (see the module
    docstring).

    ``pooled_synced``: None for a model's own pods, acted on when their template names
    what they serve; for a pooled model, whether its revision is synced: a pool's pods
    are tied to no model's revision and load the repository's current one, so every
    usable one is acted on once the files are there.
    """
    dial: list[TritonPod] = []
    act: set[str] = set()
    blocked: list[PodObservation] = []
    leaving: list[PodObservation] = []
    for pod in pods:
        if pod.deleting:
            leaving.append(PodObservation(pod.name, pod.ip, False, terminating=True))
            continue
        if pod.ip and pod.usable and not may_dial(pod.ip):
            allowed = ", ".join(networks) or "none"
            blocked.append(
                PodObservation(
                    pod.name,
                    pod.ip,
                    True,
                    error=f"not reachable: pod IP {pod.ip} is outside the networks the operator "
                    f"may dial (dialPodNetworks: {allowed}); not dialled",
                )
            )
            continue
        dial.append(pod)
        if pod.usable and (pod.serves if pooled_synced is None else pooled_synced):
            act.add(pod.name)
    return PodSelection(
        tuple(dial),
        frozenset(act),
        tuple(blocked),
        tuple(p.name for p in pods),
        tuple(leaving),
    )


def in_order(
    selection: PodSelection, observed: Sequence[PodObservation]
) -> tuple[PodObservation, ...]:
    """Observed, blocked and leaving pods together, in the selection's pod order."""
    by_name = {o.name: o for o in (*observed, *selection.blocked, *selection.leaving)}
    return tuple(by_name[n] for n in selection.order if n in by_name)


def gate_changes(
    pods: Sequence[TritonPod], states: Sequence[PodModelState]
) -> list[tuple[TritonPod, bool, str]]:
    """(pod, loaded, why) for each gated pod whose ``tritonfleet.io/loaded`` condition must
    change: True once the pod serves what it was started for (and ``status.pods``, which
    the gateways read, says so), False when it stops."""
    by_name = {s.name: s for s in states}
    out = []
    for pod in pods:
        state = by_name.get(pod.name)
        if not pod.gated or pod.deleting or state is None:
            continue
        loaded = state.state == "Ready"
        if (pod.gate == "True") != loaded:
            why = (
                f"serves revision {state.revision}"
                if loaded
                else (state.message or state.state)[:512]
            )
            out.append((pod, loaded, why))
    return out


def restrict(plan: LoadPlan, act: frozenset[str]) -> LoadPlan:
    """``plan`` with the actions of pods outside ``act`` dropped (observe only)."""
    pods = tuple(p if p.pod in act else PodPlan(p.pod, p.ip, p.ready) for p in plan.pods)
    return replace(plan, pods=pods)


# --- status and events --------------------------------------------------------------------


def loading_status(
    old: ModelStatus, plan: LoadPlan, now: str, *, generation: int | None = None
) -> ModelStatus | None:
    """``old`` with ``status.pods`` and ``Loaded`` from ``plan``; None when that
    changes nothing (no write). While not Loaded, ``Ready`` goes False at once
    (the reconcile turns it True again, it also checks the rollout)."""
    condition = plan.condition
    if generation is not None:
        condition = condition.model_copy(update={"observed_generation": generation})
    conditions = set_condition(old.conditions, condition, now)
    ready = find_condition(conditions, READY)
    if condition.status != "True" and ready is not None:
        # The same Ready the reconcile computes (the first condition not True
        # explains it), so that it finds nothing left to write.
        first = next(
            c
            for t in (VALID, SYNCED, PLACED, AVAILABLE, LOADED)
            if (c := find_condition(conditions, t)) is not None and c.status != "True"
        )
        conditions = set_condition(
            conditions,
            ready.model_copy(
                update={
                    "status": "False",
                    "reason": first.reason,
                    "message": f"{first.type}: {first.message}",
                    "observed_generation": generation,
                }
            ),
            now,
        )
    new = old.model_copy(update={"conditions": list(conditions), "pods": list(plan.states)})
    return None if new.to_wire() == old.to_wire() else new


def loading_events(old: ModelStatus, new: ModelStatus, plan: LoadPlan) -> tuple[Event, ...]:
    """One Warning per failure transition (a pod newly Failed, or a new Triton
    message on it), not one per retry; one Normal when ``Loaded`` turns True."""
    before = {p.name: p for p in old.pods}
    fresh = [
        p
        for p in new.pods
        if p.state == "Failed"
        and (
            p.name not in before
            or before[p.name].state != "Failed"
            or before[p.name].message != p.message
        )
    ]
    events: list[Event] = []
    if fresh:
        by_revision: dict[str, dict[str, list[str]]] = {}
        for pod in fresh:
            revision = pod.wanted or plan.target.primary.revision
            by_revision.setdefault(revision, {}).setdefault(pod.message, []).append(pod.name)
        name = plan.target.primary.name
        for revision, groups in by_revision.items():
            text = "; ".join(f"{', '.join(pods)}: {message}" for message, pods in groups.items())
            message = f"loading {name} revision {revision} failed on {text}"
            events.append(Event("Warning", REASON_LOAD_FAILED, message[:1024]))
    was = find_condition(old.conditions, LOADED)
    now = find_condition(new.conditions, LOADED)
    if now is not None and now.status == "True" and (was is None or was.status != "True"):
        events.append(Event("Normal", now.reason, now.message[:1024]))
    return tuple(events)


# --- deletion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnloadGate:
    """Whether the cleanup Job may remove the files, and an Event to post once."""

    proceed: bool
    event: Event | None = None


def unload_gate(
    done: bool | None, waiting: Sequence[str], waited: float, timeout: float
) -> UnloadGate:
    """``done``: None while the unload runs, else whether every pod let go.

    The files go once every pod unloaded the model, or after ``timeout``
    seconds whatever the pods say (an unreachable pod serves nobody and must not
    hold deletion for ever); a Warning then names the pods that did not confirm.
    """
    if done:
        return UnloadGate(True)
    if done is False or waited >= timeout:
        who = "; ".join(waiting) or "the unload did not finish"
        return UnloadGate(
            True,
            Event(
                "Warning",
                "UnloadIncomplete",
                f"removing the model files although not every pod confirmed the unload "
                f"within {int(timeout)}s: {who}"[:1024],
            ),
        )
    return UnloadGate(False)


def scrape_targets(
    pods: Iterable[TritonPod],
    models: Mapping[tuple[str, str, str], Sequence[str]],
    may_dial: Callable[[str], bool],
    metrics_port: int,
) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(namespace, Triton model) → [(pod, metrics URL)] for the queue-time collector
    (``scaling.collector``), from the same pod watch the loader uses.

    ``models[(kind, ns, owner)]`` are the Triton models the owner's Deployment loads (an
    ensemble's members and itself). Only Ready pods, not terminating, whose IP the
    operator may dial count; a known model without such a pod maps to ``[]`` (no data).
    """
    by_pod_key: dict[PodKey, Sequence[str]] = {
        (ns, kind.lower(), label_value(name)): names for (kind, ns, name), names in models.items()
    }
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for pod in pods:
        if not pod.ready or pod.deleting or not pod.ip or not may_dial(pod.ip):
            continue
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        for model in by_pod_key.get(pod.owner, ()):
            out.setdefault((pod.namespace, model), []).append(
                (pod.name, f"http://{host}:{metrics_port}")
            )
    for key in [(k[1], m) for k, ms in models.items() for m in ms]:
        out.setdefault(key, [])  # known but no ready pod: no data, not absent
    return out
