"""tritonfleet: a Kubernetes operator for fleets of NVIDIA Triton Inference Server.

The package is layered (see docs/architecture.md): ``api`` (typed spec and status)
→ ``desired`` (pure rendering) → ``adapters`` (all I/O) → ``handlers`` and the
data-plane processes (``gateway``, ``scaling``, ``sync``), started by ``cli``.
"""

__version__ = "0.1.0"
