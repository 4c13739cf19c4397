"""Pure planning: spec and observed state in, desired state out. No I/O.

Three rooms, one per domain, so a reader following one concern stays in one place:

* ``desired.triton``  - what Triton is given and what it says: ``config.pbtxt``
  rendered through Triton's own ``ModelConfig`` proto (``triton.proto`` is the one
  way in), ensemble checks, revisions, the repository layout, per-pod load plans,
  and parsing Triton's ``/metrics``.
* ``desired.kube``    - what the operator writes to Kubernetes: child objects, drift,
  observed-state summaries, the reconcile plan, loading status, autoscaling.
* ``desired.gateway`` - what the gateway decides per request: the route table, the
  OpenAI <-> Triton mapping, prices, the per-request plan.

``kube`` and ``gateway`` both build on ``triton`` and never on each other
(import-linter contract in ``pyproject.toml``).
"""
