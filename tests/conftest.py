"""Root pytest wiring: the fixtures of tests/support and the component markers.

Every test is marked with the real components its fixtures reach, found from the
fixture closure, so a slice can be chosen without knowing the files:

* ``testbed`` - the local Kubernetes control plane (fixture ``testbed``);
* ``triton``  - a real tritonserver (``triton_launcher``, or the pod runner, which
  runs Triton pods as local tritonserver processes);
* ``s3``      - moto's S3 server (``moto_server``);
* ``image``   - the tritonfleet image built from the Dockerfile and run with podman
  (``tritonfleet_image``, or the pod runner, which runs the project's pods from it).

``pytest -m "not testbed"`` runs without building or starting the cluster;
``pytest -m "not (testbed or triton or s3 or image)"`` needs nothing but Python.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.fixtures"]

COMPONENT_FIXTURES = {
    "testbed": {"testbed"},
    "triton": {"triton_launcher", "pod_runner"},
    "s3": {"moto_server"},
    "image": {"tritonfleet_image", "pod_runner"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in COMPONENT_FIXTURES.items():
            if used & fixtures:
                item.add_marker(getattr(pytest.mark, marker))
