"""The gateway's planning: the route table (from a routes file or from the cluster's
objects), the OpenAI <-> Triton mapping and the per-request choice of backend.

Read by the ``tritonfleet.gateway`` process; builds on ``desired.triton``; never
imports ``desired.kube``.
"""
