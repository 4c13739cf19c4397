"""One parsed view of each TritonModel and ModelEnsemble, shared by every reader of
the operator process.

Why: the reconcile, the loader, the queue collector, the external metrics API and
scale to zero all read the typed spec of the same owner bodies, over and over (every
event, every resync, every scrape round, every metrics query). Validating a body
(pydantic) and rendering a model (Triton's ModelConfig proto and its revision) are
the costly part, and a spec only changes with ``metadata.generation``; a re-created
object has a new ``uid``. :class:`OwnerViews` keeps one :class:`OwnerView` per
``(uid, generation)`` (with the object's kind, namespace and name, so two hand-made
bodies sharing a uid never collide), bounded: the least recently used goes first.
Every reader goes through it, so nothing in the operator reads spec fields from the
raw dict.

What is not cached: the owner's metadata and status (:func:`owner_of`, read fresh:
finalizers, deletion and status change without a new generation), and whether an
ensemble's members are synced (their status). An ensemble's checks against its
members are cached by its own and its members' ``(uid, generation)``.

Where it sits: ``desired.kube``, below ``handlers`` and ``scaling``, which must not
import each other; the operator's composition root (``tritonfleet.cli.operator``)
makes one :class:`OwnerViews` and hands it to both. A memo in memory; no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from pydantic import ValidationError

from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import Autoscaling, PoolRef, TritonModel
from tritonfleet.api.problems import Problem, problems_from_validation_error
from tritonfleet.api.rollout import RolloutSpec
from tritonfleet.api.status import SYNCED, ModelStatus, find_condition
from tritonfleet.desired.kube.autoscaling import SCALED_TO_ZERO_ANNOTATION
from tritonfleet.desired.kube.objects import Kind, Target, ensemble_target, model_target
from tritonfleet.desired.kube.rollout import COMMAND_ANNOTATION as ROLLOUT_COMMAND_ANNOTATION
from tritonfleet.desired.triton.render import render_ensemble, render_model

DEFAULT_MAX_ENTRIES = 4096

Body = Mapping[str, Any]
MemberLookup = Callable[[str], Body | None]
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Owner:
    """The reconciled object's metadata and status, read fresh from its body."""

    kind: Kind
    namespace: str
    name: str
    uid: str
    generation: int
    finalizers: tuple[str, ...]
    deletion_timestamp: str | None
    status: ModelStatus
    # A pooled model's scale-to-zero record (desired.kube.autoscaling.ZeroMark), written
    # on the object itself by the scaler: a pooled model has no Deployment of its own.
    zero_mark: str = ""
    rollout_command: str | None = None  # the tritonfleet.io/rollout annotation


def owner_of(body: Body) -> Owner:
    meta = body.get("metadata") or {}
    try:
        status = ModelStatus.model_validate(body.get("status") or {})
    except ValidationError:
        status = ModelStatus()  # a status we cannot read is rewritten from scratch
    return Owner(
        kind=body["kind"],
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta["name"]),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        finalizers=tuple(meta.get("finalizers") or ()),
        deletion_timestamp=meta.get("deletionTimestamp"),
        status=status,
        zero_mark=str((meta.get("annotations") or {}).get(SCALED_TO_ZERO_ANNOTATION) or ""),
        rollout_command=(meta.get("annotations") or {}).get(ROLLOUT_COMMAND_ANNOTATION),
    )


@dataclass(frozen=True)
class OwnerView:
    """The spec of one owner at one generation: parsed and, for a TritonModel, rendered.

    ``parsed`` is None when the spec does not validate; ``problems`` then says why
    (for a TritonModel also when its config does not render). ``triton_name`` and
    ``failover_mode`` are known even then: an invalid object may have synced under
    that name before and must be cleaned up under it, and its status still says
    who serves it.
    """

    kind: Kind
    namespace: str
    name: str
    uid: str
    generation: int
    parsed: TritonModel | ModelEnsemble | None
    triton_name: str
    failover_mode: str | None  # None: no failover configured
    problems: tuple[Problem, ...] = ()
    revision: str = ""  # a TritonModel's, also when its config does not render
    target: Target | None = None  # a TritonModel that renders: what its children come from

    @property
    def member_names(self) -> tuple[str, ...]:
        """The TritonModels an ensemble's steps use (first use first); () otherwise."""
        return self.parsed.member_names if isinstance(self.parsed, ModelEnsemble) else ()

    @property
    def rollout(self) -> RolloutSpec:
        return self.parsed.spec.rollout if self.parsed is not None else RolloutSpec()

    @property
    def autoscaling(self) -> Autoscaling | None:
        return self.parsed.spec.serving.autoscaling if self.parsed is not None else None

    @property
    def pool(self) -> PoolRef | None:
        """Where a pooled object is served (``spec.serving.pool``); None otherwise."""
        return self.parsed.spec.serving.pool if self.parsed is not None else None

    @property
    def may_scale_to_zero(self) -> bool:
        auto = self.autoscaling
        return auto is not None and auto.scale_to_zero_after_seconds is not None


@dataclass(frozen=True)
class Rendering:
    """What one reconcile works from: the fresh owner, its view, and the target its
    children are built from (None when invalid, with every problem)."""

    owner: Owner
    view: OwnerView
    target: Target | None
    problems: tuple[Problem, ...] = ()
    members_pending: tuple[str, ...] = ()  # ensembles: members whose revision is not synced


def _identity_of_invalid(body: Body) -> tuple[str, str | None]:
    """(Triton name, failover mode) of a body whose spec does not validate: the only
    raw reads of spec fields, because no typed object exists to read them from."""
    spec = body.get("spec") or {}
    meta = body.get("metadata") or {}
    name = spec.get("modelName") if isinstance(spec, Mapping) else None
    failover = spec.get("failover") if isinstance(spec, Mapping) else None
    mode = None
    if failover:
        mode = str((failover if isinstance(failover, Mapping) else {}).get("mode") or "auto")
    return str(name or meta.get("name")), mode


def parse_owner(body: Body) -> OwnerView:
    """Validate (and render, for a TritonModel) one owner body, without caching."""
    kind = cast(Kind, body["kind"])
    meta = body.get("metadata") or {}
    base = OwnerView(
        kind=kind,
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        parsed=None,
        triton_name="",
        failover_mode=None,
    )
    parsed: TritonModel | ModelEnsemble
    try:
        if kind == "TritonModel":
            parsed = TritonModel.from_object(body)
        else:
            parsed = ModelEnsemble.from_object(body)
    except ValidationError as error:
        name, mode = _identity_of_invalid(body)
        problems = tuple(problems_from_validation_error(error))
        return replace(base, triton_name=name, failover_mode=mode, problems=problems)
    failover = parsed.spec.failover
    view = replace(
        base,
        parsed=parsed,
        triton_name=parsed.triton_name,
        failover_mode=failover.mode if failover is not None else None,
    )
    if not isinstance(parsed, TritonModel):
        return view
    rendered = render_model(parsed)
    target = model_target(parsed, rendered.revision) if rendered.ok else None
    return replace(view, problems=rendered.problems, revision=rendered.revision, target=target)


def member_synced(member_body: Body) -> bool:
    """A member is ready to be hosted when its own status says its spec's revision is in
    the repository (``Synced`` True for its current generation). Not its rollout: the
    ensemble's pods load the member themselves, from the member revision's pin."""
    owner = owner_of(member_body)
    synced = find_condition(owner.status.conditions, SYNCED)
    return (
        synced is not None
        and synced.status == "True"
        and (synced.observed_generation or 0) >= owner.generation
    )


def _check_ensemble(
    ensemble: ModelEnsemble, members: Mapping[str, OwnerView]
) -> tuple[Target | None, tuple[Problem, ...]]:
    """An ensemble against the member views found (present, not being deleted)."""
    parsed: dict[str, TritonModel] = {}
    revisions: dict[str, str] = {}
    unreadable = []
    for name, view in members.items():
        if not isinstance(view.parsed, TritonModel):
            unreadable.append(name)
            continue
        parsed[name] = view.parsed
        revisions[name] = view.revision
    rendered = render_ensemble(ensemble, parsed, revisions)
    problems = [
        p
        for p in rendered.problems
        if not any(f"TritonModel {n!r} not found" in p.message for n in unreadable)
    ]
    if unreadable:
        problems.append(
            Problem("spec.steps", f"member(s) {', '.join(unreadable)} are invalid; fix them first")
        )
    pool = ensemble.spec.serving.pool
    if pool is not None:
        # A pooled ensemble runs on pool replicas that hold its members: they must be
        # pooled in the same pool (loaded once per replica, never a copy of their own).
        elsewhere = [
            name
            for name, model in parsed.items()
            if model.spec.serving.pool is None or model.spec.serving.pool.name != pool.name
        ]
        if elsewhere:
            problems.append(
                Problem(
                    "spec.serving.pool",
                    f"member(s) {', '.join(elsewhere)} are not pooled in {pool.name!r}: set "
                    f"their spec.serving.pool.name to {pool.name!r} (or serve the ensemble "
                    "on its own Deployment)",
                )
            )
    if problems:
        return None, tuple(problems)
    return ensemble_target(ensemble, parsed, rendered.revision, revisions), ()


ViewKey = tuple[str, str, str, str, int]  # kind, namespace, name, uid, generation


def _key(view: OwnerView) -> ViewKey:
    return (view.kind, view.namespace, view.name, view.uid, view.generation)


class OwnerViews:
    """The bounded memo of :class:`OwnerView` s (see the module docstring)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._views: OrderedDict[ViewKey, OwnerView] = OrderedDict()
        self._ensembles: OrderedDict[
            tuple[ViewKey, tuple[ViewKey, ...]], tuple[Target | None, tuple[Problem, ...]]
        ] = OrderedDict()

    def __len__(self) -> int:
        return len(self._views) + len(self._ensembles)

    def of(self, body: Body) -> OwnerView:
        """The view of ``body``'s spec, parsed once per (uid, generation)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if not uid:
            return parse_owner(body)  # not from the API server: nothing to key it by
        key: ViewKey = (
            str(body.get("kind")),
            str(meta.get("namespace") or "default"),
            str(meta.get("name")),
            uid,
            int(meta.get("generation") or 0),
        )
        return _remember(self._views, key, lambda: parse_owner(body), self.max_entries)

    def rendering(self, body: Body, member: MemberLookup = lambda _: None) -> Rendering:
        """What a reconcile of ``body`` works from; ``member(name)`` finds an ensemble's
        member TritonModels (by metadata.name, in the ensemble's namespace)."""
        owner = owner_of(body)
        view = self.of(body)
        if not isinstance(view.parsed, ModelEnsemble):
            return Rendering(owner, view, view.target, view.problems)
        members: dict[str, OwnerView] = {}
        pending = []
        for name in view.member_names:
            member_body = member(name)
            if member_body is None or (member_body.get("metadata") or {}).get("deletionTimestamp"):
                continue  # reported as missing by the ensemble checks
            member_view = members[name] = self.of(member_body)
            if member_view.target is not None and not member_synced(member_body):
                pending.append(name)
        ensemble = view.parsed
        if view.uid and all(m.uid for m in members.values()):
            key = (_key(view), tuple(_key(members[n]) for n in sorted(members)))
            target, problems = _remember(
                self._ensembles, key, lambda: _check_ensemble(ensemble, members), self.max_entries
            )
        else:
            target, problems = _check_ensemble(ensemble, members)
        if target is None:
            return Rendering(owner, view, None, problems)
        return Rendering(owner, view, target, members_pending=tuple(pending))


def _remember(memo: OrderedDict[K, V], key: K, make: Callable[[], V], limit: int) -> V:
    """LRU lookup: the cached value (now the most recent) or a new one, oldest evicted."""
    found = memo.get(key)
    if found is not None:
        memo.move_to_end(key)
        return found
    value = memo[key] = make()
    while len(memo) > limit:
        memo.popitem(last=False)
    return value


def render_model_object(body: Body) -> Rendering:
    """A TritonModel's rendering without a shared memo (tests and one-off callers)."""
    return OwnerViews().rendering(body)


def render_ensemble_object(body: Body, member_bodies: Mapping[str, Body]) -> Rendering:
    """An ensemble checked against ``member_bodies`` (by name), without a shared memo."""
    return OwnerViews().rendering(body, member_bodies.get)
