"""The operator's reconcile side: kopf handlers that feed the reconcile loop.

``operator`` registers the kopf watches and handlers, ``state`` keeps what they
delivered in memory, ``reconcile`` runs one level-based reconcile per object and
carries out the plans ``tritonfleet.desired.kube.plan`` decides, ``loading`` loads
each object's models on every Triton pod. The process is composed and started by
``tritonfleet operator`` (``tritonfleet.cli.operator``), beside ``scaling``.
"""
