"""The tritonfleet image users deploy, built here from the Dockerfile and run with podman.

It starts (``tritonfleet --version`` is this checkout's), every module of the
package imports in it (no dependency missing), it holds nothing a runtime image
should not (no compiler, no pip, no wheels, no caches, no source tree), and a
container of it with the chart's own gateway pod spec - uid 10001, read-only root
filesystem, every capability dropped, no privilege escalation - serves ``/healthz``.
The e2e tests run the operator, the gateway and the sync Jobs from the same image
through the pod runner.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.chart import template
from hack.devtools.image import image_size, podman, unwanted_contents
from hack.devtools.pod_runner import security_flags
from hack.devtools.triton import free_port
from tritonfleet import __version__

pytestmark = pytest.mark.integration

#: The image with the local Debian base; python:3.11-slim gives about the same.
SIZE_LIMIT_MB = 350


def test_the_image_starts_and_holds_nothing_it_should_not(tritonfleet_image: str) -> None:
    version = podman("run", "--rm", "--network=none", tritonfleet_image, "--version")
    assert version.stdout.strip() == f"tritonfleet {__version__}"
    # Every module imports: no dependency is missing from the wheel's requirements.
    imported = podman(
        "run", "--rm", "--network=none", "--entrypoint", "python3", tritonfleet_image, "-c",
        "import importlib, pkgutil, tritonfleet\n"
        "names = [m.name for m in pkgutil.walk_packages(tritonfleet.__path__, 'tritonfleet.')\n"
        "         if not m.name.endswith('.__main__')]\n"
        "for name in names:\n    importlib.import_module(name)\n"
        "print(len(names))",
        check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr[-2000:]
    assert int(imported.stdout) > 50
    assert unwanted_contents(tritonfleet_image) == []
    size_mb = image_size(tritonfleet_image) / 1e6
    print(f"\n{tritonfleet_image}: {size_mb:.0f} MB")
    assert size_mb < SIZE_LIMIT_MB, f"the image grew to {size_mb:.0f} MB"


def _gateway_pod() -> tuple[dict[str, Any], dict[str, Any], str]:
    """The chart's gateway pod spec, its container and its price table."""
    docs = template()
    deployment = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("gateway")
    )
    prices = next(d for d in docs if d["kind"] == "ConfigMap" and "prices" in d["metadata"]["name"])
    pod = deployment["spec"]["template"]["spec"]
    return pod, pod["containers"][0], prices["data"]["prices.yaml"]


@pytest.fixture
def gateway_container(tritonfleet_image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The chart's gateway container (its args, mounts and security context) with static
    routes, started with podman as the pod runner would: (container name, /healthz URL)."""
    pod, container, prices = _gateway_pod()
    (tmp_path / "prices.yaml").write_text(prices)
    (tmp_path / "routes.yaml").write_text("models: []\n")
    (tmp_path / "tmp").mkdir(mode=0o777)
    (tmp_path / "tmp").chmod(0o777)  # an emptyDir, as a kubelet makes it
    image_user = podman("image", "inspect", "--format", "{{.Config.User}}", tritonfleet_image)
    port = free_port()
    name = f"tf-image-test-{uuid.uuid4().hex[:8]}"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(mounts) == {"/tmp", "/etc/tritonfleet/prices"}, mounts
    args = [*container["args"], "--routes", "/etc/tritonfleet/routes.yaml", "--host", "127.0.0.1"]
    args[args.index("--port") + 1] = str(port)
    args[args.index("--metrics-port") + 1] = str(free_port())  # host network: no fixed port
    podman(
        "run", "--detach", "--rm", f"--name={name}", "--pull=never", "--network=host",
        *security_flags(pod, container, image_user.stdout.strip()),
        f"--volume={tmp_path / 'tmp'}:/tmp:rw",
        f"--volume={tmp_path / 'prices.yaml'}:/etc/tritonfleet/prices/prices.yaml:ro",
        f"--volume={tmp_path / 'routes.yaml'}:/etc/tritonfleet/routes.yaml:ro",
        tritonfleet_image, *args,
    )  # fmt: skip
    try:
        yield name, f"http://127.0.0.1:{port}/healthz"
    finally:
        podman("rm", "--force", "--time=0", name, check=False)


def test_a_container_with_the_charts_security_context_serves_healthz(
    gateway_container: tuple[str, str],
) -> None:
    pod, container, _ = _gateway_pod()
    assert pod["securityContext"]["runAsUser"] == 10001  # not the image's own user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    name, url = gateway_container

    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                break
        except (urllib.error.URLError, ConnectionError) as err:
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False)
            assert time.monotonic() < deadline and "running" in state.stdout, (
                f"/healthz never answered ({err}); container {state.stdout.strip()}: "
                + podman("logs", name, check=False).stdout[-2000:]
            )
            time.sleep(0.3)

    # What the serving process (pid 1) runs as, seen from inside the container.
    inside = podman(
        "exec", name, "python3", "-c",
        "import json\n"
        "status = dict(l.split(':', 1) for l in open('/proc/1/status'))\n"
        "try:\n    open('/written', 'w'); root = 'writable'\n"
        "except OSError as err:\n    root = err.strerror\n"
        "open('/tmp/written', 'w').write('ok')\n"
        "print(json.dumps({'uid': status['Uid'].split(), 'cap_eff': status['CapEff'].strip(),\n"
        "                  'no_new_privs': status['NoNewPrivs'].strip(), 'root': root}))",
    )  # fmt: skip
    facts = json.loads(inside.stdout)
    assert set(facts["uid"]) == {"10001"}
    assert int(facts["cap_eff"], 16) == 0
    assert facts["no_new_privs"] == "1"
    assert facts["root"] == "Read-only file system"
