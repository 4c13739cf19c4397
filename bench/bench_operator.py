"""Benchmark: the operator at fleet scale, measured against the API server's own limit.

For each size (``BENCH_MODELS``, default ``250,1000,5000``), on the testbed
(hack/testbed: a real API server, etcd and controllers, kwok nodes), with the
operator running as a local process:

* **floor**: the same TritonModels created the same way, and for each one the same
  writes the operator's first reconcile makes - its finalizer, its ConfigMap, sync Job,
  Service and Deployment (server-side apply, the very objects the operator builds)
  and its status - by a bare client with no reconcile logic, using the concurrency the
  operator may use (32 writers, 32 connections: ``handlers.reconcile``,
  ``adapters.kube``). Events are not part of the floor.
* **operator**: the time from the first create until every model has its four
  children and a status naming its revision, observed the same way for both (watch
  streams of this benchmark), and its ratio to the floor;
* API writes per model by verb and resource, until then and until the fleet settled;
* operator RSS at the end of the burst, after settling, and its peak;
* 60 idle seconds (``BENCH_IDLE_SECONDS``): writes by the operator and by anyone on the
  operator's resources (the API server's own counter), operator CPU, and the loader's
  requests to Triton pods;
* a restart over the converged fleet: seconds until ``/readyz`` and writes meanwhile.

Every kwok Triton pod answers the loader through a stand-in on its own pod IP
(``hack.devtools.triton_fleet``), so models become Ready and the loader's work at rest
is real traffic. Each size ends with one line: ``N models: operator S s, floor F s,
ratio R, writes/model W, RSS M MB, idle writes I``. Not a test: prints figures (and
the machine's load average, which they depend on). ``make bench`` runs it;
``make bench-operator BENCH_MODELS=1000`` runs one size. Its own testbed
(``TESTBED_NAME``, default ``tfbench-op``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))
os.environ.setdefault("TESTBED_NAME", "tfbench-op")

from hack.devtools import testbed as tb  # noqa: E402
from hack.devtools.operator import WRITE_VERBS, OperatorProcess, apply_crds, parse_metrics  # noqa: E402
from hack.devtools.triton_fleet import TritonFleet  # noqa: E402
from tritonfleet.adapters.kube import ApiError, KubeClient, Obj, endpoint_from_kubeconfig  # noqa: E402
from tritonfleet.adapters.kube_watch import ResourceStream  # noqa: E402
from tritonfleet.api.settings import OperatorSettings  # noqa: E402
from tritonfleet.api.status import ModelStatus  # noqa: E402
from tritonfleet.desired.kube.loading import TRITON_POD_SELECTOR  # noqa: E402
from tritonfleet.desired.kube.objects import (  # noqa: E402
    FINALIZER,
    LABEL_MODEL,
    MANAGED_SELECTOR,
    REVISION_ANNOTATION,
    deployment,
    model_configmap,
    repository_claim,
    service,
    sync_job,
)
from tritonfleet.desired.kube.plan import plan, status_patch  # noqa: E402
from tritonfleet.desired.kube.views import render_model_object  # noqa: E402

SIZES = [int(n) for n in os.environ.get("BENCH_MODELS", "250,1000,5000").split(",") if n]
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
FLOOR = os.environ.get("BENCH_FLOOR", "1") != "0"
SETTLE_QUIET = 15.0  # s without an operator write: settled
SETTLE_MAX = float(os.environ.get("BENCH_SETTLE_MAX", "900"))
CREATE_CONCURRENCY = 64  # the user's client creating the models (both runs)
WRITERS = 32  # the operator's reconcile workers and API connections
KWOK_POD_NETWORK = "127.244.0.0/16"  # hack/testbed/up.sh: every kwok node's pod CIDR
CHILD_KINDS = ("ConfigMap", "Job", "Service", "Deployment")
# The API server's own count of writes on the resources the operator could cause.
WATCHED_RESOURCES = {
    "tritonmodels",
    "modelensembles",
    "deployments",
    "jobs",
    "services",
    "configmaps",
    "persistentvolumeclaims",
    "events",
}
WRITE_HTTP_VERBS = {"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"}


def model(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "tritonfleet.io/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {
                "inline": {"files": {"1/model.py": f"# {name}\nclass TritonPythonModel: pass\n"}}
            },
            "config": {
                "backend": "python",
                "maxBatchSize": 8,
                "inputs": [{"name": "INPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
                "outputs": [{"name": "OUTPUT0", "dataType": "TYPE_FP32", "dims": [4]}],
            },
            # CPU models: the testbed has 32 GPUs, not 1,000.
            "serving": {"gpus": 0},
        },
    }


def names(count: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(count)]


# --- observing progress the same way for both runs -----------------------------------


class Progress:
    """Watch sink: which models have a status naming their revision, which children exist."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.status: set[str] = set()
        self.ready: set[str] = set()
        self.children: dict[str, set[str]] = {kind: set() for kind in CHILD_KINDS}
        self.done_at: float | None = None
        self.lists = 0

    def upsert(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        if kind == "TritonModel":
            status = obj.get("status") or {}
            # The first status names the revision it is rolling out to; once synced,
            # also the one served.
            rollout = status.get("rollout") or {}
            if status.get("revision") or rollout.get("targetRevision"):
                self.status.add(meta["name"])
            conditions = status.get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                self.ready.add(meta["name"])
        else:
            self.children[kind].add(meta["name"])
        if self.done_at is None and self.complete:
            self.done_at = time.perf_counter()

    def __str__(self) -> str:
        seen = ", ".join(f"{kind} {len(names)}" for kind, names in self.children.items())
        return f"{len(self.status)} of {self.count} statuses, children: {seen}"

    @property
    def complete(self) -> bool:
        return len(self.status) >= self.count and all(
            len(c) >= self.count for c in self.children.values()
        )

    def delete(self, kind: str, obj: Obj) -> None:
        pass

    def listed(self, kind: str, namespace: str | None, present: set[tuple[str, str]]) -> None:
        self.lists += 1


class Observer:
    """This benchmark's own watch streams on one namespace (Progress, Triton stand-ins)."""

    def __init__(self, client: KubeClient, namespace: str, progress: Progress) -> None:
        streams = [ResourceStream(client, "TritonModel", namespace, progress)]
        streams += [
            ResourceStream(client, kind, namespace, progress, label_selector=MANAGED_SELECTOR)
            for kind in CHILD_KINDS
        ]
        self.streams = streams
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(s.run()) for s in self.streams]
        await wait_until(lambda: all(s.lists for s in self.streams), 60, "the bench's watches")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class PodsToFleet:
    """Watch sink: every Running kwok Triton pod gets a Triton stand-in on its IP."""

    def __init__(self, fleet: TritonFleet) -> None:
        self.fleet = fleet
        self.pending: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def upsert(self, kind: str, obj: Obj) -> None:
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            return
        model_name = (meta.get("labels") or {}).get(LABEL_MODEL, "")
        revision = (meta.get("annotations") or {}).get(REVISION_ANNOTATION, "")
        self._spawn(self.fleet.serve(ip, model_name, revision))

    def delete(self, kind: str, obj: Obj) -> None:
        ip = (obj.get("status") or {}).get("podIP")
        if ip:
            self._spawn(self.fleet.drop(ip))

    def listed(self, kind: str, namespace: str | None, present: set[tuple[str, str]]) -> None:
        pass


# --- helpers -------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], bool],
    within: float,
    what: str,
    seen: Callable[[], str] | None = None,
) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > within:
            detail = f" ({seen()})" if seen is not None else ""
            raise TimeoutError(f"{what}: not within {within:.0f}s{detail}")
        await asyncio.sleep(0.1)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (the operator's own cost, whatever the load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apiserver_writes(bed: tb.Testbed) -> int:
    text = bed.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0
    for name, labels, value in parse_metrics(text):
        if name != "apiserver_request_total":
            continue
        if labels.get("resource") in WATCHED_RESOURCES and labels.get("verb") in WRITE_HTTP_VERBS:
            total += int(value)
    return total


def load() -> float:
    return os.getloadavg()[0]


def writes_of(requests: dict[tuple[str, str], float]) -> dict[tuple[str, str], int]:
    return {k: int(v) for k, v in sorted(requests.items()) if k[0] in WRITE_VERBS and v}


def delta(
    after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def per_model(writes: dict[tuple[str, str], int], count: int) -> str:
    return ", ".join(f"{verb} {res} {n / count:.2f}" for (verb, res), n in writes.items())


async def create_models(
    client: KubeClient,
    namespace: str,
    count: int,
    created: Callable[[int, Obj], None] = lambda i, o: None,
) -> None:
    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(i: int, name: str) -> None:
        async with semaphore:
            created(i, await client.create(model(name, namespace)))

    await asyncio.gather(*(one(i, n) for i, n in enumerate(names(count))))


async def release(bed: tb.Testbed, client: KubeClient, namespace: str) -> float:
    """Delete a benchmark namespace with no operator running: finalizers dropped by hand
    (the benchmark does not measure deletion), then wait until it is gone."""
    started = time.perf_counter()
    bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    semaphore = asyncio.Semaphore(WRITERS)

    async def strip(name: str) -> None:
        async with semaphore:
            try:
                await client.patch(
                    "TritonModel", namespace, name, {"metadata": {"finalizers": None}}
                )
            except ApiError as error:
                if not error.not_found:
                    raise

    while bed.get("namespace", namespace):
        items = await client.list("TritonModel", namespace)
        await asyncio.gather(
            *(strip(o["metadata"]["name"]) for o in items if o["metadata"].get("finalizers"))
        )
        if time.perf_counter() - started > 1800:
            print(f"  namespace {namespace} still there after 30 min; going on", flush=True)
            break
        await asyncio.sleep(3)
    try:
        bed.recycle_volumes()
    except tb.TestbedError as error:
        print(f"  could not recycle volumes: {error}")
    return time.perf_counter() - started


# --- the floor -----------------------------------------------------------------------


SETTINGS = OperatorSettings(operator_image="tritonfleet/tritonfleet:test")
PLACEHOLDER_UID = "00000000-0000-4000-8000-000000000000"


@dataclass
class Prepared:
    children: list[Obj]
    status: Obj


def prepare(name: str, namespace: str) -> Prepared:
    """What the operator's first reconcile of a new model writes (built by its own
    builders, before the clock starts), with the owner's uid to fill in."""
    body = model(name, namespace)
    body["metadata"].update(uid=PLACEHOLDER_UID, generation=1, resourceVersion="1")
    rendering = render_model_object(body)
    target = rendering.target
    assert target is not None, rendering.problems
    children = [
        model_configmap(target),
        sync_job(target, SETTINGS),
        service(target),
        deployment(target, SETTINGS, ()),  # nothing synced yet: zero replicas
    ]
    decided = plan(rendering, {}, None, SETTINGS, datetime.now(UTC))
    assert decided.status is not None
    return Prepared(children, {"status": status_patch(ModelStatus(), decided.status)})


def owned_by(obj: Obj, uid: str) -> Obj:
    out = copy.copy(obj)
    meta = out["metadata"] = dict(obj["metadata"])
    meta["ownerReferences"] = [dict(ref, uid=uid) for ref in meta.get("ownerReferences") or ()]
    return out


@dataclass
class FloorRun:
    seconds: float
    writes: Counter[tuple[str, str]] = field(default_factory=Counter)
    load_start: float = 0.0
    load_end: float = 0.0


async def run_floor(bed: tb.Testbed, endpoint: Any, count: int) -> FloorRun:
    namespace = f"floor-{uuid.uuid4().hex[:6]}"
    bed.kubectl("create", "namespace", namespace)
    creator = KubeClient(endpoint, max_connections=CREATE_CONCURRENCY, label="bench")
    writer = KubeClient(endpoint, max_connections=WRITERS, label="floor")
    watcher = KubeClient(endpoint, label="bench")
    progress = Progress(count)
    observer = Observer(watcher, namespace, progress)
    prepared = [prepare(name, namespace) for name in names(count)]
    claim = repository_claim(namespace, SETTINGS)
    run = FloorRun(0.0)
    queue: asyncio.Queue[tuple[int, Obj]] = asyncio.Queue()
    try:
        await observer.start()
        print(f"floor: {count} models in {namespace} ...", flush=True)
        run.load_start = load()
        t0 = time.perf_counter()

        async def write(verb: str, resource: str, call: Awaitable[Obj]) -> None:
            await call
            run.writes[(verb, resource)] += 1

        async def one_writer() -> None:
            while True:
                i, created = await queue.get()
                meta = created["metadata"]
                name, uid = meta["name"], meta["uid"]
                patch = {"metadata": {"finalizers": [FINALIZER]}}
                await write(
                    "patch", "tritonmodels", writer.patch("TritonModel", namespace, name, patch)
                )
                await asyncio.gather(
                    *(
                        write(
                            "apply", child["kind"].lower() + "s", writer.apply(owned_by(child, uid))
                        )
                        for child in prepared[i].children
                    )
                )
                status = prepared[i].status
                await write(
                    "patch",
                    "tritonmodels",
                    writer.patch_status("TritonModel", namespace, name, status),
                )
                queue.task_done()

        workers = [asyncio.create_task(one_writer()) for _ in range(WRITERS)]
        if claim is not None:
            await write("create", "persistentvolumeclaims", writer.create(claim))
        await create_models(creator, namespace, count, lambda i, o: queue.put_nowait((i, o)))
        await queue.join()
        for task in workers:
            task.cancel()
        await wait_until(
            lambda: progress.complete,
            120,
            "the floor's writes to show in the watches",
            lambda: str(progress),
        )
        assert progress.done_at is not None
        run.seconds = progress.done_at - t0
        run.load_end = load()
        print(
            f"  floor: {run.seconds:.1f}s, load {run.load_start:.1f} -> {run.load_end:.1f}",
            flush=True,
        )
    finally:
        await observer.stop()
        gone = await release(bed, watcher, namespace)
        print(f"  floor namespace gone after {gone:.0f}s", flush=True)
        for client in (creator, writer, watcher):
            await client.close()
    return run


# --- the operator ----------------------------------------------------------------------


@dataclass
class OperatorRun:
    seconds: float | None = None
    cpu_burst: float = 0.0
    writes_burst: dict[tuple[str, str], int] = field(default_factory=dict)
    writes_settled: dict[tuple[str, str], int] = field(default_factory=dict)
    settled_after: float = 0.0
    ready_models: int = 0
    rss_burst: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    idle_writes: int = 0
    idle_api_writes: int = 0
    idle_cpu: float = 0.0
    idle_requests: dict[tuple[str, str], float] = field(default_factory=dict)
    triton_per_minute: float = 0.0
    stand_in_per_minute: float = 0.0
    restart_ready: float | None = None
    restart_writes: int = 0
    load_start: float = 0.0
    load_end: float = 0.0
    load_idle: float = 0.0


def rss(op: OperatorProcess, peak: bool = False) -> int:
    return op.rss_bytes(peak=peak)


async def settle(op: OperatorProcess) -> float:
    """Until the operator wrote nothing for SETTLE_QUIET seconds (the cluster settles too:
    sync Jobs finish, Deployments roll their pods, the loader confirms them)."""
    started = time.perf_counter()
    last, quiet_since = op.writes(), time.perf_counter()
    while time.perf_counter() - quiet_since < SETTLE_QUIET:
        if time.perf_counter() - started > SETTLE_MAX:
            print(f"  still writing after {SETTLE_MAX:.0f}s; measuring anyway", flush=True)
            break
        await asyncio.sleep(3)  # each look is a /metrics scrape: the operator's CPU too
        now = op.writes()
        if now != last:
            last, quiet_since = now, time.perf_counter()
    return time.perf_counter() - started


async def run_operator(
    bed: tb.Testbed, endpoint: Any, count: int, fleet: TritonFleet
) -> OperatorRun:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    bed.kubectl("create", "namespace", namespace)
    env = {"TRITONFLEET_DIAL_POD_NETWORKS": KWOK_POD_NETWORK}
    log = Path(f"/tmp/{namespace}-operator.log")
    op = OperatorProcess(bed, [namespace], env=env, log_path=log)
    creator = KubeClient(endpoint, max_connections=CREATE_CONCURRENCY, label="bench")
    watcher = KubeClient(endpoint, label="bench")
    progress = Progress(count)
    observer = Observer(watcher, namespace, progress)
    pods = ResourceStream(
        watcher, "Pod", namespace, PodsToFleet(fleet), label_selector=TRITON_POD_SELECTOR
    )
    pods_task = asyncio.create_task(pods.run())
    run = OperatorRun()
    timeout = 120 + 0.3 * count
    try:
        op.start()
        await wait_until(op.ready, 60, "the operator's /readyz")
        await observer.start()
        before, cpu0 = op.requests_by_resource(), cpu_seconds(op.pid)
        print(f"operator: {count} models in {namespace} (log {log}) ...", flush=True)
        run.load_start = load()
        t0 = time.perf_counter()
        await create_models(creator, namespace, count)
        try:
            await wait_until(lambda: progress.done_at is not None, timeout, "children and status")
        except TimeoutError as error:
            print(f"  {error}", flush=True)
        if progress.done_at is not None:
            run.seconds = progress.done_at - t0
        run.load_end = load()
        run.cpu_burst = cpu_seconds(op.pid) - cpu0
        run.writes_burst = writes_of(delta(op.requests_by_resource(), before))
        run.rss_burst = rss(op)
        shown = f"{run.seconds:.1f}s" if run.seconds is not None else "not reached"
        print(
            f"  operator: {shown}, CPU {run.cpu_burst:.1f}s, RSS {mb(run.rss_burst):.0f} MB, "
            f"load {run.load_start:.1f} -> {run.load_end:.1f}; settling ...",
            flush=True,
        )
        run.settled_after = await settle(op)
        run.writes_settled = writes_of(delta(op.requests_by_resource(), before))
        run.ready_models = len(progress.ready)
        run.rss_end, run.rss_peak = rss(op), rss(op, peak=True)

        print(
            f"  settled after {run.settled_after:.0f}s ({run.ready_models} Ready), RSS "
            f"{mb(run.rss_end):.0f} MB (peak {mb(run.rss_peak):.0f}); {IDLE_SECONDS:.0f}s idle ...",
            flush=True,
        )
        idle0 = (
            op.writes(),
            apiserver_writes(bed),
            cpu_seconds(op.pid),
            op.requests_by_resource(),
            op.counter("tritonfleet_triton_requests_total"),
            fleet.requests,
        )
        await asyncio.sleep(IDLE_SECONDS)
        run.load_idle = load()
        run.idle_writes = int(op.writes() - idle0[0])
        run.idle_api_writes = apiserver_writes(bed) - idle0[1]
        run.idle_cpu = (cpu_seconds(op.pid) - idle0[2]) / IDLE_SECONDS
        run.idle_requests = delta(op.requests_by_resource(), idle0[3])
        minutes = IDLE_SECONDS / 60
        run.triton_per_minute = (
            op.counter("tritonfleet_triton_requests_total") - idle0[4]
        ) / minutes
        run.stand_in_per_minute = (fleet.requests - idle0[5]) / minutes

        print("  restarting the operator over the settled fleet ...", flush=True)
        op.stop()
        op = OperatorProcess(bed, [namespace], env=env, log_path=log)
        launched = time.perf_counter()
        op.start()
        try:
            await wait_until(op.ready, 120, "/readyz after the restart")
            run.restart_ready = time.perf_counter() - launched
        except TimeoutError as error:
            print(f"  {error}", flush=True)
        await asyncio.sleep(SETTLE_QUIET)
        run.restart_writes = int(op.writes())
        ready = f"{run.restart_ready:.1f}s" if run.restart_ready is not None else "not ready"
        print(
            f"  idle: {run.idle_writes} operator writes, {run.idle_api_writes} API writes, CPU "
            f"{100 * run.idle_cpu:.1f} %, loader {run.triton_per_minute:.0f} req/min; restart: "
            f"Ready {ready}, {run.restart_writes} writes in its first {SETTLE_QUIET:.0f}s after",
            flush=True,
        )
    finally:
        op.stop()
        pods_task.cancel()
        await observer.stop()
        gone = await release(bed, watcher, namespace)
        print(f"  namespace gone after {gone:.0f}s", flush=True)
        for client in (creator, watcher):
            await client.close()
    return run


# --- report ----------------------------------------------------------------------------


def mb(value: float) -> float:
    return value / 2**20


def summary(count: int, floor: FloorRun, op: OperatorRun) -> str:
    """The one line a size ends with."""
    seconds = f"{op.seconds:.1f}" if op.seconds else "n/a"
    ratio = f"{op.seconds / floor.seconds:.2f}" if op.seconds else "n/a"
    writes = sum(op.writes_burst.values()) / count
    return (
        f"{count} models: operator {seconds} s, floor {floor.seconds:.1f} s, ratio {ratio}, "
        f"writes/model {writes:.2f}, RSS {mb(op.rss_end):.0f} MB, idle writes {op.idle_writes}"
    )


HEADER = (
    "models",
    "operator s",
    "floor s",
    "ratio",
    "s per 1k",
    "op CPU s",
    "writes/model",
    "RSS burst/end/peak MB",
    "KB/model",
    "idle writes op/any",
    "idle CPU",
    "restart->Ready s",
    "restart writes",
    "loader req/min",
    "load floor/op",
)


def row(count: int, floor: FloorRun, op: OperatorRun) -> tuple[str, ...]:
    burst, settled = sum(op.writes_burst.values()), sum(op.writes_settled.values())
    reached = op.seconds is not None
    return (
        str(count),
        f"{op.seconds:.1f}" if op.seconds else "not reached",
        f"{floor.seconds:.1f}",
        f"{op.seconds / floor.seconds:.2f}" if op.seconds else "-",
        f"{1000 * op.seconds / count:.1f}" if op.seconds else "-",
        f"{op.cpu_burst:.1f}",
        f"{burst / count:.2f} / {settled / count:.2f}",
        f"{mb(op.rss_burst):.0f} / {mb(op.rss_end):.0f} / {mb(op.rss_peak):.0f}",
        f"{op.rss_end / 1024 / count:.0f}",
        f"{op.idle_writes} / {op.idle_api_writes}",
        f"{100 * op.idle_cpu:.1f} %",
        f"{op.restart_ready:.1f}" if op.restart_ready is not None else "not ready",
        str(op.restart_writes),
        f"{op.triton_per_minute:.0f}",
        f"{floor.load_start:.1f}-{floor.load_end:.1f} / {op.load_start:.1f}-{op.load_end:.1f}"
        + ("" if reached else " (timed out)"),
    )


def report(results: list[tuple[int, FloorRun, OperatorRun]]) -> None:
    averages = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print()
    print(
        "== bench_operator: TritonModels in one namespace, inline sources, "
        f"{os.cpu_count()} cores; load average now {averages} (1/5/15 min)"
    )
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for result in results:
        print("| " + " | ".join(row(*result)) + " |")
    print()
    print("writes per model by verb and resource (operator: until children and status / settled)")
    for count, floor, op in results:
        print(f"  {count} floor:    {per_model(dict(sorted(floor.writes.items())), count)}")
        print(f"  {count} operator: {per_model(op.writes_burst, count)}")
        print(f"  {count} settled:  {per_model(op.writes_settled, count)}")
        idle = {f"{verb} {resource}": n for (verb, resource), n in op.idle_requests.items()}
        print(
            f"    settled {op.settled_after:.0f}s after the burst, {op.ready_models} models Ready "
            "(kwok runs at most 660 pods); requests while idle: "
            f"{json.dumps(idle)}; Triton stand-ins asked {op.stand_in_per_minute:.0f}/min; "
            f"load at the end of idle {op.load_idle:.1f}"
        )
    print()
    for result in results:
        print(summary(*result))


async def run(bed: tb.Testbed) -> None:
    endpoint = endpoint_from_kubeconfig(bed.kubeconfig)
    fleet = TritonFleet()
    await fleet.start()
    results = []
    try:
        for count in SIZES:
            # BENCH_FLOOR=0: the operator only (a floor measured before, same testbed).
            floor = await run_floor(bed, endpoint, count) if FLOOR else FloorRun(float("nan"))
            operator = await run_operator(bed, endpoint, count, fleet)
            results.append((count, floor, operator))
            print(summary(count, floor, operator), flush=True)
        report(results)
    finally:
        await fleet.close()


def main() -> int:
    bed = tb.Testbed.from_environment()
    if not bed.is_healthy():
        bed = tb.start()
    apply_crds(bed)
    try:
        asyncio.run(run(bed))
    except ApiError as error:
        print(f"API error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
