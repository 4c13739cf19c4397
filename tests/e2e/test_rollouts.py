"""Model updates under load, as a platform team does them every day, with every part real.

One ``helm install`` for the module (the operator and the gateway as containers of the
image, through the local pod runner; real Triton pods), then each test in its own
namespace, each under the steady load of at least four openai SDK clients through the
gateway's Service (hack/devtools/rollout_load.py), recording who answered every request
and at which revision:

* a Rolling config update of the streaming model without failover, its clients
  streaming: no request fails; and with failover: no request goes to the hosted API
  (the old pods answer until the new ones are loaded);
* a canary 10 % → 50 % → 100 %: each step's measured split within 5 points of its
  weight, then every pod at the new revision;
* a canary whose revision fails one request in five (a python model that raises):
  rolled back within its analysis window, RolledBack and a Warning with the numbers,
  no client error but the canary's own;
* a revision that does not load: the old one answers throughout, Loaded=False quotes
  Triton, the canary never gets a request; reverting the spec removes it, no outage;
* an ensemble whose member is updated: no request to the ensemble fails;
* a canary aborted, retried and promoted with `kubectl annotate`: no request fails,
  each command consumed.

Figures (requests, failures, hosted answers, split per step, rollback time) are printed
(``pytest -s``). The canary promoted over three steps, the ensemble and the commands
by hand are marked ``long``: ``make e2e-long`` runs them, ``make test`` and ``make e2e``
do not.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from hack.devtools.chart import TRITON_PODS, installed
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.operator import apply_crds, condition, delete_models
from hack.devtools.pod_runner import PodRunner
from hack.devtools.rollout_load import (
    Load,
    RolloutWatch,
    by_revision,
    failures,
    rolled_out,
    summary,
)
from hack.devtools.testbed import REPO_ROOT, Testbed

pytestmark = pytest.mark.e2e

RUNNABLE = REPO_ROOT / "manifests" / "samples" / "runnable"
TOY_LLM = yaml.safe_load((RUNNABLE / "toy-llm.yaml").read_text())
TOY_LLM_STREAM = yaml.safe_load((RUNNABLE / "toy-llm-stream.yaml").read_text())
HOSTED_KEY = f"sk-e2e-{uuid.uuid4().hex}"


# --- one install for the module -------------------------------------------------------------


@pytest.fixture(scope="module")
def pod_runner(testbed: Testbed, tritonfleet_image: str) -> Iterator[PodRunner]:
    """One runner for the module (the suite's is per test): the chart's pods stay up."""
    runner = PodRunner(testbed.kubeconfig, testbed.state_dir, project_image=tritonfleet_image)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def hosted() -> Iterator[HostedAPI]:
    api = HostedAPI(api_key=HOSTED_KEY).start()
    try:
        yield api
    finally:
        api.stop()


@dataclass(frozen=True)
class Fleet:
    testbed: Testbed
    runner: PodRunner
    hosted: HostedAPI
    url: str  # the gateway Service's OpenAI base URL


@pytest.fixture(scope="module")
def fleet(testbed: Testbed, pod_runner: PodRunner, hosted: HostedAPI) -> Iterator[Fleet]:
    apply_crds(testbed)
    system = f"tf-rollouts-{uuid.uuid4().hex[:5]}"
    with installed(testbed, system) as release:
        pod_runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=180)
        pod_runner.wait_ready(system, "app.kubernetes.io/component=gateway", 1, timeout=180)
        service = testbed.get("service", f"{release}-tritonfleet-gateway", namespace=system)
        url = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}/v1"
        yield Fleet(testbed, pod_runner, hosted, url)


@pytest.fixture
def ns(fleet: Fleet) -> Iterator[str]:
    with fleet.testbed.namespace("roll") as name:
        fleet.testbed.kubectl("create", "secret", "generic", "hosted-api-key",
                              f"--from-literal=api-key={HOSTED_KEY}", "-n", name)  # fmt: skip
        try:
            yield name
        finally:
            delete_models(fleet.testbed, name)  # while the operator runs to release them


# --- models ------------------------------------------------------------------------------------


def toy_llm(
    name: str, replicas: int = 1, sample: dict[str, Any] = TOY_LLM, **spec: Any
) -> dict[str, Any]:
    """A runnable toy LLM sample under its own name (each test routes its own model)."""
    body = copy.deepcopy(sample)
    body["metadata"]["name"] = name.replace("_", "-")
    body["spec"]["modelName"] = name
    body["spec"]["serving"]["replicas"] = {"min": replicas, "max": replicas}
    body["spec"]["serving"].pop("autoscaling", None)
    body["spec"].update(spec)
    return dict(body)


def with_failover(fleet: Fleet) -> dict[str, Any]:
    return {
        "provider": {
            "baseUrl": fleet.hosted.base_url,
            "model": "toy-hosted",
            "apiKeySecret": {"name": "hosted-api-key", "key": "api-key"},
        },
        "triggers": {"unavailable": True},
    }


def canary(*steps: tuple[int, int], **analysis: Any) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "canary": {
            "steps": [{"weight": w, "pauseSeconds": p} for w, p in steps],
            "analysis": {"maxErrorRate": 0.05, "minRequests": 20, **analysis},
        },
    }


FAILS_ONE_IN_FIVE = """\
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 5 == 0:
            raise RuntimeError("canary: one request in five fails")
"""
NEVER_LOADS = (
    "class TritonPythonModel:\n"
    "    def initialize(self, args):\n"
    "        raise RuntimeError('weights are missing: rollout failure 4711')\n"
)


def code(body: dict[str, Any]) -> str:
    return str(body["spec"]["source"]["inline"]["files"]["1/model.py"])


def failing_one_in_five(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    text = code(out).replace(
        "    def execute(self, requests):\n",
        "    def execute(self, requests):\n" + FAILS_ONE_IN_FIVE,
    )
    assert FAILS_ONE_IN_FIVE in text
    out["spec"]["source"]["inline"]["files"]["1/model.py"] = text
    return out


# --- waiting -----------------------------------------------------------------------------------


def obj(testbed: Testbed, ns: str, name: str, kind: str = "tritonmodel") -> dict[str, Any] | None:
    found: dict[str, Any] | None = testbed.get(kind, name, namespace=ns)
    return found


def routed(load: Load, timeout: float = 120) -> None:
    """Until the gateway answers the model from Triton (its route is in the table)."""
    deadline = time.monotonic() + timeout
    while not any(a.ok and a.backend == "triton" for a in load.snapshot()):
        if time.monotonic() > deadline:
            answers = load.snapshot()
            last = failures(answers)[-1:]
            raise TimeoutError(
                f"no Triton answer through the gateway: {summary(answers)}; last failure: {last}"
            )
        time.sleep(0.5)


def patch(
    testbed: Testbed, ns: str, name: str, body: dict[str, Any], kind: str = "tritonmodel"
) -> None:
    testbed.kubectl("patch", kind, name, "-n", ns, "--type=merge", "-p", json.dumps(body))


def figures(what: str, **values: Any) -> None:
    print(f"\n[rollout figures] {what}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


# --- Rolling -----------------------------------------------------------------------------------


def test_a_rolling_update_under_load_fails_nothing_and_never_spills_to_the_hosted_api(
    fleet: Fleet, ns: str
) -> None:
    """The issue's own steps: clients on the model, then a config patch. Two models at
    once: the streaming one without failover, its clients streaming (no request may fail,
    no stream may break), and one with failover (none may go hosted)."""
    bed = fleet.testbed
    stream = toy_llm("roll_plain", replicas=2, sample=TOY_LLM_STREAM)
    bed.apply(json.dumps(stream), namespace=ns)
    bed.apply(json.dumps(toy_llm("roll_failover", failover=with_failover(fleet))), namespace=ns)
    plain = rolled_out(bed, ns, "roll-plain", 2)
    spilling = rolled_out(bed, ns, "roll-failover", 1)
    with Load(fleet.url, "roll_plain", stream=True) as a, Load(fleet.url, "roll_failover") as b:
        routed(a)
        routed(b)
        a.wait_for_answers(len(a.snapshot()) + 40)
        started = time.monotonic()
        update = {"spec": {"config": {"parameters": {"token_delay_ms": "1"}}}}
        patch(bed, ns, "roll-plain", update)
        patch(bed, ns, "roll-failover", update)
        new_plain = rolled_out(bed, ns, "roll-plain", 2, not_revision=plain["status"]["revision"])
        new_spilling = rolled_out(
            bed, ns, "roll-failover", 1, not_revision=spilling["status"]["revision"]
        )
        took = time.monotonic() - started
        a.wait_for_answers(len(a.snapshot()) + 40)  # the new pods alone, a while
    for load, before, after in ((a, plain, new_plain), (b, spilling, new_spilling)):
        answers = load.snapshot()
        figures(f"Rolling {load.model}", summary=summary(answers), rolled_out_in_s=round(took))
        assert failures(answers) == [], failures(answers)[:5]
        assert {a.backend for a in answers} == {"triton"}  # never the hosted API
        revisions = by_revision(answers)
        old, new = before["status"]["revision"], after["status"]["revision"]
        assert revisions[old] > 0 and revisions[new] > 0, revisions  # both answered, in turn
        assert after["status"]["rollout"]["phase"] == "Succeeded"
    assert not fleet.hosted.requests, "the hosted API was asked during a routine update"


# --- Canary ------------------------------------------------------------------------------------


@pytest.mark.long  # make e2e-long: about two minutes on 2 cores
def test_a_canary_takes_10_then_50_then_100_percent_and_is_promoted(fleet: Fleet, ns: str) -> None:
    bed = fleet.testbed
    spec = canary((10, 20), (50, 15), (100, 10))
    bed.apply(json.dumps(toy_llm("canary_ok", rollout=spec)), namespace=ns)
    stable = rolled_out(bed, ns, "canary-ok", 1)["status"]["revision"]
    with Load(fleet.url, "canary_ok", clients=4) as load:
        routed(load)
        with RolloutWatch(lambda: obj(bed, ns, "canary-ok")) as watch:
            patch(
                bed, ns, "canary-ok", {"spec": {"config": {"parameters": {"token_delay_ms": "1"}}}}
            )
            done = rolled_out(bed, ns, "canary-ok", 1, not_revision=stable, timeout=420)
        load.wait_for_answers(len(load.snapshot()) + 40)
    target = done["status"]["revision"]
    answers = load.snapshot()
    assert failures(answers) == [], failures(answers)[:5]
    steps = watch.windows("Analyzing")
    assert [(s, w[target]) for s, w, _, _ in steps] == [(1, 10), (2, 50), (3, 100)], watch.seen
    settle = 3.0  # every gateway re-reads its routes within 2 s of the status
    for step, weights, since, until in steps:
        window = [a for a in answers if since + settle <= a.at <= until and a.backend == "triton"]
        share = sum(a.revision == target for a in window) / max(len(window), 1)
        figures(f"canary step {step}", weight=weights[target], measured=f"{share * 100:.1f} %",
                requests=len(window))  # fmt: skip
        assert len(window) >= 20, (step, len(window))
        assert abs(share * 100 - weights[target]) <= 5, (step, share, weights)
    assert done["status"]["rollout"]["phase"] == "Succeeded"

    def only_the_target() -> list[dict[str, Any]] | None:
        """The Triton pods once the old and the canary pods drained and went."""
        pods: list[dict[str, Any]] = bed.get("pods", "-l", TRITON_PODS, namespace=ns)["items"]
        revisions = {p["metadata"]["annotations"]["tritonfleet.io/revision"] for p in pods}
        canaries = [p for p in pods if p["metadata"]["name"].startswith("tmc-")]
        return pods if revisions == {target} and not canaries else None

    bed.wait_for(only_the_target, 120, "only pods of the new revision left", interval=1.0)
    reasons = {e["reason"] for e in events(bed, ns, "canary-ok")}
    assert {"RolloutStarted", "CanaryStep", "Promoting", "RolloutSucceeded"} <= reasons


def events(testbed: Testbed, ns: str, name: str) -> list[dict[str, Any]]:
    listed = testbed.get("events", "--field-selector", f"involvedObject.name={name}", namespace=ns)
    return list((listed or {}).get("items") or [])


def test_a_canary_that_fails_one_request_in_five_is_rolled_back_automatically(
    fleet: Fleet, ns: str
) -> None:
    bed = fleet.testbed
    pause = 60
    body = toy_llm("canary_bad", rollout=canary((10, pause)))
    bed.apply(json.dumps(body), namespace=ns)
    stable = rolled_out(bed, ns, "canary-bad", 1)["status"]["revision"]
    with Load(fleet.url, "canary_bad", clients=4) as load:
        routed(load)
        with RolloutWatch(lambda: obj(bed, ns, "canary-bad")) as watch:
            bed.apply(json.dumps(failing_one_in_five(body)), namespace=ns)

            def rolled_back() -> dict[str, Any] | None:
                found = obj(bed, ns, "canary-bad")
                return found if condition(found, "RolledBack").get("status") == "True" else None

            back = bed.wait_for(rolled_back, 300, "the canary rolled back", interval=1.0)
            bed.wait_for(
                lambda: not bed.get("deployment", "tmc-canary-bad", namespace=ns), 60,
                "the canary Deployment removed",
            )  # fmt: skip
            # The stable revision alone, a while: 80 answers once every gateway has the
            # rollback (they re-read routes within 2 s of the status).
            settled = time.monotonic() + 3
            bed.wait_for(
                lambda: len([a for a in load.snapshot() if a.at > settled]) >= 80, 120,
                "80 answers after the rollback", interval=0.5,
            )  # fmt: skip
    step = watch.first("Analyzing", 1)
    verdict = watch.first("RolledBack")
    assert step is not None and verdict is not None, watch.seen
    took = verdict - step
    rollout = back["status"]["rollout"]
    canary_rev = rollout["targetRevision"]
    answers = load.snapshot()
    during = [a for a in answers if step <= a.at <= verdict + 3]
    by_rev = by_revision(during)
    failed = failures(answers)
    figures("failing canary", rolled_back_after_s=round(took, 1), summary=summary(answers),
            canary_answers=by_rev[canary_rev], client_errors=len(failed),
            condition=condition(back, "RolledBack")["message"][:300])  # fmt: skip
    assert took <= pause, took  # within one analysis window
    assert rollout["phase"] == "RolledBack" and rollout["weights"] == {stable: 100}
    assert back["status"]["revision"] == stable
    message = condition(back, "RolledBack")["message"]
    assert "error rate" in message and "on the stable revision" in message
    # The rollout's Warning (the reconcile's Normal summary may share its reason).
    warnings = [
        e for e in events(bed, ns, "canary-bad")
        if (e["type"], e["reason"]) == ("Warning", "RolledBack")
    ]  # fmt: skip
    assert warnings and "error rate" in warnings[0]["message"], warnings
    # The only client errors are the canary's own: answered by it, about a fifth of them.
    assert all(a.revision == canary_rev and a.status == 400 for a in failed), failed[:3]
    assert len(failed) <= by_rev[canary_rev] * 0.2 + 2, (len(failed), by_rev[canary_rev])
    late = [a for a in answers if a.at > verdict + 3]  # every gateway has the rollback
    assert late and all(a.ok and a.revision == stable for a in late), summary(late)
    # Not tried again until the spec changes: RolledBack through the stable-only traffic
    # that followed (80 answers), the canary's Deployment gone.
    assert {phase for at, phase, _, _ in watch.seen if at >= verdict} == {"RolledBack"}
    assert not bed.get("deployment", "tmc-canary-bad", namespace=ns)


def test_a_revision_that_does_not_load_never_gets_traffic_and_a_revert_needs_no_outage(
    fleet: Fleet, ns: str
) -> None:
    bed = fleet.testbed
    body = toy_llm("canary_noload", rollout=canary((10, 30)))
    bed.apply(json.dumps(body), namespace=ns)
    stable = rolled_out(bed, ns, "canary-noload", 1)["status"]["revision"]
    broken = copy.deepcopy(body)
    broken["spec"]["source"]["inline"]["files"]["1/model.py"] = NEVER_LOADS
    with Load(fleet.url, "canary_noload", clients=4) as load:
        routed(load)
        bed.apply(json.dumps(broken), namespace=ns)

        def failing() -> dict[str, Any] | None:
            found = obj(bed, ns, "canary-noload")
            loaded = condition(found, "Loaded")
            return found if loaded.get("reason") == "LoadFailed" else None

        seen = bed.wait_for(failing, 300, "Loaded=False quoting Triton", interval=1.0)
        load.wait_for_answers(len(load.snapshot()) + 80)  # it stays so, under load
        rollout = obj(bed, ns, "canary-noload")["status"]["rollout"]  # type: ignore[index]
        # Reverting the spec returns to the stable revision: the canary goes, no outage.
        bed.apply(json.dumps(body), namespace=ns)
        bed.wait_for(
            lambda: not bed.get("deployment", "tmc-canary-noload", namespace=ns), 120,
            "the failing canary removed",
        )  # fmt: skip
        back = rolled_out(bed, ns, "canary-noload", 1)
        load.wait_for_answers(len(load.snapshot()) + 40)
    answers = load.snapshot()
    figures("canary that does not load", summary=summary(answers),
            loaded=condition(seen, "Loaded")["message"][:200])  # fmt: skip
    loaded = condition(seen, "Loaded")
    assert loaded["status"] == "False" and "rollout failure 4711" in loaded["message"]
    assert rollout["phase"] == "Progressing" and rollout["reason"] == "LoadFailed"
    assert "rollout failure 4711" in rollout["message"]
    assert rollout["weights"] == {stable: 100}
    assert failures(answers) == [], failures(answers)[:5]
    assert set(by_revision(answers)) == {stable}  # the canary never answered
    assert back["status"]["revision"] == stable


# --- Ensembles ----------------------------------------------------------------------------------


@pytest.mark.long  # make e2e-long: about two minutes on 2 cores
def test_an_ensemble_keeps_answering_while_a_member_is_updated(fleet: Fleet, ns: str) -> None:
    bed = fleet.testbed
    objs = [d for d in yaml.safe_load_all((RUNNABLE / "toy-rag.yaml").read_text()) if d]
    objs.append(copy.deepcopy(TOY_LLM))
    for body in objs:
        body["spec"].get("serving", {}).pop("autoscaling", None)
        body["spec"].setdefault("serving", {})["replicas"] = {"min": 1, "max": 1}
    bed.apply(yaml.safe_dump_all(objs), namespace=ns)
    before = rolled_out(bed, ns, "toy-rag", 1, kind="modelensemble", timeout=480)
    with Load(fleet.url, "toy_rag", clients=4, max_tokens=None) as load:
        routed(load, timeout=180)
        load.wait_for_answers(len(load.snapshot()) + 40)
        started = time.monotonic()
        patch(bed, ns, "toy-llm", {"spec": {"config": {"parameters": {"token_delay_ms": "1"}}}})
        after = rolled_out(
            bed, ns, "toy-rag", 1, kind="modelensemble",
            not_revision=before["status"]["revision"], timeout=480,
        )  # fmt: skip
        took = time.monotonic() - started
        load.wait_for_answers(len(load.snapshot()) + 40)
    answers = load.snapshot()
    figures("ensemble member update", summary=summary(answers), rolled_out_in_s=round(took))
    assert failures(answers) == [], failures(answers)[:5]
    revisions = by_revision(answers)
    assert (
        revisions[before["status"]["revision"]] > 0 and revisions[after["status"]["revision"]] > 0
    )
    member = obj(bed, ns, "toy-llm")
    assert member is not None and member["status"]["rollout"]["phase"] == "Succeeded"


# --- By hand -----------------------------------------------------------------------------------


@pytest.mark.long  # make e2e-long: about two minutes on 2 cores
def test_a_canary_is_aborted_retried_and_promoted_with_kubectl_annotate(
    fleet: Fleet, ns: str
) -> None:
    """The three commands a user has, each a ``kubectl annotate``, under load."""
    bed = fleet.testbed
    bed.apply(json.dumps(toy_llm("by_hand", rollout=canary((20, 3600)))), namespace=ns)
    stable = rolled_out(bed, ns, "by-hand", 1)["status"]["revision"]

    def rollout_in(phase: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            found = obj(bed, ns, "by-hand")
            rollout = ((found or {}).get("status") or {}).get("rollout") or {}
            return dict(rollout) if rollout.get("phase") == phase else None

        found: dict[str, Any] = bed.wait_for(check, 300, f"rollout {phase}", interval=1.0)
        return found

    def command(what: str) -> None:
        bed.kubectl("annotate", "tritonmodel", "by-hand", "-n", ns, "--overwrite",
                    f"tritonfleet.io/rollout={what}")  # fmt: skip

    with Load(fleet.url, "by_hand", clients=4) as load:
        routed(load)
        patch(bed, ns, "by-hand", {"spec": {"config": {"parameters": {"token_delay_ms": "1"}}}})
        target = rollout_in("Analyzing")["targetRevision"]
        command("abort")
        aborted = rollout_in("RolledBack")
        command("retry")
        retried = rollout_in("Analyzing")
        command("promote")
        done = rolled_out(bed, ns, "by-hand", 1, not_revision=stable, timeout=300)
        load.wait_for_answers(len(load.snapshot()) + 40)
    answers = load.snapshot()
    figures("by hand", summary=summary(answers))
    assert failures(answers) == [], failures(answers)[:5]
    assert aborted["reason"] == "Aborted" and aborted["weights"] == {stable: 100}
    assert retried["targetRevision"] == target
    assert done["status"]["revision"] == target
    assert done["status"]["rollout"]["phase"] == "Succeeded"
    annotations = done["metadata"].get("annotations") or {}
    assert "tritonfleet.io/rollout" not in annotations  # each command consumed
    reasons = {e["reason"] for e in events(bed, ns, "by-hand")}
    assert {"RolloutRetried", "Promoting"} <= reasons, reasons
