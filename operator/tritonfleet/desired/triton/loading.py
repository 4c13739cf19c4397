"""Fleet-consistent loading, the pure half: what every Triton pod should do so
that each one serves the wanted revision, and what status says about it.

Where it sits: after ``tritonfleet sync`` has published a revision into the
shared repository, the reconciler observes every Triton pod of the model's
Deployment (``adapters.triton_repository.observe``), asks :func:`plan_loading`
what to do, lets ``adapters.triton_repository.converge`` carry the plan out on
every pod in parallel, and plans once more on the fresh observations to write
``status.pods`` and the ``Loaded`` condition. On deletion,
:func:`plan_unloading` says whether every pod has let go of the model, so the
files may be removed. No I/O here.

Why the revision is stamped into the config: Triton does not say *which files*
a loaded model came from. Its index gives a state per version, and a version
number does not change when the model's files do. So the sync writes the
revision into ``config.pbtxt`` as a parameter
(``desired.triton.revision.stamp_revision``), in the same atomic publish as the
files, and ``GET /v2/models/<m>/config`` on a pod then returns the revision that
pod really loaded (``desired.triton.revision.served_revision``).
Verified on tritonserver 2.51: the endpoint returns the config of the loaded
model. It is not re-read from disk, so after the files are swapped it still
shows the old revision until a load. A failed reload leaves the old model
serving, and the index keeps saying READY, which is why
:class:`ModelObservation` carries the error of the load call itself.

What "ready" means for a pod here: the pod can take repository calls (it is
Running, has an IP, is not terminating). It does NOT mean the Kubernetes Ready
condition. Triton runs with ``--strict-readiness``, so a pod whose load failed
turns NotReady (verified: ``/v2/health/ready`` answers 400 once a model failed
to load and has no READY version), and filtering on that condition would hide
exactly the failures status must show.

Each pod is judged against what *it* was started for: during a rollout pods of two
revisions serve side by side, each from its own pinned repository, so ``plan_loading``
takes the wanted models per pod (``wanted``) besides the object's target. ``Loaded``
says whether every ready pod serves what it was started for; whether the target has
reached every pod is the rollout's business (``desired.kube.rollout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tritonfleet.api.status import LOADED, Condition, PodModelState

TritonState = Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]
PodState = Literal["Pending", "Loading", "Ready", "Unavailable", "Failed", "Unloading"]
ActionKind = Literal["load", "reload", "unload"]

# Condition messages are capped by the CRD (metav1 allows 32768 characters);
# one pod's message is capped lower so a traceback on one pod cannot crowd out
# the others.
MAX_CONDITION_MESSAGE = 32768
MAX_POD_MESSAGE = 4096

REASON_LOADED = "Loaded"
REASON_LOAD_FAILED = "LoadFailed"
REASON_UNREACHABLE = "Unreachable"
REASON_LOADING = "Loading"
REASON_NO_READY_PODS = "NoReadyPods"

# Index reasons that are not failures: an unloaded model says "unloaded".
_BENIGN_REASONS = frozenset({"", "unloaded"})


# --- what is wanted -------------------------------------------------------------------------


@dataclass(frozen=True)
class WantedModel:
    """One Triton model name and the revision a pod must serve ("" : any revision,
    for a pod whose template does not say, from before rollouts)."""

    name: str
    revision: str

    def served_by(self, seen: ModelObservation) -> bool:
        return seen.state == "READY" and (not self.revision or seen.revision == self.revision)


@dataclass(frozen=True)
class LoadTarget:
    """The models one Deployment serves, in load order.

    A ``TritonModel`` is one model. A ``ModelEnsemble`` is its members and then
    the ensemble itself, the last entry and the *primary* that status speaks
    about. Triton resolves an ensemble's steps when it loads the ensemble, so
    members load first. Unloading goes the other way: unloading a member under
    a loaded ensemble turns the ensemble UNAVAILABLE (verified).
    """

    models: tuple[WantedModel, ...]

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a load target needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in load target: {names}")

    @classmethod
    def model(cls, name: str, revision: str) -> LoadTarget:
        return cls((WantedModel(name, revision),))

    @classmethod
    def ensemble(cls, name: str, revision: str, members: Sequence[WantedModel]) -> LoadTarget:
        """``members`` in the order their steps run; repeats are dropped."""
        seen: dict[str, WantedModel] = {}
        for member in members:
            seen.setdefault(member.name, member)
        return cls((*seen.values(), WantedModel(name, revision)))

    @property
    def primary(self) -> WantedModel:
        return self.models[-1]

    @property
    def names(self) -> tuple[str, ...]:
        """Load order: members first, the primary last."""
        return tuple(m.name for m in self.models)

    @property
    def unload_order(self) -> tuple[str, ...]:
        return tuple(reversed(self.names))


# --- what was observed ----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelObservation:
    """One model on one pod, as Triton reports it.

    ``state`` is the model-level state from the repository index (None: Triton
    has not tried to load it, or it is not in the repository). ``reason`` is
    the index's reason (``"unloaded"``, or the load failure Triton kept).
    ``revision`` is the stamp in the loaded config, known only while READY.
    ``error`` is what the last load or unload call returned, verbatim. After a
    failed *reload* this is the only trace of the failure, because the old
    model keeps serving and the index says READY.
    """

    state: TritonState | None = None
    reason: str = ""
    revision: str | None = None
    error: str = ""


@dataclass(frozen=True)
class PodObservation:
    """One Triton pod: identity, whether it can take calls, and what it holds.

    ``error`` is set when the pod could not be observed at all (refused,
    timed out, index failed); ``models`` is then empty.
    """

    name: str
    ip: str | None
    ready: bool
    models: Mapping[str, ModelObservation] = field(default_factory=dict)
    error: str = ""
    terminating: bool = False  # being removed: draining, never loaded or routed to again

    def model(self, name: str) -> ModelObservation:
        return self.models.get(name, ModelObservation())


_STATE_RANK: dict[str, int] = {"READY": 3, "LOADING": 2, "UNLOADING": 1, "UNAVAILABLE": 0}
_STATES: dict[str, TritonState] = {
    "READY": "READY",
    "LOADING": "LOADING",
    "UNLOADING": "UNLOADING",
    "UNAVAILABLE": "UNAVAILABLE",
}


def model_states_from_index(
    entries: Sequence[Mapping[str, Any]],
) -> dict[str, ModelObservation]:
    """Fold Triton's per-version index entries into one state per model.

    A model is READY if any version is (a new version loads next to the old
    one, which then goes UNLOADING), else LOADING, else UNLOADING, else
    UNAVAILABLE. A name listed without a version was never loaded and maps to
    state None. Unknown states are ignored rather than trusted.
    """
    best: dict[str, tuple[int, TritonState, str]] = {}
    names: dict[str, None] = {}  # first-seen order
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        names.setdefault(name)
        state = entry.get("state")
        if not isinstance(state, str) or state not in _STATES:
            continue
        reason = entry.get("reason")
        reason = reason if isinstance(reason, str) else ""
        rank = _STATE_RANK[state]
        # The highest-ranked state wins. Among UNAVAILABLE versions a real failure
        # reason beats "unloaded", so a failed new version is not hidden by an old
        # one that was unloaded.
        current = best.get(name)
        if (
            current is None
            or rank > current[0]
            or (rank == current[0] and current[2] in _BENIGN_REASONS and reason)
        ):
            best[name] = (rank, _STATES[state], reason)
    out: dict[str, ModelObservation] = {}
    for name in names:
        if name in best:
            _, state, reason = best[name]
            out[name] = ModelObservation(state=state, reason=reason)
        else:
            out[name] = ModelObservation()
    return out


# --- per-pod verdicts -----------------------------------------------------------------------


_SEVERITY: dict[str, int] = {
    "Ready": 0,
    "Pending": 1,
    "Loading": 2,
    "Unloading": 3,
    "Unavailable": 4,
    "Failed": 5,
}


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model_verdict(wanted: WantedModel, seen: ModelObservation) -> tuple[PodState, str]:
    """State and message for one wanted model on one reachable pod."""
    if wanted.served_by(seen):
        return "Ready", ""
    if seen.error:
        still = (
            f" (still serving revision {seen.revision})"
            if seen.state == "READY" and seen.revision
            else ""
        )
        return "Failed", seen.error.strip() + still
    if seen.state == "UNAVAILABLE" and seen.reason not in _BENIGN_REASONS:
        return "Failed", seen.reason.strip()
    if seen.state == "LOADING":
        return "Loading", "loading"
    if seen.state == "UNLOADING":
        return "Unloading", "unloading"
    if seen.state == "READY":
        served = seen.revision or "an unstamped config"
        return "Pending", f"serves {served}, wanted {wanted.revision}"
    if seen.state == "UNAVAILABLE":
        return "Pending", "unloaded"
    return "Pending", "not loaded"


def pod_model_state(target: LoadTarget, pod: PodObservation) -> PodModelState:
    """The ``status.pods[]`` entry for one pod: the worst state over the
    target's models, with Triton's own messages (model-prefixed for an
    ensemble), and the revision the primary model actually serves."""
    primary = pod.model(target.primary.name)
    revision = primary.revision if primary.state == "READY" else None
    started_for = target.primary.revision or None
    if pod.terminating:
        return PodModelState(
            name=pod.name,
            ip=pod.ip,
            revision=revision,
            wanted=started_for,
            state="Terminating",
            message="being removed: answers what it has in flight, takes no new requests",
        )
    if not pod.ready:
        return PodModelState(
            name=pod.name,
            ip=pod.ip,
            revision=revision,
            wanted=started_for,
            state="Unavailable",
            message=_clip(
                f"pod is not ready{': ' + pod.error if pod.error else ''}", MAX_POD_MESSAGE
            ),
        )
    if pod.error:
        return PodModelState(
            name=pod.name,
            ip=pod.ip,
            revision=None,
            wanted=started_for,
            state="Unavailable",
            message=_clip(pod.error, MAX_POD_MESSAGE),
        )
    worst: PodState = "Ready"
    messages: list[str] = []
    for wanted in target.models:
        state, message = _model_verdict(wanted, pod.model(wanted.name))
        if _SEVERITY[state] > _SEVERITY[worst]:
            worst = state
        if message:
            messages.append(f"{wanted.name}: {message}" if len(target.models) > 1 else message)
    return PodModelState(
        name=pod.name,
        ip=pod.ip,
        revision=revision,
        wanted=started_for,
        state=worst,
        message=_clip("; ".join(messages), MAX_POD_MESSAGE),
    )


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelAction:
    """One repository call on one pod. ``revision`` is what a load must end at
    (None for unloads); ``why`` is for logs and Events."""

    model: str
    kind: ActionKind
    revision: str | None
    why: str


@dataclass(frozen=True)
class PodPlan:
    """The calls for one pod, in the order they must run (empty: nothing to do)."""

    pod: str
    ip: str | None
    ready: bool
    actions: tuple[ModelAction, ...] = ()


@dataclass(frozen=True)
class LoadFailure:
    """A pod that failed to load a model, with Triton's message (for an Event)."""

    pod: str
    model: str
    message: str


@dataclass(frozen=True)
class LoadPlan:
    """What to do on every pod, and what status says right now.

    ``pods``, ``states`` and the observations are in the same order.
    """

    target: LoadTarget
    pods: tuple[PodPlan, ...]
    states: tuple[PodModelState, ...]
    condition: Condition
    failures: tuple[LoadFailure, ...]
    wanted: Mapping[str, LoadTarget] = field(default_factory=dict)  # per pod, if not target

    @property
    def names(self) -> tuple[str, ...]:
        """Every model any pod of the plan must hold (the target's first)."""
        names = dict.fromkeys(self.target.names)
        for load in self.wanted.values():
            names.update(dict.fromkeys(load.names))
        return tuple(names)

    @property
    def loaded(self) -> bool:
        return self.condition.status == "True"

    @property
    def has_work(self) -> bool:
        return any(p.actions for p in self.pods)


def _pod_actions(
    target: LoadTarget, pod: PodObservation, retire: Sequence[str]
) -> tuple[ModelAction, ...]:
    if not pod.ready or pod.error or pod.terminating:
        return ()
    actions: list[ModelAction] = []
    for wanted in target.models:
        seen = pod.model(wanted.name)
        if wanted.served_by(seen):
            continue
        if seen.state == "LOADING":
            # Someone (the pod's own --load-model at start, another reconcile) is
            # loading it; the executor waits for that load and checks the result
            # before sending its own.
            actions.append(ModelAction(wanted.name, "load", wanted.revision, "being loaded"))
        elif seen.state == "READY":
            why = f"serves {seen.revision or 'an unstamped config'}, wanted {wanted.revision}"
            actions.append(ModelAction(wanted.name, "reload", wanted.revision, why))
        else:
            why = "retrying after: " + _clip(seen.error, 200) if seen.error else "not loaded"
            actions.append(ModelAction(wanted.name, "load", wanted.revision, why))
    for name in retire:
        if name in target.names:
            continue
        if pod.model(name).state in ("READY", "LOADING"):
            actions.append(ModelAction(name, "unload", None, "no longer part of the target"))
    return tuple(actions)


def _failures(target: LoadTarget, pod: PodObservation) -> list[LoadFailure]:
    if not pod.ready or pod.error:
        return []
    out = []
    for wanted in target.models:
        state, message = _model_verdict(wanted, pod.model(wanted.name))
        if state == "Failed":
            out.append(LoadFailure(pod.name, wanted.name, message))
    return out


def _group(states: Sequence[PodModelState]) -> list[str]:
    """'pod-a, pod-b (Failed: msg)' with pods of identical state and message
    grouped, so a hundred pods failing the same way make one line."""
    groups: dict[tuple[str, str], list[str]] = {}
    for state in states:
        groups.setdefault((state.state, state.message), []).append(state.name)
    return [
        f"{', '.join(pods)} ({state}{': ' + message if message else ''})"
        for (state, message), pods in groups.items()
    ]


def _join_capped(head: str, parts: Sequence[str], limit: int) -> str:
    """``head`` and as many ``parts`` as fit in ``limit``, then how many were cut."""
    text = head
    for i, part in enumerate(parts):
        sep = "" if i == 0 else "; "
        # Leave room for the "… (N more)" tail.
        if len(text) + len(sep) + len(part) > limit - 40:
            return f"{text}{sep}… ({len(parts) - i} more)"
        text += sep + part
    return text


def _serving_what(target: LoadTarget, ready: Sequence[PodModelState]) -> str:
    """The target's model and revision, or the revisions the ready pods were started for
    when a rollout has pods of more than one."""
    primary = target.primary
    counts: dict[str, int] = {}
    for state in ready:
        key = state.wanted or primary.revision
        counts[key] = counts.get(key, 0) + 1
    if len(counts) <= 1:
        return f"{primary.name} revision {next(iter(counts), primary.revision)}"
    each = ", ".join(f"{rev} on {n}" for rev, n in counts.items())
    return f"{primary.name} at the revision each was started for ({each})"


def loaded_condition(
    target: LoadTarget,
    observations: Sequence[PodObservation],
    states: Sequence[PodModelState] | None = None,
    *,
    generation: int | None = None,
) -> Condition:
    """``Loaded``: True only when every ready pod serves every model it was started
    for, READY at its revision. Otherwise False, naming the pods that do not and
    quoting Triton's error for failed loads. Pods that are not ready are named too;
    they do not hold the condition back; terminating pods are left out.
    """
    if states is None:
        states = [pod_model_state(target, pod) for pod in observations]
    kept = [(pod, s) for pod, s in zip(observations, states, strict=True) if not pod.terminating]
    ready = [s for pod, s in kept if pod.ready]
    not_ready = [s for pod, s in kept if not pod.ready]
    what = _serving_what(target, [s for s in ready if s.state == "Ready"] or ready)
    lagging = [s for s in ready if s.state != "Ready"]
    # Not-ready pods are named, never hidden; the list is capped so that a
    # large fleet cannot push the failures out of the message.
    tail = _clip(f"; not ready: {', '.join(s.name for s in not_ready)}", 2048) if not_ready else ""

    if not ready:
        what = f"{target.primary.name} revision {target.primary.revision}"
        message = f"no ready Triton pod to load {what} on" if kept else "no Triton pods"
        status, reason = "False", REASON_NO_READY_PODS
        message += tail
    elif not lagging:
        status, reason = "True", REASON_LOADED
        message = f"{len(ready)}/{len(ready)} ready pods serve {what}{tail}"
    else:
        if any(s.state == "Failed" for s in lagging):
            reason = REASON_LOAD_FAILED
        elif any(s.state == "Unavailable" for s in lagging):
            reason = REASON_UNREACHABLE
        else:
            reason = REASON_LOADING
        status = "False"
        serving = len(ready) - len(lagging)
        head = f"{serving}/{len(ready)} ready pods serve {what}{tail}; not serving it: "
        # Failures first, so Triton's message survives any truncation.
        ordered = sorted(lagging, key=lambda s: -_SEVERITY[s.state])
        message = _join_capped(head, _group(ordered), MAX_CONDITION_MESSAGE)
    return Condition(
        type=LOADED,
        status=status,
        reason=reason,
        message=_clip(message, MAX_CONDITION_MESSAGE),
        observed_generation=generation,
    )


def plan_loading(
    target: LoadTarget,
    observations: Sequence[PodObservation],
    *,
    retire: Sequence[str] = (),
    generation: int | None = None,
    wanted: Mapping[str, LoadTarget] | None = None,
) -> LoadPlan:
    """Per pod, the loads/reloads that make it serve what it was started for
    (``wanted[pod]``, else ``target``; members before the ensemble), plus unloads of
    ``retire`` (e.g. a member dropped from an ensemble) after them; and the status
    entries and ``Loaded`` condition for the observations as they are.

    Pods that are not ready, terminating or could not be observed get no actions.
    Failed loads are planned again: the executor bounds retries within one pass, and
    the reconciler's backoff bounds them across passes.
    """
    per_pod = dict(wanted or {})

    def of(pod: PodObservation) -> LoadTarget:
        return per_pod.get(pod.name, target)

    states = tuple(pod_model_state(of(pod), pod) for pod in observations)
    pods = tuple(
        PodPlan(pod.name, pod.ip, pod.ready, _pod_actions(of(pod), pod, retire))
        for pod in observations
    )
    failures = tuple(f for pod in observations for f in _failures(of(pod), pod))
    condition = loaded_condition(target, observations, states, generation=generation)
    return LoadPlan(target, pods, states, condition, failures, per_pod)


# --- deletion -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnloadPlan:
    """Unloads per pod (in the given order), and whether the files may go.

    ``done`` is True once no ready pod holds any of the models (READY,
    LOADING or UNLOADING). A ready pod that could not be observed blocks it: it
    may still hold the model. ``waiting`` says which pods hold things up and why.
    """

    names: tuple[str, ...]
    pods: tuple[PodPlan, ...]
    done: bool
    waiting: tuple[str, ...]


_HELD = ("READY", "LOADING", "UNLOADING")


def plan_unloading(names: Sequence[str], observations: Sequence[PodObservation]) -> UnloadPlan:
    """Unload ``names`` (in that order: an ensemble before its members, see
    :attr:`LoadTarget.unload_order`) from every pod that holds them.

    Pods that are not ready but were observed are unloaded too (best effort:
    a crash-looping pod may still hold the model). Only ready pods block
    ``done``, because a pod that is gone serves nothing.
    """
    plans: list[PodPlan] = []
    waiting: list[str] = []
    for pod in observations:
        actions: list[ModelAction] = []
        held: list[str] = []
        if not pod.error:
            for name in names:
                state = pod.model(name).state
                if state in ("READY", "LOADING"):
                    actions.append(ModelAction(name, "unload", None, f"{name} is {state}"))
                if state in _HELD:
                    held.append(f"{name} {state}")
        plans.append(PodPlan(pod.name, pod.ip, pod.ready, tuple(actions)))
        if pod.ready and pod.error:
            waiting.append(f"{pod.name} (cannot tell: {_clip(pod.error, 300)})")
        elif pod.ready and held:
            waiting.append(f"{pod.name} ({', '.join(held)})")
    return UnloadPlan(tuple(names), tuple(plans), not waiting, tuple(waiting))
