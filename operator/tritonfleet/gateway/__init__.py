"""The OpenAI-compatible gateway: one endpoint for existing OpenAI SDK code,
routing each model to the Triton pods that hold it and failing over to a hosted
OpenAI-compatible provider when Triton cannot answer, with token and cost
accounting.

A data-plane process (``tritonfleet gateway``), next to ``handlers``,
``scaling`` and ``sync`` in the layering: it uses ``adapters`` (Triton and
hosted HTTP clients) and the pure planning of ``desired.gateway`` (routes,
plan, prices, OpenAI mapping).
Flow: ``cli`` → ``app`` (HTTP, auth, parsing) → ``proxy`` (the request path:
plan, attempts, failover, streaming, accounting) → ``state``/``breaker`` (what
the gateway remembers) → adapters; ``prober`` and ``sources`` keep the state
current in the background.
"""
