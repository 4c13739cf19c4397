"""Fleet-consistent loading against real tritonserver 2.51 processes.

Three servers on 127.0.0.2/.3/.4 share ONE repository directory, as the pods
of a Deployment share the RWX volume. A fourth, 127.0.0.5, has a repository
of its own, and a broken revision is published there: one pod in a fleet
that fails to load while the others succeed. Revisions are published the way
``tritonfleet sync`` does it. The files go to a new directory, then a relative
symlink is renamed over ``<repo>/<model>`` in one step. Every check that
matters is made by inference on each server, not by trusting the index.

The toy model answers with the revision written into its model.py *and* the
stamp in the config it was loaded with. Its ``initialize()`` appends one line
per load to a log, tagged with the parent pid (the tritonserver process), so
the tests can count loads per server and prove that no needless reload
happened.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hack.devtools.triton import MODELS_DIR, TritonProcess, free_port
from tritonfleet.adapters.triton_repository import (
    PodEndpoint,
    Timeouts,
    converge,
    observe,
    unload_everywhere,
)
from tritonfleet.desired.triton.loading import (
    LoadTarget,
    PodObservation,
    WantedModel,
    plan_loading,
    plan_unloading,
)
from tritonfleet.desired.triton.revision import stamp_revision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SHARED_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
ODD_HOST = "127.0.0.5"

ECHO_CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters { key: "load_log" value { string_value: "%(log)s" } }
"""

ECHO_MODEL = '''
"""Answers "<revision in this file>|<revision stamped in the loaded config>"."""
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils

REVISION = "%(revision)s"
BROKEN = %(broken)s
SLOW_START_S = %(slow)s


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.stamp = params.get("tritonfleet.revision", {}).get("string_value", "")
        with open(params["load_log"]["string_value"], "a") as log:
            log.write(f"{os.getppid()} {REVISION}\\n")
        time.sleep(SLOW_START_S)
        if BROKEN:
            raise RuntimeError(f"revision {REVISION} cannot start on this server")

    def execute(self, requests):
        answer = np.array([f"{REVISION}|{self.stamp}".encode()], dtype=np.object_)
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("text_output", answer)])
            for _ in requests
        ]
'''


class Repository:
    """A model repository published into the way ``tritonfleet sync`` does."""

    def __init__(self, root: Path) -> None:
        self.models = root / "models"
        self.revisions = root / "revisions"
        self.models.mkdir(parents=True)
        self.revisions.mkdir()

    def publish(self, model: str, revision: str, files: dict[str, str]) -> None:
        """Write every file of a revision to a fresh directory, then swap the
        model's symlink onto it in one rename, like the sync's atomic publish."""
        target = self.revisions / model / revision
        if target.exists():
            shutil.rmtree(target)
        for rel, text in files.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (target / "1").mkdir(exist_ok=True)
        link = self.models / f".{model}.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(target, self.models))
        link.replace(self.models / model)


def echo_files(
    revision: str, load_log: Path, *, broken: bool = False, slow: float = 0.0
) -> dict[str, str]:
    config = stamp_revision(ECHO_CONFIG % {"log": load_log}, revision)
    model = ECHO_MODEL % {"revision": revision, "broken": broken, "slow": slow}
    return {"config.pbtxt": config, "1/model.py": model}


class Fleet:
    def __init__(self, shared: Repository, odd: Repository, servers: list[TritonProcess]) -> None:
        self.shared = shared
        self.odd = odd
        self.servers = servers
        self.load_log = shared.models.parent / "loads.log"

    def pods(self, servers: Sequence[TritonProcess] | None = None) -> list[PodEndpoint]:
        return [
            PodEndpoint(f"triton-{t.host.rsplit('.', 1)[1]}", t.http_url, True, t.host)
            for t in (servers if servers is not None else self.servers[:3])
        ]

    def loads(self, t: TritonProcess) -> list[str]:
        """Revisions ``t`` loaded the echo models at, in order (from initialize())."""
        if not self.load_log.exists():
            return []
        lines = [line.split() for line in self.load_log.read_text().splitlines()]
        return [rev for pid, rev in lines if int(pid) == t.pid]

    def answer(self, t: TritonProcess, model: str) -> str:
        status, body = t.generate(model, {"text_input": "which revision?"})
        assert status == 200, (t.host, body)
        return str(body["text_output"])


@pytest.fixture(scope="module")
def fleet(triton_launcher: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("loading")
    shared, odd = Repository(root / "shared"), Repository(root / "odd")
    servers = [TritonProcess(triton_launcher, log_dir=root / "logs") for _ in range(4)]
    repos = [shared.models] * 3 + [odd.models]
    hosts = [*SHARED_HOSTS, ODD_HOST]
    try:
        # Start all four at once: each start is mostly waiting.
        with ThreadPoolExecutor(4) as pool:
            started = [
                pool.submit(t.start, r, host=h)
                for t, r, h in zip(servers, repos, hosts, strict=True)
            ]
            for future in started:
                future.result()
        yield Fleet(shared, odd, servers)
    finally:
        # Graceful stops take seconds each (Triton unloads every model first), and
        # the server with the failed reload never finishes: the instance that
        # failed to start stays "live" until Triton's 30 s exit timeout.
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda t: t.stop(timeout=8), servers))


TIMEOUTS = Timeouts(connect=2.0, request=10.0, load=120.0)


async def _converge(
    target: LoadTarget, pods: list[PodEndpoint], **kw: Any
) -> tuple[tuple[PodObservation, ...], tuple[PodObservation, ...]]:
    """One reconcile's worth: observe, plan, converge. Returns (before, after)."""
    before = await observe(pods, target.names, timeouts=TIMEOUTS)
    plan = plan_loading(target, before)
    after = await converge(pods, plan, backoff=0.2, timeouts=TIMEOUTS, **kw)
    return before, after


def test_every_server_serves_revision_a_then_b(fleet: Fleet) -> None:
    shared = fleet.shared
    servers = fleet.servers[:3]
    pods = fleet.pods()

    shared.publish("echo", "rev-a", echo_files("rev-a", fleet.load_log))
    target = LoadTarget.model("echo", "rev-a")
    before, after = asyncio.run(_converge(target, pods))
    assert {p.model("echo").state for p in before} == {None}  # listed, never loaded
    plan = plan_loading(target, after)
    assert plan.loaded, plan.condition.message
    assert plan.condition.message == "3/3 ready pods serve echo revision rev-a"
    assert [(s.name, s.state, s.revision) for s in plan.states] == [
        ("triton-2", "Ready", "rev-a"),
        ("triton-3", "Ready", "rev-a"),
        ("triton-4", "Ready", "rev-a"),
    ]
    for t in servers:
        assert fleet.answer(t, "echo") == "rev-a|rev-a"
        assert fleet.loads(t) == ["rev-a"]

    # Nothing changed: nothing is planned, and converging anyway sends no load
    # (a load would reload the model in Triton).
    again = asyncio.run(observe(pods, ["echo"], timeouts=TIMEOUTS))
    assert not plan_loading(target, again).has_work
    # Even a plan made from stale observations (all "not loaded") sends no load:
    # the executor checks the index and the stamped config first.
    from_stale = plan_loading(target, before)
    assert [a.kind for p in from_stale.pods for a in p.actions] == ["load"] * 3
    asyncio.run(converge(pods, from_stale, timeouts=TIMEOUTS))
    for t in servers:
        assert fleet.loads(t) == ["rev-a"]

    # Publish B. Until the loader runs, every server still serves A, and says so.
    shared.publish("echo", "rev-b", echo_files("rev-b", fleet.load_log))
    target = LoadTarget.model("echo", "rev-b")
    stale = plan_loading(target, asyncio.run(observe(pods, ["echo"], timeouts=TIMEOUTS)))
    assert [a.kind for p in stale.pods for a in p.actions] == ["reload"] * 3
    assert stale.condition.reason == "Loading"
    assert "triton-2, triton-3, triton-4 (Pending: serves rev-a, wanted rev-b)" in (
        stale.condition.message
    )
    for t in servers:
        assert fleet.answer(t, "echo") == "rev-a|rev-a"

    _, after = asyncio.run(_converge(target, pods))
    plan = plan_loading(target, after)
    assert plan.loaded, plan.condition.message
    for t in servers:
        assert fleet.answer(t, "echo") == "rev-b|rev-b"
        assert fleet.loads(t) == ["rev-a", "rev-b"]  # exactly one load per server per revision


def test_a_load_failure_on_one_server_is_reported_with_tritons_message(fleet: Fleet) -> None:
    """triton-5 sees a broken revision C: its reload fails, it keeps serving B,
    and status says so with Triton's own message, while the others serve C."""
    two, three, _, odd = fleet.servers
    pods = fleet.pods([two, three, odd])
    for repo in (fleet.shared, fleet.odd):
        repo.publish("flaky", "rev-b", echo_files("rev-b", fleet.load_log))
    asyncio.run(_converge(LoadTarget.model("flaky", "rev-b"), pods))
    assert {fleet.answer(t, "flaky") for t in (two, three, odd)} == {"rev-b|rev-b"}

    fleet.shared.publish("flaky", "rev-c", echo_files("rev-c", fleet.load_log))
    fleet.odd.publish("flaky", "rev-c", echo_files("rev-c", fleet.load_log, broken=True))
    target = LoadTarget.model("flaky", "rev-c")
    _, after = asyncio.run(_converge(target, pods))
    plan = plan_loading(target, after)

    assert not plan.loaded
    assert plan.condition.reason == "LoadFailed"
    states = {s.name: s for s in plan.states}
    assert (states["triton-2"].state, states["triton-2"].revision) == ("Ready", "rev-c")
    assert (states["triton-3"].state, states["triton-3"].revision) == ("Ready", "rev-c")
    failed = states["triton-5"]
    assert failed.state == "Failed"
    assert failed.revision == "rev-b"  # what it really serves
    assert failed.message.startswith(
        "load failed for model 'flaky': version 1 is at UNAVAILABLE state: "
    )
    assert "RuntimeError: revision rev-c cannot start on this server" in failed.message
    assert failed.message.endswith("(still serving revision rev-b)")
    assert plan.condition.message.startswith(
        "2/3 ready pods serve flaky revision rev-c; not serving it: triton-5 (Failed: load failed"
    )
    assert [(f.pod, f.model) for f in plan.failures] == [("triton-5", "flaky")]
    # The failed reload is only in the load's answer: Triton's index still says READY.
    assert odd.model_states()["flaky"] == {"1": "READY"}
    # No outage on that server: it answers with the previous revision.
    assert fleet.answer(odd, "flaky") == "rev-b|rev-b"
    assert fleet.answer(two, "flaky") == fleet.answer(three, "flaky") == "rev-c|rev-c"
    # A 400 is Triton refusing the model: no retries, one attempt.
    assert fleet.loads(odd)[-2:] == ["rev-b", "rev-c"]


def test_unreachable_and_not_ready_pods_are_listed(fleet: Fleet) -> None:
    dead = PodEndpoint("triton-dead", f"http://127.0.0.1:{free_port()}", True, "127.0.0.1")
    starting = PodEndpoint.from_ip("triton-new", None, ready=True)
    pods = [*fleet.pods()[:1], dead, starting]
    target = LoadTarget.model("echo", "rev-b")
    _, after = asyncio.run(_converge(target, pods, retries=1, deadline=10.0))
    plan = plan_loading(target, after)
    states = {s.name: s for s in plan.states}
    assert states["triton-2"].state == "Ready"
    assert states["triton-dead"].state == "Unavailable"
    assert "ClientConnectorError" in states["triton-dead"].message
    assert states["triton-new"].state == "Unavailable"  # no IP yet: not ready, listed
    assert plan.condition.reason == "Unreachable"
    assert "not ready: triton-new" in plan.condition.message


def test_transient_failures_are_retried_with_backoff_then_reported(fleet: Fleet) -> None:
    """A model missing from the repository gets a 500 from Triton, which the
    executor treats as transient (a shared volume can lag behind the sync that
    published it). When the files turn up during the backoff, the retry loads
    them. When they never do, the pod reports Triton's message after the last
    retry."""
    pods = fleet.pods()[:2]
    target = LoadTarget.model("late", "rev-1")

    async def publish_later() -> tuple[PodObservation, ...]:
        plan = plan_loading(target, await observe(pods, target.names, timeouts=TIMEOUTS))
        task = asyncio.create_task(
            converge(pods, plan, retries=5, backoff=0.4, deadline=60.0, timeouts=TIMEOUTS)
        )
        await asyncio.sleep(0.2)  # the first load attempts fail meanwhile
        fleet.shared.publish("late", "rev-1", echo_files("rev-1", fleet.load_log))
        return await task

    plan = plan_loading(target, asyncio.run(publish_later()))
    assert plan.loaded, plan.condition.message
    for t in fleet.servers[:2]:
        assert "failed to poll model 'late'" in (t.log_path.read_text() if t.log_path else "")
        assert fleet.answer(t, "late") == "rev-1|rev-1"

    never = LoadTarget.model("never_published", "rev-1")
    t0 = time.monotonic()
    _, after = asyncio.run(_converge(never, pods[:1], retries=2))
    elapsed = time.monotonic() - t0
    state = plan_loading(never, after).states[0]
    assert state.state == "Failed"
    assert state.message == (
        "failed to load 'never_published', failed to poll from model repository"
    )
    assert 0.2 * (1 + 2) * 0.5 <= elapsed < 30  # two backoffs (0.2 s, 0.4 s, jittered)


def test_the_deadline_bounds_a_pass_and_the_next_pass_sends_no_second_load(
    fleet: Fleet,
) -> None:
    """A load slower than the pass's deadline: converge returns on time with the
    pod marked, Triton finishes the load on its own, and the next reconcile
    finds the revision served without loading again."""
    two = fleet.servers[0]
    pods = fleet.pods([two])
    fleet.shared.publish("slow", "slow-1", echo_files("slow-1", fleet.load_log, slow=4.0))
    target = LoadTarget.model("slow", "slow-1")
    t0 = time.monotonic()
    _, after = asyncio.run(_converge(target, pods, deadline=1.0))
    assert time.monotonic() - t0 < 4.0
    state = plan_loading(target, after).states[0]
    assert state.state == "Failed"
    assert "the loading pass ran out of time" in state.message

    deadline = time.monotonic() + 60
    while not (plan := plan_loading(target, asyncio.run(observe(pods, ["slow"])))).loaded:
        assert plan.states[0].state in ("Loading", "Pending"), plan.states[0]
        assert time.monotonic() < deadline, plan.condition.message
        time.sleep(0.2)
    assert not plan.has_work
    assert fleet.loads(two).count("slow-1") == 1
    assert fleet.answer(two, "slow") == "slow-1|slow-1"


def _ensemble_target(fleet: Fleet) -> LoadTarget:
    members = [WantedModel("toy_embed", "m1"), WantedModel("vector_search", "m1")]
    members.append(WantedModel("toy_llm", "m1"))
    for member in members:
        src = MODELS_DIR / member.name
        fleet.shared.publish(
            member.name,
            member.revision,
            {
                "config.pbtxt": stamp_revision((src / "config.pbtxt").read_text(), "m1"),
                "1/model.py": (src / "1" / "model.py").read_text(),
            },
        )
    config = stamp_revision((MODELS_DIR / "toy_rag" / "config.pbtxt").read_text(), "e1")
    fleet.shared.publish("toy_rag", "e1", {"config.pbtxt": config})
    return LoadTarget.ensemble("toy_rag", "e1", members)


def test_ensemble_after_its_members_then_unload_everywhere(fleet: Fleet) -> None:
    servers = fleet.servers[:3]
    pods = fleet.pods()
    target = _ensemble_target(fleet)
    assert target.names == ("toy_embed", "vector_search", "toy_llm", "toy_rag")

    _, after = asyncio.run(_converge(target, pods))
    plan = plan_loading(target, after)
    assert plan.loaded, plan.condition.message
    assert {s.revision for s in plan.states} == {"e1"}
    for pod in after:
        assert {n: (pod.model(n).state, pod.model(n).revision) for n in target.names} == {
            "toy_embed": ("READY", "m1"),
            "vector_search": ("READY", "m1"),
            "toy_llm": ("READY", "m1"),
            "toy_rag": ("READY", "e1"),
        }
    for t in servers:
        status, body = t.generate("toy_rag", {"text_input": "how does the operator scale"})
        assert status == 200 and body["text_output"], body
        # Members were loaded (and reported loaded) before the ensemble on every server.
        log = t.log_path.read_text() if t.log_path else ""
        first = {n: log.find(f"successfully loaded '{n}'") for n in target.names}
        assert -1 < max(first[n] for n in target.names[:-1]) < first["toy_rag"]

    # Deletion: unload from every pod (ensemble first), then nothing holds it anywhere.
    assert not plan_unloading(target.unload_order, after).done
    gone = asyncio.run(unload_everywhere(pods, target.unload_order, timeouts=TIMEOUTS))
    done = plan_unloading(target.unload_order, gone)
    assert done.done, done.waiting
    for t in servers:
        states = t.model_states()
        for name in target.names:
            assert states[name] == {"1": "UNAVAILABLE"}, (t.host, name, states[name])
        assert t.generate("toy_rag", {"text_input": "x"})[0] == 404
    # The echo model on the same servers was not touched.
    assert {fleet.answer(t, "echo") for t in servers} == {"rev-b|rev-b"}
