"""Run the operator as a real local process against the testbed (no mocks).

:class:`OperatorProcess` starts ``tritonfleet operator`` (the production entry
point) with the testbed's kubeconfig, waits for its ``/healthz``, reads its
``/metrics``, and can stop it gracefully or SIGKILL it. The integration tests
(through the ``operator_process`` fixture in ``tests/support/fixtures.py``) and
``bench/bench_operator.py`` share it, with the namespace helpers below.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.testbed import REPO_ROOT, Testbed, wait_for

WRITE_VERBS = ("create", "apply", "patch", "update", "delete")
_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition → (name, labels, value) samples."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_LINE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


_ENTRY = "import sys; from tritonfleet.cli import main; sys.exit(main())"


class OperatorProcess:
    """One ``tritonfleet operator`` process watching the given namespaces (globs allowed)."""

    def __init__(
        self,
        testbed: Testbed,
        namespaces: list[str],
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.testbed = testbed
        self.namespaces = namespaces
        self.prefix = ""  # the namespace prefix a test fixture gave it, if any
        self.extra_env = env or {}
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = log_path or Path(f"/tmp/tritonfleet-operator-{uuid.uuid4().hex[:6]}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> OperatorProcess:
        env = self.testbed.env()
        env.update(
            {
                "TRITONFLEET_METRICS_PORT": str(self.metrics_port),
                "TRITONFLEET_HEALTH_PORT": str(self.health_port),
                "TRITONFLEET_OPERATOR_IMAGE": "tritonfleet/tritonfleet:test",
                "PYTHONUNBUFFERED": "1",
                # As the chart and the image run it (fewer glibc arenas, less RSS).
                "MALLOC_ARENA_MAX": "2",
                # Network safety: the loader and the queue collector dial the pod
                # runner's pods only (loopback, 127.<1+i>.0.0/16). kwok's fake pods
                # (127.244.x.x) are never dialled: they are reported unreachable at
                # once, instead of a deletion waiting out unloadTimeoutSeconds on them.
                "TRITONFLEET_DIAL_POD_NETWORKS": self.testbed.runner_pod_cidr,
                **self.extra_env,
            }
        )
        # The production entry point (`tritonfleet operator`): the whole operator process
        # as cli/operator.py composes it (reconcile, loader, collector, metrics API,
        # scale to zero).
        argv = [sys.executable, "-c", _ENTRY, "operator"]
        for namespace in self.namespaces:
            argv += ["-n", namespace]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._healthy, timeout=timeout, what=f"operator /healthz ({self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self._probe("/healthz")

    def _probe(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}{path}", timeout=2
            ) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown (a crash, an OOM kill, a node loss)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=30
        ) as response:
            return parse_metrics(response.read().decode())

    def requests_by_verb(self, client: str | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, labels, value in self.metrics():
            if name != "tritonfleet_api_requests_total":
                continue
            if client and labels.get("client") != client:
                continue
            out[labels["verb"]] = out.get(labels["verb"], 0.0) + value
        return out

    def writes(self) -> float:
        """API writes issued so far, by the reconciler and by kopf."""
        by_verb = self.requests_by_verb()
        return sum(v for verb, v in by_verb.items() if verb in WRITE_VERBS)

    def requests_by_resource(self) -> dict[tuple[str, str], float]:
        """API requests issued so far, by (verb, resource), every client of the process."""
        out: dict[tuple[str, str], float] = {}
        for name, labels, value in self.metrics():
            if name == "tritonfleet_api_requests_total":
                key = (labels["verb"], labels["resource"])
                out[key] = out.get(key, 0.0) + value
        return out

    def counter(self, metric: str) -> float:
        """The sum of a counter's series (e.g. tritonfleet_triton_requests_total)."""
        return sum(v for name, _, v in self.metrics() if name == metric)

    def ready(self) -> bool:
        """``/readyz`` answers 200: memory complete, every object looked at once."""
        return self._probe("/readyz")

    def rss_bytes(self, peak: bool = False) -> int:
        field = "VmHWM" if peak else "VmRSS"
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The status condition ``type_`` of an object (empty when it has none)."""
    for cond in ((body or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def apply_crds(testbed: Testbed) -> None:
    testbed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))

    def established(crd: str) -> bool:
        jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
        got = testbed.kubectl("get", f"crd/{crd}", "-o", f"jsonpath={jsonpath}", check=False)
        return got.stdout.strip() == "True"

    for crd in ("tritonmodels.tritonfleet.io", "modelensembles.tritonfleet.io"):
        # Polled, not `kubectl wait`: that one fails at once, instead of waiting, while a
        # CRD just created has no status yet (seen with kubectl 1.34 on a loaded machine).
        wait_for(partial(established, crd), timeout=60, what=f"CRD {crd} Established")


@contextlib.contextmanager
def watched_namespace(testbed: Testbed, prefix: str) -> Iterator[str]:
    """A namespace whose deletion also frees the testbed PV its model repository bound."""
    with testbed.namespace(prefix) as namespace:
        yield namespace
    # The namespace is deleted in the background; recycle PVs as they are released.
    with contextlib.suppress(Exception):
        testbed.recycle_volumes()


def delete_models(testbed: Testbed, namespace: str) -> None:
    """Delete every model while the operator still runs, and wait until it released them.

    ``kubectl delete --wait`` can return with finalizers still on; a namespace
    deleted then would stay Terminating once the operator stops.
    """
    testbed.kubectl("delete", "tritonmodels,modelensembles", "--all", "-n", namespace,
                    "--wait=true", "--timeout=120s", check=False, timeout=150)  # fmt: skip
    testbed.wait_for(
        lambda: (
            not (testbed.get("tritonmodels,modelensembles", namespace=namespace) or {}).get("items")
        ),
        timeout=180,
        what="every model released by the operator",
    )


def cpu_model(name: str, version: int = 1) -> dict[str, Any]:
    """A small CPU TritonModel whose source changes with ``version`` (an edit is a
    new revision): the chaos suite's and the soak's churn."""
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"inline": {"files": {"1/model.py": f"# {name} v{version}\n"}}},
            "config": {
                "backend": "python",
                "inputs": [{"name": "IN", "dataType": "TYPE_FP32", "dims": [1]}],
                "outputs": [{"name": "OUT", "dataType": "TYPE_FP32", "dims": [1]}],
            },
            "serving": {"gpus": 0},
        },
    }


def manifest(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj)
