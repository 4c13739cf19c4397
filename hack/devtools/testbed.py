"""The local Kubernetes testbed (hack/testbed) as seen from tests.

A real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) plus kwok for fake GPU/CPU nodes, started by
``hack/testbed/up.sh``. This module only needs the standard library.

Use the session fixture::

    # tests/conftest.py
    from hack.devtools.testbed import testbed  # noqa: F401

    def test_something(testbed: Testbed) -> None:
        with testbed.namespace("demo") as ns:
            testbed.apply(manifest, namespace=ns)

Environment:
    TRITONFLEET_TESTBED_REUSE=1  use the running testbed, or start one, and leave it
                                 running after the session (fast local iterations).
    TESTBED_NAME, TESTBED_DIR, TRITONFLEET_CACHE  as for hack/testbed/up.sh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK_DIR = REPO_ROOT / "hack" / "testbed"
VERSIONS_FILE = HACK_DIR / "versions.env"

#: Pods carrying this label are left alone by kwok (see hack/testbed/README.md).
LOCAL_RUNNER_LABEL = "tritonfleet.io/local-runner"
#: ConfigMap (kube-system) listing image prefixes that get LOCAL_RUNNER_LABEL.
LOCAL_RUNNER_CONFIGMAP = "tritonfleet-local-runner"
GPU_NODES = tuple(f"gpu-node-{i}" for i in range(4))
CPU_NODES = tuple(f"cpu-node-{i}" for i in range(2))
STORAGE_CLASS = "tritonfleet-local"

T = TypeVar("T")


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse hack/testbed/versions.env (KEY=value lines)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    return Path(os.environ.get("TRITONFLEET_CACHE") or Path.home() / ".cache" / "tritonfleet")


def state_dir() -> Path:
    """As hack/testbed/lib.sh: .testbed, or .testbed-<name> for another TESTBED_NAME."""
    if os.environ.get("TESTBED_DIR"):
        return Path(os.environ["TESTBED_DIR"])
    name = os.environ.get("TESTBED_NAME") or "tritonfleet"
    return REPO_ROOT / (".testbed" if name == "tritonfleet" else f".testbed-{name}")


class TestbedError(RuntimeError):
    """The testbed could not be started, stopped or queried."""

    __test__ = False  # not a test class, despite the name


@dataclasses.dataclass(frozen=True)
class Testbed:
    """Handle on a running testbed: kubeconfig, binaries and small helpers."""

    __test__ = False

    kubeconfig: Path
    bin_dir: Path
    kubectl_path: Path
    helm_path: Path
    state_dir: Path
    name: str = "tritonfleet"
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> Testbed:
        """Describe the testbed that up.sh creates with the current environment."""
        versions = read_versions()
        bin_dir = cache_dir() / "bin"
        sdir = state_dir()
        return cls(
            kubeconfig=sdir / "kubeconfig",
            bin_dir=bin_dir,
            kubectl_path=bin_dir / f"kubectl-{versions['KUBE_VERSION']}" / "kubectl",
            helm_path=bin_dir / f"helm-{versions['HELM_VERSION']}" / "helm",
            state_dir=sdir,
            name=os.environ.get("TESTBED_NAME") or "tritonfleet",
            versions=versions,
        )

    # -- networks ----------------------------------------------------------------
    @property
    def network_index(self) -> int:
        """Which loopback networks this testbed owns (as hack/testbed/lib.sh computes it)."""
        if os.environ.get("TESTBED_NET_INDEX"):
            return int(os.environ["TESTBED_NET_INDEX"]) % 32
        if self.name == "tritonfleet":
            return 0
        return sum(self.name.encode()) % 31 + 1

    @property
    def service_cidr(self) -> str:
        """Service cluster IPs: 127.<96+i>.0.0/16 (the ``kubernetes`` Service has .0.1)."""
        return f"127.{96 + self.network_index}.0.0/16"

    @property
    def runner_pod_cidr(self) -> str:
        """Pod IPs the local pod runner hands out: 127.<1+i>.0.0/16."""
        return f"127.{1 + self.network_index}.0.0/16"

    # -- paths -----------------------------------------------------------------
    @property
    def volumes_dir(self) -> Path:
        """Parent of the hostPath directories backing the static PVs (pv-NN)."""
        return self.state_dir / "volumes"

    @property
    def front_proxy_dir(self) -> Path:
        """front-proxy-ca.crt / front-proxy-client.{crt,key} of the aggregation layer."""
        return self.state_dir / "pki" / "front-proxy"

    @property
    def cluster_dir(self) -> Path:
        """kwokctl's cluster directory: pki/ (ca.crt, admin.crt/key), logs/, etcd/."""
        return self.state_dir / "kwok" / "clusters" / self.name

    def binary(self, component: str) -> Path:
        """Path of a built binary, e.g. ``binary("kube-apiserver")``."""
        key = {
            "etcd": "ETCD_VERSION",
            "kwok": "KWOK_VERSION",
            "kwokctl": "KWOK_VERSION",
            "helm": "HELM_VERSION",
        }.get(component, "KUBE_VERSION")
        return self.bin_dir / f"{component}-{self.versions[key]}" / component

    @property
    def server(self) -> str:
        """The kube-apiserver URL (https://127.0.0.1:<random free port>)."""
        match = re.search(r"^\s*server:\s*(\S+)", self.kubeconfig.read_text(), re.MULTILINE)
        if not match:
            raise TestbedError(f"no server in {self.kubeconfig}")
        return match.group(1)

    def env(self) -> dict[str, str]:
        """Environment for child processes: KUBECONFIG, PATH with kubectl/helm, helm dirs."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join(
            [str(self.kubectl_path.parent), str(self.helm_path.parent), env.get("PATH", "")]
        )
        helm_home = self.state_dir / "helm"
        env.setdefault("HELM_CACHE_HOME", str(helm_home / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(helm_home / "config"))
        env.setdefault("HELM_DATA_HOME", str(helm_home / "data"))
        return env

    # -- commands --------------------------------------------------------------
    def _run(
        self,
        argv: list[str],
        *,
        input: str | None,
        check: bool,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise TestbedError(
                f"command failed (exit {proc.returncode}): {' '.join(argv)}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the testbed's kubectl with ``--kubeconfig``; raises TestbedError if check."""
        argv = [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, input=input, check=check, timeout=timeout)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        """Run the testbed's helm with ``--kubeconfig``; raises TestbedError if check."""
        argv = [str(self.helm_path), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(argv, input=input, check=check, timeout=timeout)

    def apply(
        self, yaml_text: str, *, namespace: str | None = None, server_side: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -`` the given manifest(s)."""
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        if server_side:
            args += ["--server-side", "--force-conflicts"]
        return self.kubectl(*args, input=yaml_text)

    def get(self, *args: str, namespace: str | None = None) -> Any:
        """``kubectl get ... -o json`` parsed; None if the object does not exist."""
        ns = ["-n", namespace] if namespace else []
        proc = self.kubectl("get", *args, *ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise TestbedError(f"kubectl get {' '.join(args)} failed: {proc.stderr}")
        return json.loads(proc.stdout)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 60,
        what: str = "condition",
        interval: float = 0.5,
    ) -> T:
        """Poll ``predicate`` until it returns a truthy value and return that value.

        Raises WaitTimeoutErrorError (an AssertionError, so a test fails) after ``timeout``
        seconds, naming ``what`` and the last value or exception seen.
        """
        return wait_for(predicate, timeout=timeout, what=what, interval=interval)

    @contextlib.contextmanager
    def namespace(self, prefix: str = "test") -> Iterator[str]:
        """A fresh namespace (with its default ServiceAccount), deleted afterwards."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        try:
            self.wait_for(
                lambda: self.get("serviceaccount", "default", namespace=name),
                timeout=30,
                what=f"the default ServiceAccount in namespace {name}",
            )
            yield name
        finally:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)
            # kwok does not finish the deletion of local-runner pods; without a
            # runner they would keep the namespace Terminating forever.
            self.kubectl(
                "delete",
                "pods",
                "-n",
                name,
                "-l",
                f"{LOCAL_RUNNER_LABEL}=true",
                "--grace-period=0",
                "--force",
                "--wait=false",
                check=False,
            )

    # -- local runner ------------------------------------------------------------
    def local_runner_image_prefixes(self) -> list[str]:
        """Image prefixes whose pods get the local-runner label at creation."""
        cm = self.get("configmap", LOCAL_RUNNER_CONFIGMAP, namespace="kube-system")
        raw = ((cm or {}).get("data") or {}).get("imagePrefixes", "")
        return [p.strip() for p in raw.split(",") if p.strip()]

    def set_local_runner_image_prefixes(self, prefixes: list[str]) -> None:
        """Label future pods of these images tritonfleet.io/local-runner=true.

        Backed by a MutatingAdmissionPolicy (hack/testbed/local-runner-policy.yaml);
        the change reaches the API server's admission within a second or so.
        """
        patch = json.dumps({"data": {"imagePrefixes": ",".join(prefixes)}})
        self.kubectl(
            "patch", "configmap", LOCAL_RUNNER_CONFIGMAP, "-n", "kube-system",
            "--type=merge", "-p", patch,
        )  # fmt: skip

    # -- storage -----------------------------------------------------------------
    def pv_path(self, pv_name: str) -> Path:
        """Local directory backing a testbed PersistentVolume."""
        pv = self.get("pv", pv_name)
        if pv is None:
            raise TestbedError(f"PersistentVolume {pv_name} not found")
        spec = pv["spec"]
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise TestbedError(f"PersistentVolume {pv_name} has no hostPath/local path")
        return Path(path)

    def recycle_volumes(self) -> list[str]:
        """Make Released testbed PVs Available again (wipes their directories).

        The static PVs use reclaimPolicy Retain, so a deleted PVC leaves its PV
        Released; call this to return such PVs to the pool.
        """
        pvs = self.get("pv", "-l", "tritonfleet.io/testbed=true") or {"items": []}
        recycled = []
        for pv in pvs["items"]:
            if pv.get("status", {}).get("phase") != "Released":
                continue
            name = pv["metadata"]["name"]
            path = self.pv_path(name)
            if path.is_dir() and path.is_relative_to(self.volumes_dir):
                for child in path.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            self.kubectl(
                "patch",
                "pv",
                name,
                "--type=json",
                "-p",
                '[{"op": "remove", "path": "/spec/claimRef"}]',
            )
            recycled.append(name)
        return recycled

    # -- faults ----------------------------------------------------------------------
    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

    def component_pid(self, component: str) -> int:
        """The running process of a control-plane component (kwokctl runs each as a
        local process and writes its pid in <cluster dir>/pids/)."""
        return int((self.cluster_dir / "pids" / f"{component}.pid").read_text().strip())

    def restart_component(self, component: str, *, down_s: float = 0.0) -> float:
        """Crash a control-plane component (SIGKILL), keep it down ``down_s``
        seconds, start it again exactly as kwokctl did (same argv, environment,
        directory and log) and wait until the API server is ready again. Returns the
        seconds from the kill until the API server was ready.

        After the API server or etcd, the controller manager and the scheduler are
        restarted too, as a kubelet restarts static pods that lost their leader
        election during the outage (kwokctl supervises nothing): the cluster's own
        controllers working again is the testbed's business, not the test's.
        SIGKILL, not SIGTERM: a SIGTERMed API server drains its watches for a minute.
        Ports are fixed per testbed (up.sh), so a restarted component gets its own."""
        if component not in self.COMPONENTS:
            raise ValueError(f"{component}: one of {', '.join(self.COMPONENTS)}")
        down_at = time.monotonic()
        names = [component]
        if component in ("etcd", "kube-apiserver"):
            names += ["kube-controller-manager", "kube-scheduler"]
        how = {name: self._stop_component(name, down_s if name == component else 0.0)
               for name in names}  # fmt: skip
        procs = {name: self._launch(name, *how[name]) for name in names}

        def ready() -> bool:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    # A killed process's other threads can hold its sockets a moment
                    # after its main thread is a zombie: "address already in use".
                    procs[name] = self._launch(name, *how[name])
                    return False
            got = self.kubectl("get", "--raw", "/readyz", check=False, timeout=5)
            return got.returncode == 0

        wait_for(ready, timeout=120, what=f"the API server ready after restarting {component}",
                 interval=0.25)  # fmt: skip
        return time.monotonic() - down_at

    def _stop_component(
        self, component: str, down_s: float
    ) -> tuple[list[str], dict[str, str], Path]:
        """SIGKILL a component; how to start it again (argv, environment, directory)."""
        pid = self.component_pid(component)
        proc = Path(f"/proc/{pid}")
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        env = dict(
            item.decode().split("=", 1)
            for item in (proc / "environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        cwd = (proc / "cwd").readlink()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _pid_running(pid), timeout=60,
                 what=f"{component} (pid {pid}) to exit", interval=0.05)  # fmt: skip
        if down_s > 0:
            time.sleep(down_s)  # the outage itself is what the test asked for
        return argv, env, cwd

    def _launch(
        self, component: str, argv: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        with (self.cluster_dir / "logs" / f"{component}.log").open("ab") as log:
            started = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        (self.cluster_dir / "pids" / f"{component}.pid").write_text(f"{started.pid}\n")
        return started

    # -- health ----------------------------------------------------------------------
    def is_healthy(self) -> bool:
        """API server ready and all testbed nodes Ready."""
        if not (self.kubeconfig.is_file() and self.kubectl_path.is_file()):
            return False
        try:
            ready = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
            if ready.returncode != 0:
                return False
            nodes = self.kubectl(
                "get",
                "nodes",
                "-l",
                "tritonfleet.io/testbed=true",
                "-o",
                "json",
                check=False,
                timeout=10,
            )
        except subprocess.TimeoutExpired:
            return False
        if nodes.returncode != 0:
            return False
        # A testbed from before the loopback Service ranges (or another name's) is stale.
        cidr = self.kubectl(
            "get", "servicecidr", "kubernetes", "-o", "jsonpath={.spec.cidrs[0]}",
            check=False, timeout=10,
        )  # fmt: skip
        if cidr.stdout.strip() != self.service_cidr:
            return False
        items = json.loads(nodes.stdout)["items"]
        ready_nodes = [
            n
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        return len(items) == len(GPU_NODES) + len(CPU_NODES) == len(ready_nodes)


class WaitTimeoutError(AssertionError):
    """A condition waited for did not come true in time (fails the test that waited)."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60,
    what: str = "condition",
    interval: float = 0.5,
) -> T:
    """Poll ``predicate`` until truthy; WaitTimeoutError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except (TestbedError, subprocess.SubprocessError, OSError, KeyError, ValueError) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


# -- starting and stopping ----------------------------------------------------------------


def _stream(argv: list[str], write: Callable[[str], None], keep: int = 60) -> tuple[int, list[str]]:
    """Run argv, forward its combined output line by line; return (rc, last lines)."""
    tail: deque[str] = deque(maxlen=keep)
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        cwd=REPO_ROOT,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            write(line.rstrip("\n"))
            tail.append(line.rstrip("\n"))
        rc = proc.wait()
    return rc, list(tail)


def _failure_summary(script: str, rc: int, tail: list[str]) -> str:
    reasons = [
        ln
        for ln in tail
        if "ERROR" in ln or "FAILED" in ln or "not found" in ln.lower() or "missing" in ln
    ]
    summary = "\n".join(reasons) or "(no error line recognised)"
    return (
        f"hack/testbed/{script} failed with exit code {rc}. What went wrong:\n{summary}\n"
        f"--- last output lines ---\n" + "\n".join(tail)
    )


def start(write: Callable[[str], None] = print) -> Testbed:
    """Run hack/testbed/up.sh (builds what is missing, starts or reuses the cluster)."""
    rc, tail = _stream(["bash", str(HACK_DIR / "up.sh")], write)
    if rc != 0:
        raise TestbedError(_failure_summary("up.sh", rc, tail))
    return Testbed.from_environment()


def stop(write: Callable[[str], None] = print) -> None:
    """Run hack/testbed/down.sh."""
    rc, tail = _stream(["bash", str(HACK_DIR / "down.sh")], write)
    if rc != 0:
        raise TestbedError(_failure_summary("down.sh", rc, tail))


@contextlib.contextmanager
def for_a_run(keep: bool = False) -> Iterator[Testbed]:
    """The environment's testbed for one run of a tool (a benchmark): reused when it is
    healthy and then left running; otherwise started, and stopped afterwards unless
    ``keep``."""
    bed = Testbed.from_environment()
    started = not bed.is_healthy()
    if started:
        print(f"starting testbed {bed.name} in {bed.state_dir} ...", flush=True)
        bed = start()
    try:
        yield bed
    finally:
        if started and not keep:
            stop()
        elif started:
            print(f"testbed {bed.name} left running (KUBECONFIG={bed.kubeconfig})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_running(pid: int) -> bool:
    """Some thread of it alive and not a zombie (kwokctl detaches its processes; where
    nothing reaps them, a dead one stays a zombie, and a killed multi-threaded
    process's main thread is a zombie while the others still close its sockets)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            return True
    return False


class Sessions:
    """Test sessions using a testbed: one file per process in <state>/.sessions.

    The session that started the testbed only tears it down when no other live
    session uses it (several engineers and xdist workers share one checkout).
    """

    def __init__(self, bed: Testbed) -> None:
        self.dir = bed.state_dir / ".sessions"
        self.me = self.dir / str(os.getpid())

    def register(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Same bookkeeping as up.sh: mark the directory as the testbed's (so
        # down.sh may delete it) and keep it out of git.
        (self.dir.parent / ".tritonfleet-testbed").touch()
        gitignore = self.dir.parent / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# created by hack/devtools/testbed.py\n*\n")
        self.me.write_text(" ".join(sys.argv))

    def unregister(self) -> None:
        self.me.unlink(missing_ok=True)

    def others(self) -> list[int]:
        if not self.dir.is_dir():
            return []
        alive = []
        for f in self.dir.iterdir():
            if not f.name.isdigit() or f == self.me:
                continue
            if _pid_alive(int(f.name)):
                alive.append(int(f.name))
            else:
                f.unlink(missing_ok=True)
        return sorted(alive)
