"""Queue-time autoscaling: the operator's own view of how loaded each model is.

Triton's Kubernetes example scales on queue time through Prometheus plus
prometheus-adapter; this package makes the operator collect that signal itself, so
nothing else has to be installed and "no data" is never mistaken for "no traffic".

A data-plane part of the operator, next to ``handlers``, ``gateway`` and ``sync`` in
the layering: it may use ``adapters`` and the pure ``desired`` modules. Flow:
:mod:`.collector` scrapes every managed Triton pod's ``/metrics`` on an interval and
turns the history into one result per model with the pure
:mod:`tritonfleet.desired.triton.metrics`, then exports it as Prometheus gauges (and,
as issue 6 grows, feeds the external metrics API, the HPA and scale-to-zero).
"""
