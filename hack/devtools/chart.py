"""The chart installed on the testbed the way a platform team installs it.

Shared by the e2e tests and the benchmarks that need the operator and gateway
running as pods (through the local pod runner, ``hack/devtools/pod_runner.py``);
:func:`template` renders it without a cluster.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from hack.devtools.testbed import REPO_ROOT, Testbed

if TYPE_CHECKING:
    from hack.devtools.pod_runner import PodRunner

CHART = REPO_ROOT / "charts" / "tritonfleet"
# Label selector of the Triton pods the operator creates.
TRITON_PODS = "app.kubernetes.io/component=inference-server"


@contextlib.contextmanager
def installed(testbed: Testbed, namespace: str, *sets: str) -> Iterator[str]:
    """The chart as a platform team installs it (CRDs are the suite's, applied already)."""
    release = "tf"
    extra = [arg for value in sets for arg in ("--set", value)]
    testbed.helm(
        "install", release, str(CHART), "-n", namespace, "--create-namespace",
        "--set", "crds.enabled=false",
        "--set", "image.repository=tritonfleet/tritonfleet", "--set", "image.tag=e2e",
        "--set", "gateway.replicaCount=1",
        "--set", "operator.reconcileIntervalSeconds=5",
        # kwok's fake pods must never be dialled; the runner's pods are 127.1.x.y.
        "--set", "operator.podNetworks={127.0.0.0/8}",
        *extra,
        timeout=180,
    )  # fmt: skip
    try:
        yield release
    finally:
        done = testbed.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "180s",
                            check=False, timeout=240)  # fmt: skip
        if done.returncode != 0:
            # The pre-delete hook refused (models of another test left on the shared
            # testbed): this test's release must still go.
            print(f"[chart] uninstall refused, removing without hooks: {done.stderr.strip()}")
            testbed.helm("uninstall", release, "-n", namespace, "--no-hooks", "--wait",
                         "--timeout", "120s", check=False, timeout=180)  # fmt: skip
        testbed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@dataclass(frozen=True)
class Serving:
    """The chart installed, its operator and gateway pods Ready."""

    namespace: str
    release: str
    gateway_url: str  # the gateway Service's OpenAI base URL (.../v1)


@contextlib.contextmanager
def serving(
    testbed: Testbed, runner: PodRunner, namespace: str, *sets: str, timeout: float = 180
) -> Iterator[Serving]:
    """:func:`installed`, then its operator and gateway running through ``runner``."""
    with installed(testbed, namespace, *sets) as release:
        runner.wait_ready(namespace, "app.kubernetes.io/component=operator", 1, timeout=timeout)
        runner.wait_ready(namespace, "app.kubernetes.io/component=gateway", 1, timeout=timeout)
        service = testbed.get("service", f"{release}-tritonfleet-gateway", namespace=namespace)
        url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v1"
        yield Serving(namespace, release, url)


def template(*args: str) -> list[dict[str, Any]]:
    """The chart rendered by ``helm template`` (extra ``args``, e.g. ``--set``), no
    cluster needed; helm is built into the cache first if it is missing."""
    bed = Testbed.from_environment()
    if not bed.helm_path.exists():
        subprocess.run([str(REPO_ROOT / "hack" / "testbed" / "build.sh"), "helm"], check=True)
    kube_version = bed.versions["KUBE_VERSION"]  # the chart states the versions it supports
    out = subprocess.run(
        [str(bed.helm_path), "template", "t", str(CHART), "--kube-version", kube_version, *args],
        capture_output=True,
        text=True,
        env=bed.env(),
        check=False,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"helm template failed: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]
