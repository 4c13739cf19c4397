"""The operator process: kopf handlers that feed the reconcile loop.

``operator`` registers the kopf watches and handlers, ``state`` keeps what
they delivered in memory, ``reconcile`` runs one level-based reconcile per
object and carries out the plans ``tritonfleet.desired.kube.plan`` decides,
``cli`` is the ``tritonfleet operator`` command. Run it with
``tritonfleet operator`` or ``python -m tritonfleet.handlers``.
"""
