"""Triton's side of planning: config rendering and checks, ensembles, revisions,
the model repository layout, per-pod load plans and Triton's metrics text.

Imported by ``desired.kube`` (the operator's plan) and ``desired.gateway`` (the
route table); imports only ``tritonfleet.api`` and Triton's proto (``proto``).
"""
