"""Queue-time autoscaling: the operator's own view of how loaded each model is.

Triton's Kubernetes example scales on queue time through Prometheus plus
prometheus-adapter; this package makes the operator collect that signal itself, so
nothing else has to be installed and "no data" is never mistaken for "no traffic".

A data-plane part of the operator, next to ``handlers``, ``gateway`` and ``sync`` in
the layering: it may use ``adapters`` and the pure ``desired`` modules, never
``handlers`` (the operator's composition root, ``tritonfleet.cli.operator``, wires
the two together). Flow: :mod:`.collector` scrapes every managed Triton pod's
``/metrics`` on an interval and turns the history into one result per model with the
pure :mod:`tritonfleet.desired.triton.metrics`, exported as Prometheus gauges;
:mod:`.metrics_api` serves the results to the HPAs as the external metrics API;
:mod:`.zero` takes idle ``min: 0`` models to zero and back; :mod:`.in_operator`
starts and stops the three with the operator.
"""
