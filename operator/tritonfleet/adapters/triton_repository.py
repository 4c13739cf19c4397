"""Fleet-consistent loading, the I/O half: Triton's repository, health and
config endpoints on every pod of a Deployment.

Where it sits: the operator's loader (``handlers.loading``, through
:class:`PodRepositories`, which owns the connection pool) lists the Triton pods of a
model's Deployment (:class:`PodEndpoint`), calls :func:`observe`, plans with
``desired.triton.loading.plan_loading``, and, when the plan has work, calls
:func:`converge`. That runs each pod's calls in parallel (bounded), retries
transient failures with exponential backoff inside a total deadline, and
returns fresh observations to plan (and write status) from. On deletion
:func:`unload_everywhere` unloads from every pod and waits until none holds the
model, before the cleanup Job removes the files. A load sent through the
Service would reach one pod only, which is why every call here goes to a pod IP.

Verified against tritonserver 2.51 (see hack/triton/README.md and
tests/integration/test_loading.py), and relied on here:

* ``POST /v2/repository/models/<m>/load`` blocks until the load is done.
  Whether it reloads a model that is already loaded depends on file times, not
  on content. Sent within a second or two of the files changing, or after a
  symlink swap or an in-place rewrite, it fully reloads (about 2 s for a toy,
  minutes for an LLM). Sent once the files have been quiet for a few seconds,
  it returns at once and does nothing. A load is therefore neither free nor a
  reliable no-op: it is sent only when the index and the stamped config do not
  already show the wanted revision, and the stamp is checked again afterwards.
* A failed load returns 400 ``{"error": "load failed for model 'm': version 1
  is at UNAVAILABLE state: <reason>"}``. A config that does not parse, or a
  model missing from the repository, returns 500 ``failed to poll from model
  repository``. After a failed *reload* the old model keeps serving, and the
  index still says READY. The error is kept verbatim per pod and model,
  because the index will not show it.
* ``unload`` returns at once; the state goes UNLOADING, then UNAVAILABLE.
  ``unload_dependents`` unloads only the composing models that the ensemble
  load pulled in implicitly, not members loaded on their own. So members are
  unloaded by name, after the ensemble.

aiohttp, not tritonclient's ``http.aio`` client: that one opens a session per
server, has one timeout for every call (a load can take minutes, an index
call should not), and hides the HTTP status that separates a refused model
(4xx, final) from a server in trouble (5xx, retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tritonfleet.desired.triton.loading import (
    LoadPlan,
    ModelAction,
    ModelObservation,
    PodObservation,
    model_states_from_index,
)
from tritonfleet.desired.triton.revision import served_revision

log = logging.getLogger("tritonfleet.loading")

DEFAULT_HTTP_PORT = 8000
_JSON = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
_POLL_S = 0.25


@dataclass(frozen=True)
class Timeouts:
    """Per-call limits, in seconds. ``load`` is long on purpose: Triton answers
    a load only once the model is loaded, and a large model takes minutes."""

    connect: float = 3.0
    request: float = 10.0
    load: float = 600.0


class TritonRepositoryError(Exception):
    """A repository call failed. ``message`` is Triton's own text when it sent
    one; ``transient`` says whether trying again may help."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool) -> None:
        if not message.strip():
            # Never empty: the executor treats "no message" as success.
            message = f"HTTP {status} without a message" if status else "failed without a message"
        super().__init__(message)
        self.message = message
        self.status = status
        self.transient = transient


@dataclass(frozen=True)
class PodEndpoint:
    """One Triton pod as the reconciler sees it. ``ready`` means it can take
    calls (Running, has an IP, not terminating), not the Kubernetes Ready
    condition (see ``desired.triton.loading``)."""

    name: str
    url: str | None
    ready: bool
    ip: str | None = None

    @classmethod
    def from_ip(
        cls, name: str, ip: str | None, *, ready: bool, port: int = DEFAULT_HTTP_PORT
    ) -> PodEndpoint:
        url = f"http://{ip}:{port}" if ip else None
        return cls(name=name, url=url, ready=ready and url is not None, ip=ip)


def _triton_message(raw: bytes) -> str:
    """Triton's ``{"error": "..."}`` body -> the message, verbatim."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:2000]
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)[:2000]


class TritonRepository:
    """Triton's repository, health and config endpoints on one pod.

    Shares the caller's ``aiohttp.ClientSession`` (one keep-alive pool for the
    whole fleet); every call has its own timeout.
    """

    def __init__(
        self, base_url: str, session: aiohttp.ClientSession, timeouts: Timeouts | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeouts = timeouts or Timeouts()

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self.timeouts.connect)

    async def _call(
        self, method: str, path: str, body: Any, total: float, what: str
    ) -> tuple[int, bytes]:
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self.session.request(
                method, url, data=data, headers=_JSON, timeout=self._timeout(total)
            ) as resp:
                return resp.status, await resp.read()
        except TimeoutError as error:
            raise TritonRepositoryError(
                f"{what} on {self.base_url}: no answer within {total:g}s", transient=True
            ) from error
        except (aiohttp.ClientError, OSError) as error:
            raise TritonRepositoryError(
                f"{what} on {self.base_url}: {type(error).__name__}: {error}", transient=True
            ) from error

    async def _health(self, path: str) -> bool:
        try:
            status, _ = await self._call("GET", path, None, self.timeouts.request, "health")
        except TritonRepositoryError:
            return False
        return status == 200

    async def live(self) -> bool:
        return await self._health("/v2/health/live")

    async def ready(self) -> bool:
        """Server readiness (with ``--strict-readiness``: every loaded model READY)."""
        return await self._health("/v2/health/ready")

    async def index(self) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: ``{"name", "version", "state", "reason"}`` per
        model version; a model never loaded is listed by name only."""
        status, raw = await self._call(
            "POST", "/v2/repository/index", {}, self.timeouts.request, "repository index"
        )
        if status != 200:
            raise TritonRepositoryError(
                f"repository index: {_triton_message(raw)}", status=status, transient=True
            )
        entries = json.loads(raw)
        if not isinstance(entries, list):
            raise TritonRepositoryError(
                f"repository index: unexpected answer {raw[:200]!r}", status=status, transient=True
            )
        return [e for e in entries if isinstance(e, dict)]

    async def model_config(self, name: str) -> dict[str, Any]:
        """``GET /v2/models/<m>/config``: the config of the *loaded* model (404 when
        it has no ready version)."""
        status, raw = await self._call(
            "GET", f"/v2/models/{name}/config", None, self.timeouts.request, f"config of {name}"
        )
        if status != 200:
            raise TritonRepositoryError(
                _triton_message(raw), status=status, transient=status >= 500
            )
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise TritonRepositoryError(
                f"config of {name}: unexpected answer", status=status, transient=True
            )
        return config

    async def load(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Load (or reload) ``name``; returns once Triton has it loaded.

        Raises :class:`TritonRepositoryError` with Triton's message: 4xx (the
        model was refused: bad config, ``initialize()`` raised) is final, while
        5xx, timeouts and connection errors are transient.
        """
        body = {"parameters": dict(parameters)} if parameters else {}
        status, raw = await self._call(
            "POST", f"/v2/repository/models/{name}/load", body, self.timeouts.load, f"load {name}"
        )
        if status != 200:
            raise TritonRepositoryError(
                _triton_message(raw), status=status, transient=status >= 500
            )

    async def unload(self, name: str, *, unload_dependents: bool = False) -> None:
        """Start unloading ``name`` (Triton answers at once; the index shows
        UNLOADING, then UNAVAILABLE). Unknown models are not an error."""
        body = {"parameters": {"unload_dependents": True}} if unload_dependents else {}
        status, raw = await self._call(
            "POST",
            f"/v2/repository/models/{name}/unload",
            body,
            self.timeouts.request,
            f"unload {name}",
        )
        if status != 200:
            raise TritonRepositoryError(
                _triton_message(raw), status=status, transient=status >= 500
            )

    async def observe_models(self, names: Sequence[str]) -> dict[str, ModelObservation]:
        """State of ``names`` from one index call, plus the served revision of each
        READY one from its config."""
        states = model_states_from_index(await self.index())
        out: dict[str, ModelObservation] = {}
        for name in names:
            seen = states.get(name, ModelObservation())
            if seen.state == "READY":
                try:
                    revision = served_revision(await self.model_config(name))
                except TritonRepositoryError as error:
                    if error.status != 404:  # 404: unloaded between the two calls
                        raise
                    seen = ModelObservation(state="UNAVAILABLE", reason="unloaded")
                else:
                    seen = ModelObservation(state="READY", revision=revision)
            out[name] = seen
        return out


# --- fan-out --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    if session is not None:
        yield session
        return
    # Pod IPs are cluster-internal: never route them through an HTTP proxy from the environment.
    async with aiohttp.ClientSession(trust_env=False) as own:
        yield own


async def _observe_pod(
    pod: PodEndpoint, names: Sequence[str], session: aiohttp.ClientSession, timeouts: Timeouts
) -> PodObservation:
    if pod.url is None:
        return PodObservation(pod.name, pod.ip, pod.ready, error="pod has no IP yet")
    try:
        models = await TritonRepository(pod.url, session, timeouts).observe_models(names)
    except TritonRepositoryError as error:
        return PodObservation(pod.name, pod.ip, pod.ready, error=error.message)
    return PodObservation(pod.name, pod.ip, pod.ready, models)


async def observe(
    pods: Sequence[PodEndpoint],
    names: Sequence[str],
    *,
    include_not_ready: bool = False,
    concurrency: int = 16,
    session: aiohttp.ClientSession | None = None,
    timeouts: Timeouts | None = None,
) -> tuple[PodObservation, ...]:
    """What every pod holds of ``names``, in the order of ``pods``.

    Pods that are not ready are listed without calls (``models`` empty) unless
    ``include_not_ready``: then every pod with an IP is asked (e.g. to check
    that a deletion left nothing loaded anywhere).
    """
    timeouts = timeouts or Timeouts()
    limit = asyncio.Semaphore(max(1, concurrency))
    async with _session(session) as http:

        async def one(pod: PodEndpoint) -> PodObservation:
            if not pod.ready and not (include_not_ready and pod.url):
                return PodObservation(pod.name, pod.ip, False)
            async with limit:
                return await _observe_pod(pod, names, http, timeouts)

        return tuple(await asyncio.gather(*(one(pod) for pod in pods)))


@dataclass
class _Outcome:
    """Errors one pod's pass produced, per model (pod-level under "")."""

    errors: dict[str, str] = field(default_factory=dict)


class _Budget:
    """Retries with exponential backoff, and a deadline over the whole pass."""

    def __init__(self, retries: int, backoff: float, max_backoff: float, deadline: float) -> None:
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.deadline = deadline

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    async def pause(self, attempt: int) -> bool:
        """Sleep before retry ``attempt`` (1-based); False when out of tries or time."""
        if attempt > self.retries:
            return False
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        # Jitter, so that a fleet which failed together does not retry in lockstep.
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - timing jitter, not security
        if delay >= self.remaining():
            return False
        await asyncio.sleep(delay)
        return True


async def _wait_while_loading(client: TritonRepository, name: str, budget: _Budget) -> None:
    """Someone else's load is in flight: wait for it rather than queue another."""
    limit = min(client.timeouts.load, budget.remaining())
    until = time.monotonic() + limit
    while time.monotonic() < until:
        states = model_states_from_index(await client.index())
        if states.get(name, ModelObservation()).state != "LOADING":
            return
        await asyncio.sleep(_POLL_S)
    raise TritonRepositoryError(f"{name} still LOADING after {limit:.0f}s", transient=True)


async def _load(client: TritonRepository, action: ModelAction, budget: _Budget) -> str:
    """Bring ``action.model`` to ``action.revision`` on one pod; '' or the error."""
    attempt = 0
    while True:
        try:
            seen = (await client.observe_models([action.model]))[action.model]
            if seen.state == "LOADING":
                await _wait_while_loading(client, action.model, budget)
                seen = (await client.observe_models([action.model]))[action.model]
            if seen.state == "READY" and seen.revision == action.revision:
                return ""  # already there: a load would only reload it
            await client.load(action.model)
            served = (await client.observe_models([action.model]))[action.model]
            if served.state != "READY" or served.revision != action.revision:
                # The repository this pod sees does not hold the revision yet (a
                # shared volume can lag behind the sync that published it).
                raise TritonRepositoryError(
                    f"loaded {action.model}, but it serves revision "
                    f"{served.revision or '(none)'}, not {action.revision}",
                    transient=True,
                )
            return ""
        except TritonRepositoryError as error:
            attempt += 1
            if not error.transient or not await budget.pause(attempt):
                return error.message
            log.info("retrying %s on %s: %s", action.model, client.base_url, error.message)


async def _unload(client: TritonRepository, name: str, budget: _Budget) -> str:
    attempt = 0
    while True:
        try:
            await client.unload(name)
            return ""
        except TritonRepositoryError as error:
            attempt += 1
            if not error.transient or not await budget.pause(attempt):
                return error.message


async def _run_pod(
    pod: PodEndpoint,
    actions: Sequence[ModelAction],
    session: aiohttp.ClientSession,
    timeouts: Timeouts,
    budget: _Budget,
) -> _Outcome:
    outcome = _Outcome()
    if pod.url is None:
        outcome.errors[""] = "pod has no IP yet"
        return outcome
    client = TritonRepository(pod.url, session, timeouts)
    current = ""
    try:
        async with asyncio.timeout(max(0.0, budget.remaining())):
            for action in actions:
                current = action.model
                if action.kind == "unload":
                    error = await _unload(client, action.model, budget)
                else:
                    error = await _load(client, action, budget)
                if error:
                    outcome.errors[action.model] = error
                    log.warning("%s on %s failed: %s", action.kind, pod.name, error)
                    if action.kind != "unload":
                        # Later models depend on this one (an ensemble after its
                        # members): loading them now would fail or reload in vain.
                        break
    except TimeoutError:
        outcome.errors[current] = (
            f"gave up on {current or 'the pod'}: the loading pass ran out of time"
        )
    return outcome


def _merge(observation: PodObservation, outcome: _Outcome | None) -> PodObservation:
    """Fresh observation + the errors the calls returned (which the index may not show)."""
    if outcome is None or not outcome.errors:
        return observation
    models = dict(observation.models)
    for name, error in outcome.errors.items():
        if name:
            seen = models.get(name, ModelObservation())
            models[name] = ModelObservation(seen.state, seen.reason, seen.revision, error)
    pod_error = observation.error or outcome.errors.get("", "")
    return PodObservation(observation.name, observation.ip, observation.ready, models, pod_error)


async def converge(
    pods: Sequence[PodEndpoint],
    plan: LoadPlan,
    *,
    concurrency: int = 8,
    retries: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    deadline: float = 900.0,
    session: aiohttp.ClientSession | None = None,
    timeouts: Timeouts | None = None,
) -> tuple[PodObservation, ...]:
    """Carry out ``plan`` on every ready pod in parallel, at most
    ``concurrency`` pods at once, and return fresh observations of all
    ``pods`` (same order) with the errors each pod's calls returned.

    On each pod the actions run in order (members before the ensemble); a load
    is skipped when the pod already serves the wanted revision, and a failed
    load stops that pod's later loads. Transient failures (connection,
    timeout, 5xx, wrong revision served) are retried up to ``retries`` times
    with exponential backoff from ``backoff`` seconds. The whole pass stops
    after ``deadline`` seconds. One pod's failure never raises; it shows in
    that pod's observation.
    """
    timeouts = timeouts or Timeouts()
    budget = _Budget(retries, backoff, max_backoff, time.monotonic() + deadline)
    by_name = {p.pod: p for p in plan.pods}
    names = list(plan.names) + [
        a.model for p in plan.pods for a in p.actions if a.model not in plan.names
    ]
    names = list(dict.fromkeys(names))
    limit = asyncio.Semaphore(max(1, concurrency))
    async with _session(session) as http:

        async def one(pod: PodEndpoint) -> PodObservation:
            pod_plan = by_name.get(pod.name)
            outcome = None
            if pod.ready and pod_plan is not None and pod_plan.actions:
                async with limit:
                    outcome = await _run_pod(pod, pod_plan.actions, http, timeouts, budget)
            if not pod.ready:
                return PodObservation(pod.name, pod.ip, False)
            async with limit:
                fresh = await _observe_pod(pod, names, http, timeouts)
            return _merge(fresh, outcome)

        return tuple(await asyncio.gather(*(one(pod) for pod in pods)))


async def unload_everywhere(
    pods: Sequence[PodEndpoint],
    model_names: Sequence[str],
    *,
    wait: float = 60.0,
    concurrency: int = 16,
    retries: int = 2,
    backoff: float = 0.5,
    session: aiohttp.ClientSession | None = None,
    timeouts: Timeouts | None = None,
) -> tuple[PodObservation, ...]:
    """Unload ``model_names`` (in that order: an ensemble before its members)
    from every pod that can be reached, not-ready ones included, and wait up to
    ``wait`` seconds until none of them shows READY, LOADING or UNLOADING.

    Returns the last observations; ``desired.triton.loading.plan_unloading(...).done``
    says whether the files may now be removed. Never raises for one pod.
    """
    timeouts = timeouts or Timeouts()
    budget = _Budget(retries, backoff, max(backoff, 5.0), time.monotonic() + wait)
    limit = asyncio.Semaphore(max(1, concurrency))
    held = ("READY", "LOADING", "UNLOADING")
    async with _session(session) as http:

        async def one(pod: PodEndpoint) -> PodObservation:
            if pod.url is None:
                return PodObservation(pod.name, pod.ip, pod.ready, error="pod has no IP")
            client = TritonRepository(pod.url, http, timeouts)
            errors: dict[str, str] = {}
            async with limit:
                for name in model_names:
                    error = await _unload(client, name, budget)
                    if error:
                        errors[name] = error
            while True:
                seen = await _observe_pod(pod, model_names, http, timeouts)
                settled = not seen.error and not any(
                    seen.model(n).state in held for n in model_names
                )
                if settled or budget.remaining() <= 0 or (seen.error and not pod.ready):
                    return _merge(seen, _Outcome(errors))
                await asyncio.sleep(min(_POLL_S, max(0.0, budget.remaining())))

        return tuple(await asyncio.gather(*(one(pod) for pod in pods)))


class PodRepositories:
    """The operator's loader's way to every Triton pod: :func:`observe`, :func:`converge`
    and :func:`unload_everywhere` over one keep-alive pool for the whole fleet, owned
    here (made on first use, closed by :meth:`close`). Pod IPs are cluster-internal:
    the pool never goes through an HTTP proxy from the environment."""

    def __init__(self, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False)
        return self._session

    async def observe(
        self, pods: Sequence[PodEndpoint], names: Sequence[str]
    ) -> tuple[PodObservation, ...]:
        return await observe(pods, names, session=self._http(), timeouts=self.timeouts)

    async def converge(
        self, pods: Sequence[PodEndpoint], plan: LoadPlan
    ) -> tuple[PodObservation, ...]:
        return await converge(pods, plan, session=self._http(), timeouts=self.timeouts)

    async def unload_everywhere(
        self, pods: Sequence[PodEndpoint], names: Sequence[str], *, wait: float
    ) -> tuple[PodObservation, ...]:
        return await unload_everywhere(
            pods, names, wait=wait, session=self._http(), timeouts=self.timeouts
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
