"""Leader election of operator replicas: the loop that holds (or waits for) the Lease.

With several replicas (``TRITONFLEET_LEADER_ELECTION``), every replica runs its
watches, and this loop decides which one does the work: it reads the Lease
every ``retry_s`` seconds while standing by, takes it over when
``desired.kube.leadership.decide`` says so and its own memory is complete, renews
it every ``renew_s`` seconds while active, and calls ``on_started``/``on_stopped``
on each change. The composition root (``cli.operator``) passes callbacks that start and stop the
reconciler, the loader, scale to zero, the queue-time collector and the
external metrics API, and label the pod for the metrics API's Service.

Stepping down does not end the process: the holder that could not renew for
``renew_deadline_s`` (shorter than the lease, so no standby can have taken over
yet) stops its work and stands by; an API server restarting or a cut watch
costs a hand-over at worst, never a restart. Every Lease request is bounded by
``retry_s``, so a hung request cannot keep a holder from noticing it lost the
Lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from tritonfleet.adapters.kube import ApiError, KubeApi
from tritonfleet.desired.kube.leadership import (
    LeaseState,
    decide,
    lease_object,
    lease_state,
    released,
)

log = logging.getLogger("tritonfleet.operator")

Callback = Callable[[], Awaitable[None]]


class LeaderElection:
    def __init__(
        self,
        client: KubeApi,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_started: Callback,
        on_stopped: Callback,
        lease_s: float = 15.0,
        renew_s: float = 5.0,
        retry_s: float = 2.0,
        ready_to_lead: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.retry_s = retry_s
        # A replica whose memory is still filling does not campaign: a warm standby
        # takes a released Lease before a freshly started pod (a drain's replacement)
        # that would have to list the whole fleet before acting.
        self.ready_to_lead = ready_to_lead
        self.renew_deadline_s = lease_s * 2 / 3
        self.clock = clock
        self.leading = False
        self._state: LeaseState | None = None  # the last read (or our last write)
        self._seen_at = clock()  # when this replica first saw self._state.version
        self._renewed_at = 0.0
        self.transitions = 0  # times this replica became the leader

    # --- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            acquired_from: str | None = None
            lost: str | None = None
            try:
                # Only the Lease requests are bounded here, never the callbacks.
                if self.leading:
                    lost = await asyncio.wait_for(self._renew(), self.retry_s)
                elif self.ready_to_lead():
                    acquired_from = await asyncio.wait_for(self._try_to_lead(), self.retry_s)
            except asyncio.CancelledError:
                raise
            except (ApiError, OSError, TimeoutError) as error:
                log.debug("lease %s/%s: %s", self.namespace, self.name, error)
            if acquired_from is not None:
                await self._start(acquired_from)
            elif lost is not None:
                await self._step_down(lost)
            elif self.leading and self.clock() - self._renewed_at > self.renew_deadline_s:
                await self._step_down(
                    f"could not renew the lease for {self.renew_deadline_s:.0f} s"
                )
            await asyncio.sleep(self.renew_s if self.leading else self.retry_s)

    def _observe(self, obj: dict[str, Any] | None) -> LeaseState | None:
        state = lease_state(obj) if obj is not None else None
        version = state.version if state is not None else None
        if version != (self._state.version if self._state is not None else None):
            self._seen_at = self.clock()
        self._state = state
        return state

    async def _try_to_lead(self) -> str | None:
        """Take the Lease if it is free or expired: the previous holder ("" for
        none) when taken, None when another replica holds it."""
        obj = await self.client.get("Lease", self.namespace, self.name)
        state = self._observe(obj)
        if decide(state, self.identity, self.clock() - self._seen_at) == "wait":
            return None
        body = lease_object(
            self.namespace, self.name, self.identity, self.lease_s, datetime.now(UTC), state
        )
        try:
            if state is None:
                written = await self.client.create(body)
            else:
                written = await self.client.patch("Lease", self.namespace, self.name, body)
        except ApiError as error:
            if error.conflict:
                return None  # another replica was faster: look again next round
            raise
        self._observe(written)
        self._renewed_at = self.clock()
        return state.holder if state is not None else ""

    async def _renew(self) -> str | None:
        """Renew the Lease; why it is lost, or None."""
        assert self._state is not None
        body = lease_object(
            self.namespace, self.name, self.identity, self.lease_s, datetime.now(UTC), self._state
        )
        try:
            written = await self.client.patch("Lease", self.namespace, self.name, body)
        except ApiError as error:
            if not (error.conflict or error.not_found):
                raise  # unreachable or refused: try again until the renew deadline
            current = self._observe(await self.client.get("Lease", self.namespace, self.name))
            if current is not None and current.holder == self.identity:
                return None  # our own write under another version (a retry): renew next round
            return (
                f"the lease is held by {current.holder if current and current.holder else 'nobody'}"
            )
        self._observe(written)
        self._renewed_at = self.clock()
        return None

    # --- transitions ------------------------------------------------------------------

    async def _start(self, previous_holder: str) -> None:
        self.leading = True
        self.transitions += 1
        log.info(
            "leading: lease %s/%s acquired%s",
            self.namespace,
            self.name,
            f" from {previous_holder}" if previous_holder else "",
        )
        try:
            await self.on_started()
        except Exception:
            log.exception("starting the work of the leader failed; standing by again")
            await self._step_down("its work could not start")
            await self.release()

    async def _step_down(self, why: str) -> None:
        if not self.leading:
            return
        self.leading = False
        log.warning("standing by: %s", why)
        await self.on_stopped()

    async def release(self) -> None:
        """Stop the work and hand the Lease over at once (a graceful shutdown)."""
        was_leading = self.leading
        await self._step_down("shutting down")
        state = self._state
        if not was_leading and (state is None or state.holder != self.identity):
            return
        if state is None:
            return
        try:
            await asyncio.wait_for(
                self.client.patch(
                    "Lease", self.namespace, self.name, released(state, datetime.now(UTC))
                ),
                self.retry_s,
            )
            log.info("lease %s/%s released", self.namespace, self.name)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, error)
