"""A local pod runner: plays kubelet (and kube-proxy) on the testbed for our own images.

kwok fakes every pod on the testbed's nodes; that is enough for the operator's
bookkeeping but nothing answers on a fake pod. This harness (test/dev only,
never shipped) runs the pods that matter for end-to-end tests as real local
processes:

* pods labelled ``tritonfleet.io/local-runner=true`` (the testbed's admission
  policy adds the label to pods whose image starts with a prefix listed in
  ConfigMap kube-system/tritonfleet-local-runner; kwok then leaves them alone)
  and bound to a node by the real scheduler;
* the project's image (the operator, the gateway, the sync and cleanup Jobs)
  runs as a podman container of the image built from this checkout's
  Dockerfile (hack/devtools/image.py; every tag of the project's image names
  it, as on a node the image was loaded into): the container's command, args
  and env, its volumes as bind mounts, the pod's and container's
  securityContext (user, groups, fsGroup, read-only root filesystem,
  capabilities, no privilege escalation, runAsNonRoot checked against the
  image's user) and in-cluster configuration (the ServiceAccount token at
  /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT);
* the Triton image runs the cached ``tritonserver`` (hack/devtools/triton.py)
  as a local process (its image cannot be pulled here), with volume paths in
  its args rewritten to the local directories; anything else is reported as a
  failed container;
* each pod gets its own loopback IP from the testbed's runner pod network
  (127.1.0.0/16 for the default testbed, 127.<1+i>.0.0/16 for others: key
  podCIDR of the ConfigMap, see hack/testbed/lib.sh); Triton gets
  ``--{http,grpc,metrics}-address=<podIP>``, our containers share the host's
  network namespace with ``TRITONFLEET_LISTEN_HOST=<podIP>``, so pod IPs and
  Service cluster IPs route alike for both;
* volumes become local directories (PVC -> the PV's hostPath, emptyDir,
  ConfigMap, Secret, projected ServiceAccount token from a TokenRequest, so
  RBAC is really exercised); a pod's fsGroup owns the volumes it writes to, as
  a kubelet makes it;
* the pod status (phase, podIP, conditions, containerStatuses with restarts)
  is written to pods/status from the real probes, as a strategic-merge patch (so
  conditions others set, like the operator's readiness gate, stay); Ready also
  needs every ``readinessGates`` condition True, as a kubelet computes it; on
  deletion a ``lifecycle.preStop.sleep`` runs first (the pod keeps running and
  answering), then the container is SIGTERMed, SIGKILLed after the rest of the
  grace period, and the pod deleted for good;
* ClusterIP Services selecting runner pods are served on their (loopback,
  127.96.0.0/16) cluster IP by a TCP forwarder, and the ``kubernetes``
  Service forwards to the real API server. Only loopback targets are dialled.

Use the ``pod_runner`` fixture, or run ``python -m hack.devtools.pod_runner
--kubeconfig .testbed/kubeconfig`` in the foreground (``make demo``).
Only the standard library is needed, and podman (hack/image/ installs it).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from hack.devtools.image import ImageError, ensure_image, podman, podman_argv, podman_env

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_RUNNER_LABEL = "tritonfleet.io/local-runner"
LOCAL_RUNNER_CONFIGMAP = "tritonfleet-local-runner"
#: Image prefixes the runner executes (the chart's image, the operator default, Triton).
TRITON_IMAGE_PREFIX = "nvcr.io/nvidia/tritonserver"
PROJECT_IMAGE_PREFIXES = ("tritonfleet/tritonfleet", "ghcr.io/tritonfleet/tritonfleet")
DEFAULT_IMAGE_PREFIXES = (TRITON_IMAGE_PREFIX, *PROJECT_IMAGE_PREFIXES)
#: Env var our own listeners honour (operator health/metrics, gateway): the pod IP.
LISTEN_HOST_ENV = "TRITONFLEET_LISTEN_HOST"
#: The testbed's API server certificate names the ``kubernetes`` Service by DNS name,
#: not by its (loopback) cluster IP: containers reach the API server by this name,
#: mapped to the cluster IP in their /etc/hosts, so TLS is verified as in a cluster.
API_SERVICE_NAME = "kubernetes.default.svc"
#: Label on every container a runner starts (value: the runner's id) for clean-up.
RUNNER_CONTAINER_LABEL = "io.tritonfleet.pod-runner"
# A pod whose volumes cannot be set up yet (a ConfigMap not created) is retried this often.
SETUP_RETRY_SECONDS = 2.0
POD_NETWORK = ipaddress.ip_network("127.1.0.0/16")
#: Address of the FQDN EndpointSlices the runner writes (EndpointSlices refuse loopback IPs).
FQDN_ENDPOINT = "local-runner.localhost"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

log = logging.getLogger("pod_runner")

Obj = dict[str, Any]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in LOOPBACK
    except ValueError:
        return False


def security_flags(pod_spec: Obj, container: Obj, image_user: str) -> list[str]:
    """``podman run`` flags for a container's securityContext over its pod's, as applied
    by a kubelet. ``image_user`` is the image's USER (``uid[:gid]``), which
    runAsNonRoot is checked against when the pod sets no runAsUser.

    Raises _StartError (CreateContainerConfigError) when runAsNonRoot cannot hold.
    """
    pod_ctx: Obj = pod_spec.get("securityContext") or {}
    ctx: Obj = container.get("securityContext") or {}

    def pick(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    flags: list[str] = []
    uid, gid = pick("runAsUser"), pick("runAsGroup")
    image_uid = image_user.split(":")[0]
    if uid is not None or gid is not None:
        user = str(uid) if uid is not None else image_uid or "0"
        flags.append(f"--user={user}:{gid}" if gid is not None else f"--user={user}")
    if pick("runAsNonRoot"):
        effective = str(uid) if uid is not None else image_uid
        if not effective.isdigit():
            raise _StartError(
                "container has runAsNonRoot and image has non-numeric user "
                f"({effective or 'none'}), cannot verify user is non-root"
            )
        if int(effective) == 0:
            raise _StartError("container has runAsNonRoot and image will run as root")
    for group in [pod_ctx.get("fsGroup"), *(pod_ctx.get("supplementalGroups") or [])]:
        if group is not None:
            flags.append(f"--group-add={group}")
    if ctx.get("privileged"):
        flags.append("--privileged")
    if ctx.get("readOnlyRootFilesystem"):
        # Kubernetes mounts nothing writable over a read-only root; podman would (/tmp, /run).
        flags += ["--read-only", "--read-only-tmpfs=false"]
    capabilities: Obj = ctx.get("capabilities") or {}
    flags += [f"--cap-drop={cap}" for cap in capabilities.get("drop") or []]
    flags += [f"--cap-add={cap}" for cap in capabilities.get("add") or []]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    elif seccomp == "Localhost":
        raise _StartError("the local runner has no Localhost seccomp profiles")
    return flags


# --------------------------------------------------------------------------- API client


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class Api:
    """Minimal client for the testbed's API server with the admin cert of its kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = Path(kubeconfig)
        text = self.kubeconfig.read_text()
        match = re.search(r"^\s*server:\s*(\S+)", text, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no server in {kubeconfig}")
        self.server = match.group(1).rstrip("/")
        parsed = urllib.parse.urlparse(self.server)
        self.port = parsed.port or 443

        def field(name: str) -> str:
            m = re.search(rf"^\s*{name}:\s*(\S+)", text, re.MULTILINE)
            if not m:
                raise RuntimeError(f"no {name} in {kubeconfig}")
            value = m.group(1)
            if not name.endswith("-data"):
                path = Path(value)
                return str(path if path.is_absolute() else self.kubeconfig.parent / path)
            return value

        self._tmp = Path(tempfile.mkdtemp(prefix="pod-runner-pki-"))
        paths = {}
        for key in ("certificate-authority", "client-certificate", "client-key"):
            try:
                paths[key] = field(key)
            except RuntimeError:
                data = base64.b64decode(field(key + "-data"))
                p = self._tmp / key
                p.write_bytes(data)
                paths[key] = str(p)
        self.ca_file = paths["certificate-authority"]
        self.ca_pem = Path(self.ca_file).read_text()
        self.ctx = ssl.create_default_context(cafile=self.ca_file)
        self.ctx.load_cert_chain(paths["client-certificate"], paths["client-key"])

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise


# --------------------------------------------------------------------------- TCP forwarding


class _Forwarder:
    """Listens on one loopback ip:port and pipes each connection to a resolved target."""

    def __init__(self, ip: str, port: int, resolve: Any) -> None:
        self.ip, self.port, self.resolve = ip, port, resolve
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=f"fwd-{ip}:{port}", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        target = self.resolve()
        if target is None or not is_loopback(target[0]):
            client.close()
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        client.settimeout(None)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while chunk := src.recv(65536):
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        t.start()
        pipe(client, upstream)
        t.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.thread.join(timeout=2)


# --------------------------------------------------------------------------- containers


@dataclasses.dataclass
class _Probe:
    spec: Obj
    successes: int = 0
    failures: int = 0
    last: float = 0.0
    ok: bool = False


class _Container:
    """One container of a runner pod: its process, probes and status."""

    def __init__(self, pod: _Pod, spec: Obj, init: bool = False) -> None:
        self.pod, self.spec, self.init = pod, spec, init
        self.name: str = spec["name"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.started_at: str | None = None
        self.started_mono = 0.0
        self.terminated: Obj | None = None
        self.last_terminated: Obj | None = None
        self.waiting_reason: str | None = "ContainerCreating"
        self.waiting_message: str | None = None
        self.no_restart = False
        self.next_start = 0.0
        self.backoff = 1.0
        self.readiness = _Probe(spec["readinessProbe"]) if spec.get("readinessProbe") else None
        self.liveness = _Probe(spec["livenessProbe"]) if spec.get("livenessProbe") else None
        self.startup = _Probe(spec["startupProbe"]) if spec.get("startupProbe") else None
        self.started = False  # startup probe passed (or none)
        self.ready = False
        self.log_path = pod.dir / f"{self.name}.log"
        #: The podman container this runs as (project image), None for a local process.
        self.container_name: str | None = None

    # -- process ---------------------------------------------------------------
    def argv_env(self) -> tuple[list[str], dict[str, str], str]:
        pod = self.pod
        image: str = self.spec.get("image", "")
        if image.startswith(pod.runner.project_prefixes):
            argv, env = pod.container_run(self)
            return argv, env, str(pod.dir)
        self.container_name = None
        command = list(self.spec.get("command") or [])
        args = list(self.spec.get("args") or [])
        env = pod.container_env(self.spec)
        args = [pod.rewrite(expand_references(a, env)) for a in args]
        command = [pod.rewrite(expand_references(a, env)) for a in command]
        ip = pod.ip
        if image.startswith(TRITON_IMAGE_PREFIX):
            argv = command + args if command else args
            while argv and argv[0].endswith("nvidia_entrypoint.sh"):
                argv = argv[1:]
            if not argv or Path(argv[0]).name != "tritonserver":
                raise _StartError(f"only tritonserver runs from the Triton image, got {argv!r}")
            from hack.devtools.triton import ensure_triton

            argv = [
                str(ensure_triton()),
                *argv[1:],
                f"--http-address={ip}",
                f"--grpc-address={ip}",
                f"--metrics-address={ip}",
            ]
        else:
            raise _StartError(f"the local runner cannot run image {image!r}")
        workdir = self.spec.get("workingDir")
        cwd = pod.rewrite(workdir) if workdir else str(pod.dir)
        if not Path(cwd).is_dir():
            cwd = str(pod.dir)
        return argv, env, cwd

    def start(self) -> None:
        argv, env, cwd = self.argv_env()
        # The env's values stay out of the log (secrets): names only.
        shown = [re.sub(r"^(--env=[^=]*)=.*", r"\1", a, flags=re.DOTALL) for a in argv]
        with self.log_path.open("ab") as logf:
            logf.write(f"\n=== {_now()} start: {shlex.join(shown)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                argv,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # own group: stop/kill reach child processes too
            )
        self.started_at = _now()
        self.started_mono = time.monotonic()
        self.pod.runner.record_start(self)
        self.terminated = None
        self.waiting_reason = self.waiting_message = None
        self.started = self.startup is None
        self.ready = False
        for p in (self.readiness, self.liveness, self.startup):
            if p:
                p.successes = p.failures = 0
                p.ok = False
                p.last = 0.0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.container_name is not None:
            # The container's processes are conmon's children, not podman run's.
            with contextlib.suppress(ImageError):
                podman("kill", f"--signal={signal.Signals(sig).name}", self.container_name,
                       check=False, timeout=30)  # fmt: skip
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def reap(self) -> bool:
        """Record the exit if the process ended; True if it did just now."""
        if self.proc is None or self.proc.poll() is None:
            return False
        rc = self.proc.returncode
        self.proc = None
        code = rc if rc >= 0 else 128 - rc
        self.terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": _now(),
        }
        if rc < 0:
            self.terminated["signal"] = -rc
        self.ready = False
        self.started = False
        # A pod reaped after the testbed went (a preStop sleep outlasting the run) has no
        # directory left to note its exit in.
        with contextlib.suppress(FileNotFoundError), self.log_path.open("ab") as logf:
            logf.write(f"=== {_now()} exited with {code}\n".encode())
        # Kill leftovers of the group (e.g. Triton's python backend stubs).
        return True

    def kill_group_leftovers(self, pgid: int) -> None:
        if self.container_name is not None:
            # `podman run --rm` removes its container on exit; unless it died first.
            with contextlib.suppress(ImageError):
                podman("rm", "--force", "--time=0", "--ignore", self.container_name,
                       check=False, timeout=60)  # fmt: skip
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    # -- probes ----------------------------------------------------------------
    def run_probe(self, probe: _Probe) -> None:
        spec = probe.spec
        now = time.monotonic()
        if now - self.started_mono < spec.get("initialDelaySeconds", 0):
            return
        if probe.last and now - probe.last < spec.get("periodSeconds", 10):
            return
        probe.last = now
        ok = self.pod.check(spec, self.spec)
        if ok:
            probe.successes += 1
            probe.failures = 0
            if probe.successes >= spec.get("successThreshold", 1):
                probe.ok = True
        else:
            probe.failures += 1
            probe.successes = 0
            if probe.failures >= spec.get("failureThreshold", 3):
                probe.ok = False

    def status(self) -> Obj:
        if self.running():
            state: Obj = {"running": {"startedAt": self.started_at}}
        elif self.terminated is not None:
            state = {"terminated": self.terminated}
        else:
            waiting: Obj = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        out: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": self.pod.runner.project_image_id if self.container_name else "",
            "ready": self.ready and self.running(),
            "restartCount": self.restart_count,
            "started": self.running() and self.started,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.running():
            out["containerID"] = (
                f"podman://{self.container_name}"
                if self.container_name
                else f"local://{self.pod.namespace}/{self.pod.name}/{self.name}"
            )
        return out


def expand_references(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` in a container's command and args, from its environment, as the kubelet
    expands them (an unknown name stays as written)."""
    return re.sub(
        r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text
    )


class _StartError(RuntimeError):
    pass


class _Pod:
    """A runner pod: allocates its IP, prepares volumes, supervises containers, writes status."""

    def __init__(self, runner: PodRunner, pod: Obj, ip: str) -> None:
        self.runner = runner
        self.api = runner.api
        self.obj = pod
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.ip = ip
        self.dir = runner.state_dir / "pods" / f"{self.namespace}_{self.name}"
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.vol_dir = self.dir / "volumes"
        self.vol_dir.mkdir()
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_containers = [
            _Container(self, c, init=True) for c in spec.get("initContainers") or []
        ]
        self.containers = [_Container(self, c) for c in spec.get("containers") or []]
        previous = {c["name"]: c for c in pod.get("status", {}).get("containerStatuses") or []}
        for c in self.containers:
            if c.name in previous:  # adopted from an earlier runner: its process is gone
                c.restart_count = int(previous[c.name].get("restartCount", 0)) + 1
        self.volumes: dict[str, Path] = {}
        self.mounts: dict[str, list[tuple[str, Path]]] = {}
        #: Per container: the mountPaths mounted read-only.
        self.read_only_mounts: dict[str, set[str]] = {}
        self.kubeconfig: Path | None = None
        self.host_ip = runner.node_ip(spec.get("nodeName", ""))
        self.start_time = _now()
        self.initialized = not self.init_containers
        self.setup_error: str | None = None
        self.deleting = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.RLock()
        self.last_status: Obj | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )

    # -- volumes ----------------------------------------------------------------------
    def prepare(self) -> None:
        spec = self.obj["spec"]
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            path = self.vol_dir / name
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                pvc = self.api.get(
                    f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}"
                )
                pv_name = pvc.get("spec", {}).get("volumeName")
                if not pv_name or pvc.get("status", {}).get("phase") != "Bound":
                    raise _StartError(f"PVC {claim} is not bound")
                pv = self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
                host = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not host:
                    raise _StartError(f"PV {pv_name} has no hostPath")
                self.volumes[name] = Path(host)
                continue
            path.mkdir(parents=True, exist_ok=True)
            self.volumes[name] = path
            if "emptyDir" in vol:
                continue
            if "configMap" in vol:
                self._write_source(
                    path, "configmaps", vol["configMap"], vol["configMap"].get("defaultMode", 0o644)
                )
            elif "secret" in vol:
                src = {**vol["secret"], "name": vol["secret"]["secretName"]}
                self._write_source(path, "secrets", src, vol["secret"].get("defaultMode", 0o644))
            elif "projected" in vol:
                mode = vol["projected"].get("defaultMode", 0o644)
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        self._write_token(path, source["serviceAccountToken"], mode)
                    elif "configMap" in source:
                        self._write_source(path, "configmaps", source["configMap"], mode)
                    elif "secret" in source:
                        self._write_source(path, "secrets", source["secret"], mode)
                    elif "downwardAPI" in source:
                        self._write_downward(path, source["downwardAPI"], mode)
            elif "downwardAPI" in vol:
                self._write_downward(
                    path, vol["downwardAPI"], vol["downwardAPI"].get("defaultMode", 0o644)
                )
            elif "hostPath" in vol:
                raise _StartError(f"hostPath volume {name} is not supported by the local runner")
        claims_read_only = {
            vol["name"]
            for vol in spec.get("volumes") or []
            if (vol.get("persistentVolumeClaim") or {}).get("readOnly")
        }
        written: set[str] = set()  # volumes some container mounts read-write
        for c in [*self.init_containers, *self.containers]:
            mounts = []
            read_only: set[str] = set()
            for m in c.spec.get("volumeMounts") or []:
                base = self.volumes.get(m["name"])
                if base is None:
                    raise _StartError(f"volume {m['name']} not found")
                local = base / m["subPath"] if m.get("subPath") else base
                if m.get("subPath"):
                    local.mkdir(parents=True, exist_ok=True) if not local.exists() else None
                mount_path = m["mountPath"].rstrip("/") or "/"
                mounts.append((mount_path, local))
                if m.get("readOnly") or m["name"] in claims_read_only:
                    read_only.add(mount_path)
                else:
                    written.add(m["name"])
            mounts.sort(key=lambda t: len(t[0]), reverse=True)
            self.mounts[c.name] = mounts
            self.read_only_mounts[c.name] = read_only
        self._own_volumes(written)

    def _own_volumes(self, written: set[str]) -> None:
        """Volume ownership as a kubelet sets it: an emptyDir is world-writable, and the
        pod's fsGroup owns each volume (setgid directories; group read, and write for a
        claim or emptyDir a container writes to). A claim only ever mounted read-only
        is left alone. Files that vanish meanwhile (a Job writing) are skipped."""
        spec = self.obj["spec"]
        kinds = {vol["name"]: vol for vol in spec.get("volumes") or []}
        for name, vol in kinds.items():
            if "emptyDir" in vol and name in self.volumes:
                self.volumes[name].chmod(0o777)
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        if fs_group is None:
            return
        for name, root in self.volumes.items():
            vol = kinds.get(name, {})
            if "persistentVolumeClaim" in vol and name not in written:
                continue
            mask = 0o660 if ("emptyDir" in vol or "persistentVolumeClaim" in vol) else 0o440
            for dirpath, _, filenames in os.walk(root):
                entries = [(Path(dirpath), True), *((Path(dirpath, f), False) for f in filenames)]
                for entry, is_dir in entries:
                    with contextlib.suppress(FileNotFoundError, PermissionError):
                        st = entry.lstat()
                        if stat.S_ISLNK(st.st_mode):
                            continue
                        os.chown(entry, -1, int(fs_group))
                        extra = (mask | 0o110 | stat.S_ISGID) if is_dir else mask
                        entry.chmod(stat.S_IMODE(st.st_mode) | extra)

    def _write_source(self, path: Path, kind: str, src: Obj, mode: int) -> None:
        obj = self.api.get_or_none(f"/api/v1/namespaces/{self.namespace}/{kind}/{src['name']}")
        if obj is None:
            if src.get("optional"):
                return
            raise _StartError(f"{kind[:-1]} {src['name']} not found")
        data: dict[str, bytes] = {}
        if kind == "secrets":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        items = src.get("items")
        pairs = (
            [(i["key"], i["path"], i.get("mode", mode)) for i in items]
            if items
            else [(k, k, mode) for k in data]
        )
        for key, rel, m in pairs:
            if key not in data:
                continue
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[key])
            target.chmod(m | 0o600)  # the runner's user must still read what it wrote

    def _write_downward(self, path: Path, src: Obj, mode: int) -> None:
        for item in src.get("items") or []:
            ref = item.get("fieldRef")
            if not ref:
                continue
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.field(ref["fieldPath"]))

    def _write_token(self, path: Path, src: Obj, mode: int) -> None:
        sa = self.obj["spec"].get("serviceAccountName") or "default"
        token_spec: Obj = {
            "expirationSeconds": max(int(src.get("expirationSeconds", 3607)), 3600),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if src.get("audience"):
            token_spec["audiences"] = [src["audience"]]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": token_spec,
        }
        resp = self.api.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body
        )
        token = resp["status"]["token"]
        (path / src.get("path", "token")).write_text(token)
        (path / "ca.crt").write_text(self.api.ca_pem)
        (path / "namespace").write_text(self.namespace)
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.api.server,
                        "certificate-authority": str(path / "ca.crt"),
                    },
                }
            ],
            # The projected file, as in a pod: the client re-reads it (tokens rotate).
            "users": [{"name": sa, "user": {"tokenFile": str(path / src.get("path", "token"))}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "testbed", "user": sa, "namespace": self.namespace},
                }
            ],
            "current-context": "pod",
        }
        kc = self.dir / "kubeconfig"
        kc.write_text(json.dumps(kubeconfig, indent=2))
        self.kubeconfig = kc

    # -- env and paths -------------------------------------------------------------------
    def field(self, path: str) -> str:
        meta, spec = self.obj["metadata"], self.obj["spec"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip,
            "status.hostIP": self.host_ip,
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        return ""

    def rewrite(self, value: str, container: str | None = None) -> str:
        """Map a container path (or --flag=path) onto its local directory."""
        mounts = self._all_mounts() if container is None else self.mounts.get(container, [])
        prefix, sep, rest = value.partition("=")
        if sep and prefix.startswith("-"):
            return prefix + "=" + self._map(rest, mounts)
        return self._map(value, mounts)

    def _all_mounts(self) -> list[tuple[str, Path]]:
        seen = [m for ms in self.mounts.values() for m in ms]
        return sorted(seen, key=lambda t: len(t[0]), reverse=True)

    @staticmethod
    def _map(value: str, mounts: list[tuple[str, Path]]) -> str:
        for mount, local in mounts:
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount) :]
        return value

    def service_links(self) -> dict[str, str]:
        """``<SERVICE>_SERVICE_HOST``/``_PORT[_<NAME>]`` of the namespace's Services, as the
        kubelet sets them (enableServiceLinks): their loopback cluster IPs here."""
        services = self.api.get_or_none(f"/api/v1/namespaces/{self.namespace}/services")
        env: dict[str, str] = {}
        for svc in (services or {}).get("items") or []:
            ip = (svc.get("spec") or {}).get("clusterIP")
            ports = (svc.get("spec") or {}).get("ports") or []
            if not ip or ip == "None" or not ports:
                continue
            prefix = svc["metadata"]["name"].upper().replace("-", "_")
            env[f"{prefix}_SERVICE_HOST"] = ip
            env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
            for port in ports:
                if port.get("name"):
                    name = port["name"].upper().replace("-", "_")
                    env[f"{prefix}_SERVICE_PORT_{name}"] = str(port["port"])
        return env

    def container_env(self, spec: Obj) -> dict[str, str]:
        """The environment of a container run as a local process (Triton)."""
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "HOSTNAME": self.name,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        for mount, local in self.mounts.get(spec["name"], []):
            if mount == "/tmp":
                env["TMPDIR"] = str(local)
        return self.spec_env(spec, env, rewrite_paths=True)

    def spec_env(self, spec: Obj, env: dict[str, str], *, rewrite_paths: bool) -> dict[str, str]:
        """``env`` updated with the Services' links (unless the pod turns them off), then the
        container's envFrom and env (``$(VAR)`` expanded); values naming a mount path are
        rewritten to the local directory if asked."""
        if self.obj["spec"].get("enableServiceLinks", True):
            env.update(self.service_links())
        for src in spec.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                obj = self.api.get_or_none(
                    f"/api/v1/namespaces/{self.namespace}/configmaps/{src['configMapRef']['name']}"
                )
                env.update({prefix + k: v for k, v in ((obj or {}).get("data") or {}).items()})
            if "secretRef" in src:
                obj = self.api.get_or_none(
                    f"/api/v1/namespaces/{self.namespace}/secrets/{src['secretRef']['name']}"
                )
                env.update(
                    {
                        prefix + k: base64.b64decode(v).decode()
                        for k, v in ((obj or {}).get("data") or {}).items()
                    }
                )
        for item in spec.get("env") or []:
            name = item["name"]
            if "value" in item:
                value = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: env.get(m.group(1), m.group(0)),
                    item["value"],
                )
                env[name] = self.rewrite(value, spec["name"]) if rewrite_paths else value
                continue
            ref = item.get("valueFrom") or {}
            if "fieldRef" in ref:
                env[name] = self.field(ref["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "secrets" if "secretKeyRef" in ref else "configmaps"
                r = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                obj = self.api.get_or_none(
                    f"/api/v1/namespaces/{self.namespace}/{kind}/{r['name']}"
                )
                data = (obj or {}).get("data") or {}
                if r["key"] not in data:
                    if r.get("optional"):
                        continue
                    raise _StartError(f"{kind[:-1]} {r['name']} has no key {r['key']}")
                raw = data[r["key"]]
                env[name] = base64.b64decode(raw).decode() if kind == "secrets" else raw
            elif "resourceFieldRef" in ref:
                env[name] = "1"
        return env

    def container_run(self, c: _Container) -> tuple[list[str], dict[str, str]]:
        """``podman run`` of a project-image container, and the environment to run it in.

        Host networking: the container binds its pod IP (``TRITONFLEET_LISTEN_HOST``)
        and dials pod and Service IPs like the runner's processes; in-cluster config
        finds the token where a kubelet mounts it and the API server through its
        Service. The name carries the restart count: a restart is a new container.
        """
        runner = self.runner
        if runner.project_image is None:
            raise _StartError("the runner has no project image (it was not started)")
        spec = c.spec
        env = self.spec_env(spec, {}, rewrite_paths=False)
        env[LISTEN_HOST_ENV] = self.ip
        if runner.api_service_ip:
            env["KUBERNETES_SERVICE_HOST"] = API_SERVICE_NAME
            env["KUBERNETES_SERVICE_PORT"] = "443"
        name = f"k8s_{c.name}_{self.name}_{self.namespace}_{self.uid[:8]}_{c.restart_count}"
        c.container_name = name
        argv = [
            *podman_argv(), "run", "--rm", f"--name={name}", "--pull=never",
            "--network=host", f"--hostname={self.name[:63]}", "--log-driver=none",
            f"--label={RUNNER_CONTAINER_LABEL}={runner.runner_id}",
            f"--label={RUNNER_CONTAINER_LABEL}.instance={runner.instance}",
            f"--label={RUNNER_CONTAINER_LABEL}.pid={os.getpid()}",
            f"--label=io.kubernetes.pod.namespace={self.namespace}",
            f"--label=io.kubernetes.pod.name={self.name}",
            f"--label=io.kubernetes.container.name={c.name}",
            *security_flags(self.obj["spec"], spec, runner.project_image_user),
        ]  # fmt: skip
        if runner.api_service_ip:
            argv.append(f"--add-host={API_SERVICE_NAME}:{runner.api_service_ip}")
        read_only = self.read_only_mounts.get(c.name, set())
        for mount, local in reversed(self.mounts.get(c.name, [])):  # parents first
            argv.append(f"--volume={local}:{mount}:{'ro' if mount in read_only else 'rw'}")
        if spec.get("workingDir"):
            argv.append(f"--workdir={spec['workingDir']}")
        if spec.get("command"):
            command = [expand_references(a, env) for a in spec["command"]]
            argv.append(f"--entrypoint={json.dumps(command)}")
        argv += [f"--env={key}={value}" for key, value in env.items()]
        argv += [runner.project_image, *(expand_references(a, env) for a in spec.get("args") or [])]
        return argv, podman_env()

    def container_port(self, container: Obj, port: Any) -> int | None:
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for c in self.containers:
            for p in c.spec.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
        return None

    def _probe_target(self, container: Obj, action: Obj) -> tuple[str, int] | None:
        """Where an httpGet/tcpSocket probe connects; None when it must not (not loopback)."""
        port = self.container_port(container, action.get("port"))
        host = action.get("host") or self.ip
        if port is None or not is_loopback(host):
            return None
        return str(host), port

    def check(self, probe: Obj, container: Obj) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            h = probe["httpGet"]
            target = self._probe_target(container, h)
            if target is None:
                return False
            host, port = target
            scheme = h.get("scheme", "HTTP").lower()
            url = f"{scheme}://{host}:{port}{h.get('path', '/')}"
            req = urllib.request.Request(url)
            for hd in h.get("httpHeaders") or []:
                req.add_header(hd["name"], hd["value"])
            ctx = ssl._create_unverified_context() if scheme == "https" else None  # noqa: S323 - kubelet does not verify either
            try:
                with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
                    return 200 <= int(resp.status) < 400
            except urllib.error.HTTPError as err:
                return 200 <= err.code < 400
            except (OSError, ValueError):
                return False
        if "tcpSocket" in probe:
            target = self._probe_target(container, probe["tcpSocket"])
            if target is None:
                return False
            host, port = target
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            except OSError:
                return False
        if "exec" in probe:
            command = probe["exec"].get("command") or []
            running = next(
                (c for c in self.containers if c.name == container["name"] and c.container_name),
                None,
            )
            if running is not None and running.container_name is not None:
                try:
                    return (
                        podman("exec", running.container_name, *command, check=False,
                               timeout=max(timeout, 1)).returncode == 0
                    )  # fmt: skip
                except ImageError:
                    return False
            argv = [self.rewrite(a, container["name"]) for a in command]
            try:
                env = self.container_env(container)
                return (
                    subprocess.run(
                        argv,
                        env=env,
                        cwd=self.dir,
                        capture_output=True,
                        timeout=max(timeout, 1),
                        check=False,
                    ).returncode
                    == 0
                )
            except (OSError, subprocess.TimeoutExpired, _StartError, ApiError):
                return False
        return False

    # -- lifecycle -------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Volumes and mounts; on failure the containers wait in CreateContainerConfigError."""
        try:
            self.prepare()
        except (_StartError, ApiError, OSError, KeyError) as err:
            self.setup_error = str(err)
            for c in self.containers:
                c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(err)
            return
        if self.setup_error is not None:
            self.setup_error = None
            for c in self.containers:
                c.waiting_reason, c.waiting_message = "ContainerCreating", None

    def _run(self) -> None:
        self._prepare()
        retry_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                # As a kubelet does: a ConfigMap or Secret created after its pod (an
                # operator may write them in any order) lets the pod start on a retry.
                if self.setup_error is not None and time.monotonic() >= retry_at:
                    retry_at = time.monotonic() + SETUP_RETRY_SECONDS
                    with self.lock:
                        self._prepare()
                with self.lock:
                    if self.setup_error is None and not self.deleting.is_set():
                        self._step()
                self._report()
            except ApiError as err:
                if err.status == 404:
                    break
                log.warning("pod %s/%s: %s", self.namespace, self.name, err)
            except Exception:  # a bad pod must not take the runner down
                log.exception("pod %s/%s", self.namespace, self.name)
            self.stop_event.wait(0.2)

    def _should_restart(self, c: _Container) -> bool:
        if c.no_restart or c.terminated is None:
            return False
        if c.init:
            return c.terminated["exitCode"] != 0 and self.restart_policy != "Never"
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and c.terminated["exitCode"] != 0

    def _start(self, c: _Container) -> None:
        try:
            c.start()
        except (_StartError, OSError, ApiError) as err:
            c.waiting_reason, c.waiting_message = "CreateContainerError", str(err)
            c.no_restart = True

    def _step(self) -> None:
        now = time.monotonic()
        if not self.initialized:
            for c in self.init_containers:
                if c.terminated and c.terminated["exitCode"] == 0:
                    continue
                if c.running():
                    if c.reap():
                        c.next_start = now + c.backoff
                    return
                if c.proc is None and c.terminated is None:
                    self._start(c)
                    return
                if self._should_restart(c) and now >= c.next_start:
                    c.last_terminated = c.terminated
                    c.restart_count += 1
                    self._start(c)
                return
            self.initialized = True
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                pgid = c.proc.pid
                c.reap()
                c.kill_group_leftovers(pgid)
                c.next_start = now + c.backoff
                c.backoff = min(c.backoff * 2, 10.0)
            if c.proc is None:
                if c.terminated is None and c.waiting_reason == "ContainerCreating":
                    self._start(c)
                elif self._should_restart(c) and now >= c.next_start:
                    c.last_terminated = c.terminated
                    c.restart_count += 1
                    self._start(c)
                continue
            if now - c.started_mono > 30:
                c.backoff = 1.0
            if c.startup and not c.started:
                c.run_probe(c.startup)
                if c.startup.ok:
                    c.started = True
                elif c.startup.failures >= c.startup.spec.get("failureThreshold", 3):
                    c.signal(signal.SIGKILL)
                continue
            if c.liveness:
                c.run_probe(c.liveness)
                if c.liveness.failures >= c.liveness.spec.get("failureThreshold", 3):
                    log.info(
                        "pod %s/%s container %s failed its liveness probe",
                        self.namespace,
                        self.name,
                        c.name,
                    )
                    c.signal(signal.SIGKILL)
                    continue
            if c.readiness:
                c.run_probe(c.readiness)
                c.ready = c.readiness.ok
            else:
                c.ready = True

    def phase(self) -> str:
        if self.setup_error is not None or not self.initialized:
            if any(
                c.terminated and c.terminated["exitCode"] != 0 and not self._should_restart(c)
                for c in self.init_containers
            ):
                return "Failed"
            return "Pending"
        cs = self.containers
        if any(c.running() for c in cs):
            return "Running"
        if all(c.terminated is not None for c in cs):
            if self.restart_policy == "Always" and not all(c.no_restart for c in cs):
                return "Running"
            if all(c.terminated and c.terminated["exitCode"] == 0 for c in cs):
                return "Succeeded"
            if all(not self._should_restart(c) for c in cs):
                return "Failed"
            return "Running"
        if any(c.terminated is not None for c in cs):
            return "Running"
        return "Pending"

    def gates_missing(self) -> list[str]:
        """The pod's readiness gates whose condition (set by another controller) is not
        True yet, from the latest copy of the pod the runner listed."""
        gates = [g.get("conditionType") for g in self.obj["spec"].get("readinessGates") or []]
        set_true = {
            c.get("type")
            for c in (self.obj.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        return [str(g) for g in gates if g and g not in set_true]

    def pre_stop_seconds(self) -> float:
        """The longest ``lifecycle.preStop.sleep`` of the pod's containers (the other
        hook kinds are not run here: said in the log)."""
        longest = 0.0
        for spec in self.obj["spec"].get("containers") or []:
            hook = (spec.get("lifecycle") or {}).get("preStop") or {}
            if "sleep" in hook:
                longest = max(longest, float(hook["sleep"].get("seconds", 0)))
            elif hook:
                log.warning(
                    "pod %s/%s: only preStop sleep hooks run here", self.namespace, self.name
                )
        return longest

    def status(self) -> Obj:
        with self.lock:
            phase = self.phase()
            statuses = [c.status() for c in self.containers]
            containers_ready = phase == "Running" and all(s["ready"] for s in statuses)
            gates = self.gates_missing()
            ready = containers_ready and not gates
            ts = self.start_time

            def cond(kind: str, ok: bool, reason: str | None = None, message: str = "") -> Obj:
                out: Obj = {
                    "type": kind,
                    "status": "True" if ok else "False",
                    "lastProbeTime": None,
                    "lastTransitionTime": ts,
                }
                if reason and not ok:
                    out["reason"] = reason
                if message and not ok:
                    out["message"] = message
                return out

            if containers_ready and gates:
                # The kubelet's words when only readiness gates hold a pod back.
                why = "ReadinessGatesNotReady"
                message = "; ".join(
                    f'corresponding condition of pod readiness gate "{g}" is not True'
                    for g in gates
                )
            else:
                why, message = "ContainersNotReady", ""

            status: Obj = {
                "phase": phase,
                "hostIP": self.host_ip,
                "hostIPs": [{"ip": self.host_ip}],
                "podIP": self.ip,
                "podIPs": [{"ip": self.ip}],
                "startTime": self.start_time,
                "qosClass": self.obj.get("status", {}).get("qosClass", "BestEffort"),
                "conditions": [
                    cond("PodReadyToStartContainers", True),
                    cond("Initialized", self.initialized, "ContainersNotInitialized"),
                    cond("Ready", ready, why, message),
                    cond("ContainersReady", containers_ready, "ContainersNotReady"),
                    cond("PodScheduled", True),
                ],
                "containerStatuses": statuses,
            }
            if self.init_containers:
                status["initContainerStatuses"] = [c.status() for c in self.init_containers]
            return status

    def _report(self) -> None:
        status = self.status()
        # Transition times: keep them stable unless the status flips.
        if self.last_status is not None:
            old = {c["type"]: c for c in self.last_status["conditions"]}
            for c in status["conditions"]:
                prev = old.get(c["type"])
                if prev and prev["status"] == c["status"]:
                    c["lastTransitionTime"] = prev["lastTransitionTime"]
                else:
                    c["lastTransitionTime"] = _now()
        if status == self.last_status:
            return
        # Strategic merge, as a kubelet patches: conditions merge by type, so the ones
        # other controllers set (readiness gates) are left as they are.
        self.api.request(
            "PATCH",
            f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
            {"status": status},
            content_type="application/strategic-merge-patch+json",
        )
        self.last_status = status

    def is_ready(self) -> bool:
        s = self.last_status or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))

    def shutdown(self) -> None:
        """Runner stop: end the processes and say so in the status (not Ready)."""
        self.terminate(5.0)
        with contextlib.suppress(ApiError, OSError):
            self._report()

    def terminate(self, grace: float) -> None:
        """SIGTERM every container, SIGKILL after ``grace`` seconds, reap."""
        self.stop_event.set()
        self.thread.join(timeout=5)
        with self.lock:
            procs = [c for c in [*self.init_containers, *self.containers] if c.proc is not None]
            for c in procs:
                c.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and any(c.running() for c in procs):
                time.sleep(0.1)
            for c in procs:
                pgid = c.proc.pid if c.proc else None
                c.signal(signal.SIGKILL)
                if c.proc is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        c.proc.wait(timeout=5)
                    c.reap()
                if pgid:
                    c.kill_group_leftovers(pgid)


# --------------------------------------------------------------------------- the runner


class PodRunner:
    """Runs the testbed's local-runner pods as local processes (see the module docstring)."""

    def __init__(
        self,
        kubeconfig: Path | str,
        state_dir: Path | str | None = None,
        *,
        image_prefixes: tuple[str, ...] = DEFAULT_IMAGE_PREFIXES,
        project_prefixes: tuple[str, ...] = PROJECT_IMAGE_PREFIXES,
        project_image: str | None = None,
        register_prefixes: bool = True,
        interval: float = 0.5,
    ) -> None:
        self.api = Api(Path(kubeconfig))
        self.state_dir = Path(state_dir) if state_dir else Path(kubeconfig).resolve().parent
        self.image_prefixes = image_prefixes
        self.project_prefixes = project_prefixes
        self.register_prefixes = register_prefixes
        self.interval = interval
        #: The image project-image pods run (built from this checkout unless given).
        self.project_image = project_image
        self.project_image_id = ""
        self.project_image_user = ""
        #: Labels this runner's containers (its state directory: one runner per testbed).
        self.runner_id = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        self.instance = uuid.uuid4().hex[:12]
        #: Cluster IP of the ``kubernetes`` Service (containers reach the API server there).
        self.api_service_ip = ""
        self.pods: dict[str, _Pod] = {}  # uid -> pod
        self.forwarders: dict[tuple[str, int], _Forwarder] = {}
        self.services: dict[tuple[str, int], tuple[Obj, Obj]] = {}
        self._previous_prefixes: str | None = None  # restored on stop()
        self._slices: dict[str, Obj] = {}  # Service uid -> the EndpointSlice last applied
        self._node_ips: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._next_ip = 1
        #: Where pod IPs come from: the testbed's podCIDR (ConfigMap), default 127.1.0.0/16.
        self.pod_network: ipaddress.IPv4Network | ipaddress.IPv6Network = POD_NETWORK
        self.errors: list[str] = []
        #: Every container start: namespace, pod, component, container, runs, image.
        self.starts: list[dict[str, str]] = []

    # -- public ----------------------------------------------------------------------
    def start(self) -> PodRunner:
        if self.project_prefixes:
            self._prepare_project_image()
        self._read_pod_network()
        if self.register_prefixes:
            self._register_prefixes()
        self._sync()
        self._thread = threading.Thread(target=self._loop, name="pod-runner", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every process and forwarder (no process is left behind).

        Image prefixes this runner added to the ConfigMap are removed again, so
        pods created later are kwok's (nothing would run them otherwise).
        """
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            pods = list(self.pods.values())
            self.pods.clear()
        threads = [threading.Thread(target=p.shutdown) for p in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for f in self.forwarders.values():
            f.close()
        self.forwarders.clear()
        if self.project_prefixes:
            self._remove_containers(ours=True)
        if self._previous_prefixes is not None:
            # Without a runner, labelled pods would never run: hand new pods back to kwok.
            with contextlib.suppress(ApiError, OSError):
                self.api.request(
                    "PATCH",
                    f"/api/v1/namespaces/kube-system/configmaps/{LOCAL_RUNNER_CONFIGMAP}",
                    {"data": {"imagePrefixes": self._previous_prefixes}},
                    content_type="application/merge-patch+json",
                )
            self._previous_prefixes = None

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def processes(self) -> list[dict[str, Any]]:
        """What runs now: namespace, pod, container, pid (for a container: of its
        ``podman run``), podIP, ready, restartCount, runs (container or process)."""
        out = []
        with self._lock:
            for p in self.pods.values():
                for c in p.containers:
                    out.append(
                        {
                            "namespace": p.namespace,
                            "pod": p.name,
                            "container": c.name,
                            "pid": c.proc.pid if c.proc and c.proc.poll() is None else None,
                            "podIP": p.ip,
                            "ready": c.ready and c.running(),
                            "restartCount": c.restart_count,
                            # The podman container, or the local process (Triton).
                            "runs": "container" if c.container_name else "process",
                        }
                    )
        return out

    def record_start(self, c: _Container) -> None:
        labels = c.pod.obj["metadata"].get("labels") or {}
        runs = (
            f"container {c.container_name} of {self.project_image}"
            if c.container_name
            else "process"
        )
        log.info("%s/%s %s: started as %s", c.pod.namespace, c.pod.name, c.name, runs)
        with self._lock:
            self.starts.append(
                {
                    "namespace": c.pod.namespace,
                    "pod": c.pod.name,
                    "component": labels.get("app.kubernetes.io/component", ""),
                    "container": c.name,
                    "runs": runs,
                    "image": (self.project_image or "") if c.container_name else "",
                }
            )

    def pod(self, namespace: str, name: str) -> _Pod:
        with self._lock:
            for p in self.pods.values():
                if p.namespace == namespace and p.name == name:
                    return p
        raise KeyError(f"the runner does not run pod {namespace}/{name}")

    def kill(
        self, namespace: str, pod: str, *, restart: bool = True, container: str | None = None
    ) -> None:
        """SIGKILL a pod's process(es); restartPolicy applies unless ``restart=False``."""
        p = self.pod(namespace, pod)
        with p.lock:
            for c in p.containers:
                if container is None or c.name == container:
                    if not restart:
                        c.no_restart = True
                    c.signal(signal.SIGKILL)

    def stop_pod(self, namespace: str, pod: str) -> None:
        """Kill a pod's processes for good: the pod stays, not Ready, nothing restarts."""
        self.kill(namespace, pod, restart=False)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        d = self.state_dir / "pods" / f"{namespace}_{pod}"
        files = [d / f"{container}.log"] if container else sorted(d.glob("*.log"))
        return "".join(f.read_text(errors="replace") for f in files if f.exists())

    def wait_ready(
        self, namespace: str, selector: str = "", n: int = 1, timeout: float = 120
    ) -> list[Obj]:
        """Wait until ``n`` pods matching ``selector`` (label selector) are Ready; return them."""
        deadline = time.monotonic() + timeout
        q = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
        ready: list[Obj] = []
        while time.monotonic() < deadline:
            pods = self.api.get(f"/api/v1/namespaces/{namespace}/pods{q}")["items"]
            ready = [
                p
                for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions") or []
                )
            ]
            if len(ready) >= n:
                return ready
            time.sleep(0.5)
        raise TimeoutError(
            f"{len(ready)}/{n} pods Ready in {namespace} ({selector}) after {timeout:g}s; "
            f"processes: {self.processes()}"
        )

    # -- internals -----------------------------------------------------------------------
    def _prepare_project_image(self) -> None:
        """The image (built if needed), its id and user; the API Service's cluster IP;
        containers a crashed runner of this testbed left behind removed."""
        if self.project_image is None:
            self.project_image = ensure_image()
        config = podman(
            "image", "inspect", "--format", "{{.Id}} {{.Config.User}}", self.project_image
        ).stdout.split()
        self.project_image_id = f"sha256:{config[0]}"
        self.project_image_user = config[1] if len(config) > 1 else ""
        svc = self.api.get_or_none("/api/v1/namespaces/default/services/kubernetes") or {}
        self.api_service_ip = (svc.get("spec") or {}).get("clusterIP") or ""
        self._remove_containers(ours=False)

    def _remove_containers(self, *, ours: bool) -> None:
        """Remove this testbed's runner containers: this runner's (``ours``), or those
        whose runner process is gone (a crashed runner's, found when one starts)."""
        label = RUNNER_CONTAINER_LABEL
        columns = " ".join(
            ["{{.ID}}", *(f'{{{{index .Labels "{label}.{key}"}}}}' for key in ("instance", "pid"))]
        )
        listed = podman(
            "ps", "--all", f"--filter=label={label}={self.runner_id}", "--format", columns,
            check=False,
        ).stdout.splitlines()  # fmt: skip
        doomed = []
        for line in listed:
            cid, instance, pid = [*line.split(), "", "", ""][:3]
            if (instance == self.instance) if ours else not _pid_alive(pid):
                doomed.append(cid)
        if doomed:
            podman("rm", "--force", "--time=0", *doomed, check=False, timeout=120)

    def _read_pod_network(self) -> None:
        path = f"/api/v1/namespaces/kube-system/configmaps/{LOCAL_RUNNER_CONFIGMAP}"
        cm = self.api.get_or_none(path) or {}
        cidr = (cm.get("data") or {}).get("podCIDR")
        if cidr:
            network = ipaddress.ip_network(cidr)
            if not network.subnet_of(LOOPBACK):  # type: ignore[arg-type]
                raise RuntimeError(f"{LOCAL_RUNNER_CONFIGMAP} podCIDR {cidr} is not loopback")
            self.pod_network = network

    def _register_prefixes(self) -> None:
        path = f"/api/v1/namespaces/kube-system/configmaps/{LOCAL_RUNNER_CONFIGMAP}"
        cm = self.api.get_or_none(path)
        current = [
            p.strip()
            for p in ((cm or {}).get("data") or {}).get("imagePrefixes", "").split(",")
            if p.strip()
        ]
        wanted = current + [p for p in self.image_prefixes if p not in current]
        if wanted != current:
            self._previous_prefixes = ",".join(current)
            self.api.request(
                "PATCH",
                path,
                {"data": {"imagePrefixes": ",".join(wanted)}},
                content_type="application/merge-patch+json",
            )
            time.sleep(1.5)  # the admission policy picks the param change up asynchronously

    def node_ip(self, node: str) -> str:
        if node not in self._node_ips:
            obj = self.api.get_or_none(f"/api/v1/nodes/{node}") or {}
            addrs = obj.get("status", {}).get("addresses") or []
            ip = next((a["address"] for a in addrs if a["type"] == "InternalIP"), "127.0.0.1")
            self._node_ips[node] = ip
        return self._node_ips[node]

    def _ip_free(self, ip: str) -> bool:
        return is_loopback(ip) and all(p.ip != ip for p in self.pods.values())

    def _allocate_ip(self, reserved: set[str] | None = None) -> str:
        used = {p.ip for p in self.pods.values()} | (reserved or set())
        size = self.pod_network.num_addresses - 2
        for _ in range(size):
            ip = str(self.pod_network[self._next_ip])
            self._next_ip = self._next_ip % size + 1
            if ip not in used:
                return ip
        raise RuntimeError("pod network exhausted")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sync()
            except (ApiError, OSError) as err:
                log.warning("pod runner sync: %s", err)
            except Exception:
                log.exception("pod runner sync")

    def _sync(self) -> None:
        q = urllib.parse.quote(f"{LOCAL_RUNNER_LABEL}=true")
        items = self.api.get(f"/api/v1/pods?labelSelector={q}")["items"]
        # IPs pods already hold (an earlier runner's pods about to be adopted included).
        reserved = {p.get("status", {}).get("podIP") for p in items} - {None}
        seen = set()
        for pod in items:
            uid = pod["metadata"]["uid"]
            if not pod["spec"].get("nodeName"):
                continue
            seen.add(uid)
            with self._lock:
                known = self.pods.get(uid)
                if known is None and not pod["metadata"].get("deletionTimestamp"):
                    status = pod.get("status", {})
                    if status.get("phase") in ("Succeeded", "Failed"):
                        continue  # finished: never run again
                    # Left by an earlier runner (like a kubelet after a reboot): run it
                    # again on its pod IP (the API server keeps a pod IP once set).
                    old_ip = status.get("podIP")
                    if old_ip and not self._ip_free(old_ip):
                        continue
                    known = _Pod(self, pod, old_ip or self._allocate_ip(reserved))
                    self.pods[uid] = known
                    known.thread.start()
                elif known is not None:
                    known.obj = pod
            if pod["metadata"].get("deletionTimestamp"):
                if known is None:
                    self._finish_delete(pod)
                elif not known.deleting.is_set():
                    known.deleting.set()
                    grace = pod["metadata"].get("deletionGracePeriodSeconds", 30)
                    threading.Thread(
                        target=self._delete, args=(known, float(min(grace, 30))), daemon=True
                    ).start()
        with self._lock:
            gone = [p for uid, p in self.pods.items() if uid not in seen]
            for p in gone:
                del self.pods[p.uid]
        for p in gone:
            threading.Thread(target=p.terminate, args=(0.0,), daemon=True).start()
        self._sync_services()

    def _delete(self, pod: _Pod, grace: float) -> None:
        # preStop first, within the grace period; the pod keeps running (and its status
        # reported) meanwhile, as under a kubelet.
        hook = min(pod.pre_stop_seconds(), grace)
        if hook > 0:
            log.info("pod %s/%s: preStop sleep %.0fs", pod.namespace, pod.name, hook)
            self._stop.wait(hook)  # cut short when the runner stops
        pod.terminate(max(grace - hook, 0.0))
        with self._lock:
            self.pods.pop(pod.uid, None)
        self._finish_delete(pod.obj)

    def _finish_delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        # (OSError: the API server went first, e.g. a testbed stopped during a preStop.)
        with contextlib.suppress(ApiError, OSError):
            self.api.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )

    # -- kube-proxy -------------------------------------------------------------------------
    def _sync_services(self) -> None:
        services = self.api.get("/api/v1/services")["items"]
        wanted: dict[tuple[str, int], tuple[Obj, Obj]] = {}
        with self._lock:
            runner_ns = {p.namespace for p in self.pods.values()}
        for svc in services:
            spec = svc.get("spec", {})
            ip = spec.get("clusterIP")
            if not ip or ip == "None" or not is_loopback(ip):
                continue
            meta = svc["metadata"]
            is_api = meta["namespace"] == "default" and meta["name"] == "kubernetes"
            if not is_api and (not spec.get("selector") or meta["namespace"] not in runner_ns):
                continue
            for port in spec.get("ports") or []:
                if port.get("protocol", "TCP") == "TCP":
                    wanted[(ip, int(port["port"]))] = (svc, port)
        self.services = wanted
        self._sync_endpoint_slices([svc for svc, _ in wanted.values()])
        for key in list(self.forwarders):
            if key not in wanted:
                self.forwarders.pop(key).close()
        for key in wanted:
            if key not in self.forwarders:
                try:
                    self.forwarders[key] = _Forwarder(
                        key[0], key[1], lambda k=key: self._resolve(k)
                    )
                except OSError as err:
                    msg = f"cannot listen on {key[0]}:{key[1]}: {err}"
                    if msg not in self.errors:
                        self.errors.append(msg)
                        log.warning(msg)

    def _ready_pods_of(self, svc: Obj) -> list[_Pod]:
        meta, selector = svc["metadata"], svc["spec"].get("selector") or {}
        with self._lock:
            return [
                p
                for p in self.pods.values()
                if p.namespace == meta["namespace"]
                and not p.deleting.is_set()
                and all(
                    (p.obj["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items()
                )
                and p.is_ready()
            ]

    def _sync_endpoint_slices(self, services: list[Obj]) -> None:
        """An FQDN EndpointSlice (one FQDN_ENDPOINT per Ready pod) for each served Service.

        The aggregator's availability check wants a ready endpoint behind an
        APIService's Service even with aggregator routing off, and
        EndpointSlices refuse loopback IPs; an FQDN slice satisfies it. Nothing
        on the testbed dials it (no kube-proxy, aggregator routing off), and the
        name is under the reserved ``localhost.`` TLD (RFC 6761: loopback).
        """
        done: set[str] = set()
        for svc in services:
            meta = svc["metadata"]
            uid = meta["uid"]
            if uid in done or not svc["spec"].get("selector"):
                continue
            done.add(uid)
            pods = self._ready_pods_of(svc)
            ports = []
            for port in svc["spec"].get("ports") or []:
                target = port.get("targetPort", port["port"])
                resolved = next(
                    (p.container_port({}, target) for p in pods if p.container_port({}, target)),
                    target if isinstance(target, int) else None,
                )
                if resolved is not None:
                    ports.append(
                        {
                            "name": port.get("name", ""),
                            "port": resolved,
                            "protocol": port.get("protocol", "TCP"),
                        }
                    )
            body: Obj = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{meta['name']}-local-runner",
                    "namespace": meta["namespace"],
                    "labels": {
                        "kubernetes.io/service-name": meta["name"],
                        "endpointslice.kubernetes.io/managed-by": "local-runner.tritonfleet.io",
                    },
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": uid}
                    ],
                },
                "addressType": "FQDN",
                "ports": ports,
                "endpoints": [
                    {
                        "addresses": [FQDN_ENDPOINT],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": p.obj["spec"].get("nodeName"),
                        "targetRef": {
                            "kind": "Pod",
                            "namespace": p.namespace,
                            "name": p.name,
                            "uid": p.uid,
                        },
                    }
                    for p in sorted(pods, key=lambda p: p.name)
                ],
            }
            if self._slices.get(uid) == body:
                continue
            name = body["metadata"]["name"]
            try:
                self.api.request(
                    "PATCH",
                    f"/apis/discovery.k8s.io/v1/namespaces/{meta['namespace']}/endpointslices/"
                    f"{name}?fieldManager=local-pod-runner&force=true",
                    body,
                    content_type="application/apply-patch+yaml",
                )
            except ApiError as err:
                log.warning("EndpointSlice %s/%s: %s", meta["namespace"], name, err)
                continue
            self._slices[uid] = body

    def _resolve(self, key: tuple[str, int]) -> tuple[str, int] | None:
        entry = self.services.get(key)
        if entry is None:
            return None
        svc, port = entry
        meta = svc["metadata"]
        if meta["namespace"] == "default" and meta["name"] == "kubernetes":
            return ("127.0.0.1", self.api.port)
        target = port.get("targetPort", port["port"])
        candidates = self._ready_pods_of(svc)
        random.shuffle(candidates)  # spread connections like kube-proxy
        for p in candidates:
            tp = p.container_port({}, target)
            if tp is not None and is_loopback(p.ip):
                return (p.ip, tp)
        return None


# --------------------------------------------------------------------------- pytest / CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.devtools.pod_runner", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument(
        "--project-image",
        default=None,
        help="image the project's pods run (default: built from this checkout, hack/image/)",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="pods/<ns>_<pod>/ logs go here"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s pod-runner %(levelname)s %(message)s"
    )
    runner = PodRunner(args.kubeconfig, args.state_dir, project_image=args.project_image)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runner.start()
    log.info(
        "running pods with images %s (state in %s); the project's pods as podman containers "
        "of %s (%s)",
        ", ".join(runner.image_prefixes),
        runner.state_dir,
        runner.project_image,
        runner.project_image_id,
    )
    last: list[dict[str, Any]] = []
    try:
        while not stop.wait(2):
            now = runner.processes()
            if now != last:
                for p in now:
                    log.info(
                        "%(namespace)s/%(pod)s %(container)s %(runs)s pid=%(pid)s "
                        "ip=%(podIP)s ready=%(ready)s restarts=%(restartCount)s",
                        p,
                    )
                last = now
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
