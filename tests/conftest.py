"""Shared pytest wiring: the real components the suite runs against.

The fixtures live in tests/support so scripts and benchmarks can reuse them:
``testbed`` (the local Kubernetes control plane with fake GPU nodes) and the
Triton fixtures (``triton_launcher``, ``triton_factory``: real tritonserver
processes), ``moto_server`` (moto's real S3 wire protocol) and a local
HTTP file server. Each builds or starts its component on first use and fails,
never skips, when it cannot.
"""

pytest_plugins = [
    "tests.support.testbed",
    "tests.support.pod_runner",
    "tests.support.triton",
    "tests.support.s3",
    "tests.support.http_server",
]
