"""Benchmark: how long a model update takes to reach every request, Rolling and Canary,
and what a canary's traffic split costs the gateway.

Why it exists: a rollout must fail no request (tests/e2e/test_rollouts.py proves that);
this measures how long it takes, and whether splitting traffic by revision makes the
gateway slower. Where it sits: ``bench/`` (``make bench``), not a test. It reuses the e2e
machinery: its own testbed (``TESTBED_NAME=tfbench``, state in ``.bench/``), the image's
operator and gateway ``helm install``ed and real Triton pods through the local pod
runner, and four openai SDK clients through the gateway's Service
(``hack/devtools/rollout_load.py``).

1. **Rolling**: ``toy_llm`` on 2 pods; ``kubectl apply`` of a config change. From the
   apply: when ``status`` says every pod serves the new revision, and when the last
   request answered by the old revision arrived (from then on every request gets the
   new one). Failed requests over the whole update.
2. **Canary**: the same on 1 pod with ``strategy: Canary``, steps 10 % → 50 % → 100 %
   with ``--pause`` s (10) each.
3. **Split overhead**: one client at a time (no queueing), each round a chat completion
   through the gateway's Service then the same generate call straight to a Triton pod;
   ``--requests`` rounds without a split (one revision), then as many with a canary
   held at 50 % (a no-op config parameter: both revisions answer alike). Overhead =
   gateway percentile - direct percentile of the same phase.

The machine has 2 shared cores: the load average is printed with the figures.

    .venv/bin/python bench/bench_rollout.py [--pause 10] [--requests 300] [--keep-testbed]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))
# Our own testbed, never the default one another session may be using.
os.environ.setdefault("TESTBED_NAME", "tfbench")
os.environ.setdefault("TESTBED_DIR", str(ROOT / ".bench" / f"testbed-{os.environ['TESTBED_NAME']}"))

import yaml  # noqa: E402

from hack.devtools import testbed as tb  # noqa: E402
from hack.devtools.chart import serving  # noqa: E402
from hack.devtools.image import ensure_image  # noqa: E402
from hack.devtools.operator import apply_crds, delete_models  # noqa: E402
from hack.devtools.pod_runner import PodRunner  # noqa: E402
from hack.devtools.rollout_load import Load, failures, rolled_out, summary  # noqa: E402

SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "runnable" / "toy-llm.yaml").read_text())
TRITON_HTTP_PORT = 8000
PROMPT = "the quick brown fox jumps over the lazy dog"


def model(name: str, replicas: int, rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    body = copy.deepcopy(SAMPLE)
    body["metadata"]["name"] = name.replace("_", "-")
    body["spec"]["modelName"] = name
    body["spec"]["serving"]["replicas"] = {"min": replicas, "max": replicas}
    body["spec"]["serving"].pop("autoscaling", None)
    if rollout is not None:
        body["spec"]["rollout"] = rollout
    return dict(body)


def canary(*steps: tuple[int, int]) -> dict[str, Any]:
    return {
        "strategy": "Canary",
        "canary": {"steps": [{"weight": w, "pauseSeconds": p} for w, p in steps]},
    }


def with_parameter(body: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["spec"]["config"].setdefault("parameters", {})[key] = value
    return out


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def update_under_load(
    bed: tb.Testbed, url: str, ns: str, body: dict[str, Any], pods: int
) -> dict[str, Any]:
    """Apply ``body``, wait until it serves, then apply a config change under load:
    seconds from the apply to the status saying done and to the last old answer."""
    name = body["metadata"]["name"]
    bed.apply(json.dumps(body), namespace=ns)
    old = rolled_out(bed, ns, name, pods, timeout=300)["status"]["revision"]
    with Load(url, body["spec"]["modelName"], clients=4) as load:
        load.wait_for_answers(40)
        applied = time.monotonic()
        bed.apply(json.dumps(with_parameter(body, "token_delay_ms", "1")), namespace=ns)
        done = rolled_out(bed, ns, name, pods, not_revision=old, timeout=600)
        status_s = time.monotonic() - applied
        load.wait_for_answers(len(load.snapshot()) + 40)
    answers = [a for a in load.snapshot() if a.at >= applied]
    last_old = max((a.at for a in answers if a.revision == old), default=applied)
    return {
        "status_s": status_s,
        "traffic_s": last_old - applied,
        "failed": len(failures(load.snapshot())),
        "summary": summary(load.snapshot()),
        "new": done["status"]["revision"],
    }


def timed_post(url: str, body: dict[str, Any]) -> float:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
    return (time.perf_counter() - started) * 1000


def answered_by(url: str, model_name: str) -> str:
    """The revision that answered one chat completion (``x-tritonfleet-revision``)."""
    body = {"model": model_name, "messages": [{"role": "user", "content": PROMPT}]}
    request = urllib.request.Request(
        f"{url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        return str(answer.headers.get("x-tritonfleet-revision", ""))


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def latencies(
    url: str, model_name: str, pod_ips: Callable[[], list[str]], rounds: int
) -> dict[str, list[float]]:
    """``rounds`` pairs: through the gateway, then straight to one of the pods in turn."""
    chat = {
        "model": model_name,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 4,
    }
    direct = {"text_input": PROMPT, "max_tokens": 4}
    ips = pod_ips()
    out: dict[str, list[float]] = {"gateway": [], "direct": []}
    for i in range(rounds):
        out["gateway"].append(timed_post(f"{url}/chat/completions", chat))
        ip = ips[i % len(ips)]
        generate = f"http://{ip}:{TRITON_HTTP_PORT}/v2/models/{model_name}/generate"
        out["direct"].append(timed_post(generate, direct))
    return out


def overhead(bed: tb.Testbed, url: str, ns: str, rounds: int) -> dict[str, dict[str, list[float]]]:
    body = model("bench_split", 1, canary((50, 3600)))
    name = body["metadata"]["name"]
    bed.apply(json.dumps(body), namespace=ns)
    stable = rolled_out(bed, ns, name, 1, timeout=300)["status"]["revision"]

    def pod_ips() -> list[str]:
        status = bed.get("tritonmodel", name, namespace=ns)["status"]
        return [p["ip"] for p in status["pods"] if p["state"] == "Ready" and p.get("ip")]

    phases = {"no split": latencies(url, "bench_split", pod_ips, 20)}  # warm-up, dropped
    phases["no split"] = latencies(url, "bench_split", pod_ips, rounds)
    bed.apply(json.dumps(with_parameter(body, "bench_note", "canary")), namespace=ns)

    def splitting() -> bool:
        found = bed.get("tritonmodel", name, namespace=ns) or {}
        rollout = (found.get("status") or {}).get("rollout") or {}
        weights = rollout.get("weights") or {}
        return rollout.get("phase") == "Analyzing" and weights.get(stable) == 50

    bed.wait_for(splitting, 300, "the canary at 50 %", interval=1.0)

    def both_answer() -> bool:
        """The gateway has the split: a few requests meet both revisions."""
        return len({answered_by(url, "bench_split") for _ in range(6)}) == 2

    bed.wait_for(both_answer, 60, "both revisions answering through the gateway", interval=0.5)
    if len(pod_ips()) != 2:
        raise RuntimeError(f"expected a stable and a canary pod, found {pod_ips()}")
    latencies(url, "bench_split", pod_ips, 20)
    phases["50 % split"] = latencies(url, "bench_split", pod_ips, rounds)
    return phases


def run(bed: tb.Testbed, runner: PodRunner, args: argparse.Namespace) -> int:
    suffix = uuid.uuid4().hex[:5]
    system, ns = f"tfb-system-{suffix}", f"tfb-roll-{suffix}"
    with serving(bed, runner, system) as chart:
        url = chart.gateway_url
        bed.kubectl("create", "namespace", ns)
        try:
            print(f"load average before: {load_average()}", flush=True)
            rolling = update_under_load(bed, url, ns, model("bench_rolling", 2), 2)
            print(f"rolling done (load {load_average()})", flush=True)
            steps = ((10, args.pause), (50, args.pause), (100, args.pause))
            canaried = update_under_load(bed, url, ns, model("bench_canary", 1, canary(*steps)), 1)
            print(f"canary done (load {load_average()})", flush=True)
            phases = overhead(bed, url, ns, args.requests)
            print(f"overhead done (load {load_average()})", flush=True)
        finally:
            delete_models(bed, ns)
    print("\n== time from kubectl apply to 100 % on the new revision (4 clients under load)")
    print(f"{'update':34} {'status done':>12} {'last old answer':>16} {'failed':>7}")
    for what, r in (
        ("Rolling, 2 pods", rolling),
        (f"Canary 10/50/100 %, {args.pause} s pauses, 1 pod", canaried),
    ):
        print(f"{what:34} {r['status_s']:11.1f}s {r['traffic_s']:15.1f}s {r['failed']:7}")
        print(f"    {r['summary']}")
    print(f"\n== gateway overhead, one request at a time, {args.requests} rounds per phase (ms)")
    print(f"{'phase':12} {'gw p50':>8} {'gw p99':>8} {'direct p50':>11} {'direct p99':>11} "
          f"{'overhead p50':>13} {'overhead p99':>13}")  # fmt: skip
    for phase, values in phases.items():
        gw, direct = values["gateway"], values["direct"]
        g50, g99, d50, d99 = (
            percentile(gw, 50), percentile(gw, 99), percentile(direct, 50), percentile(direct, 99)
        )  # fmt: skip
        print(f"{phase:12} {g50:8.2f} {g99:8.2f} {d50:11.2f} {d99:11.2f} "
              f"{g50 - d50:13.2f} {g99 - d99:13.2f}")  # fmt: skip
    print(f"\nload average after: {load_average()} ({os.cpu_count()} cores)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pause", type=int, default=10, help="each canary step's pause, s")
    parser.add_argument("--requests", type=int, default=300, help="rounds per overhead phase")
    parser.add_argument("--keep-testbed", action="store_true", help="leave the testbed running")
    args = parser.parse_args()

    image = ensure_image()
    with tb.for_a_run(keep=args.keep_testbed) as bed:
        apply_crds(bed)
        with PodRunner(bed.kubeconfig, bed.state_dir, project_image=image) as runner:
            return run(bed, runner, args)


if __name__ == "__main__":
    sys.exit(main())
