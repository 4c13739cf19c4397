"""The request path: try Triton pods, fail over to the hosted provider, answer.

A request's flow through the pieces, in order:

1. ``dispatcher`` - :class:`Dispatcher`, called by ``gateway.app`` with a
   validated request and its route: opens the request's ledger and job.
2. ``jobs``       - the request as carried through its attempts (bodies encoded
   once, the answer's id, socket deadlines).
3. ``attempts``   - the policy: asks ``gateway.state`` for the plan, tries the
   Triton pods in order within the breakers and the retry budget, then the
   hosted provider, else answers 503. Retries happen only before the client
   got a byte.
4. ``triton_calls`` / ``hosted_calls`` - one attempt at a pod or at the
   provider: the request on the wire, the answer translated to OpenAI's; a
   failure raises before anything is sent.
5. ``relay``      - a stream from its first byte on: forwarded event by event,
   ended by an SSE error event if the backend breaks off.
6. ``accounting`` - what the request leaves in ``/metrics``: latency, tokens,
   cost, errors, failovers.

``wire`` holds the JSON and SSE encoding they share. The hot path keeps work
minimal: one JSON decode of the client body (in ``gateway.app``), one encode of
the Triton body, one decode of Triton's answer, one encode of the OpenAI
answer; pooled keep-alive connections; no locks.
"""

from tritonfleet.gateway.proxy.dispatcher import Dispatcher

__all__ = ["Dispatcher"]
