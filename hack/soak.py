"""The soak run behind ``make soak``: hours of ordinary churn, to see what grows.

For ``--minutes`` (30 by default) it keeps, on the testbed (started if needed):

* steady openai SDK load through ``tritonfleet gateway --routes`` onto two real
  tritonserver processes, with the hosted-API stand-in as the failover target;
* model churn on the operator: every ``--churn-seconds`` one model applied, one
  edited (a new revision) and one deleted, about a dozen alive;
* a Triton process SIGKILLed every ``--kill-minutes`` and restarted.

At the end it prints, for the operator and the gateway, RSS and open file
descriptors after the warm-up and at the end, the operator's API writes per
minute, and the requests answered and failed. Failed requests make it exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from hack.devtools.gateway import GatewayProcess, start_gateway
from hack.devtools.hosted_api import HostedAPI
from hack.devtools.openai_load import Load
from hack.devtools.operator import OperatorProcess, apply_crds, cpu_model, delete_models
from hack.devtools.testbed import Testbed, start
from hack.devtools.triton import TritonProcess, copy_model_repository

CLIENT_TOKEN = "tf-soak-" + secrets.token_hex(8)
HOSTED_KEY = "sk-soak-" + secrets.token_hex(8)


def process_figures(pid: int) -> tuple[int, int]:
    """(RSS in MiB, open file descriptors) of a process."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb // 1024, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


def start_gateway_on(tritons: list[TritonProcess], hosted: HostedAPI, work: Path) -> GatewayProcess:
    pods = [{"url": t.http_url, "name": f"pod-{i}", "metricsUrl": t.metrics_url}
            for i, t in enumerate(tritons)]  # fmt: skip
    routes = {
        "models": [
            {
                "name": "toy-llm",
                "tritonModel": "toy_llm",
                "endpoints": pods,
                "mapping": {"chatTemplate": "plain"},
                "failover": {
                    "provider": {
                        "baseUrl": hosted.base_url,
                        "apiKeyEnv": "TF_SOAK_HOSTED_KEY",
                        "model": "gpt-4.1",
                    }
                },
            }
        ]
    }
    (work / "routes.yaml").write_text(yaml.safe_dump(routes))
    args = ["--routes", str(work / "routes.yaml"), "--auth-tokens-env", "TF_SOAK_TOKENS"]
    args += ["--probe-interval", "0.5"]
    env = {"TF_SOAK_HOSTED_KEY": HOSTED_KEY, "TF_SOAK_TOKENS": CLIENT_TOKEN}
    return start_gateway(args, work / "gateway.log", env=env, routes=routes)


def soak(minutes: float, churn_s: float, kill_minutes: float, clients: int) -> int:
    testbed = Testbed.from_environment()
    if not testbed.is_healthy():
        testbed = start()
    apply_crds(testbed)
    work = Path(tempfile.mkdtemp(prefix="tritonfleet-soak-"))
    repo = copy_model_repository(work / "models", ["toy_llm"])
    prefix = f"soak{uuid.uuid4().hex[:4]}"
    tritons = [TritonProcess(log_dir=work / "triton") for _ in range(2)]
    hosted = HostedAPI(api_key=HOSTED_KEY).start()
    operator = OperatorProcess(testbed, [f"{prefix}-*"], log_path=work / "operator.log")
    gateway: GatewayProcess | None = None
    load: Load | None = None
    with testbed.namespace(prefix) as ns, contextlib.ExitStack() as cleanup:
        cleanup.callback(hosted.stop)
        for i, triton in enumerate(tritons):
            triton.start(repo, host=f"127.0.0.{2 + i}", load_models=["toy_llm"])
            cleanup.callback(triton.stop)
        operator.start()
        cleanup.callback(operator.stop)
        cleanup.callback(delete_models, testbed, ns)
        gateway = start_gateway_on(tritons, hosted, work)
        cleanup.callback(gateway.stop)
        load = Load(gateway.url + "/v1", CLIENT_TOKEN)
        load.start("toy-llm", clients, streams_every=3)
        cleanup.callback(load.finish)

        versions: dict[str, int] = {}
        serial = 0
        began = time.monotonic()
        warm_at = began + 60
        first: dict[str, tuple[int, int]] = {}
        writes_at_warm = 0.0
        next_churn = began
        next_kill = began + kill_minutes * 60
        kills = 0
        while time.monotonic() < began + minutes * 60:
            now = time.monotonic()
            if not first and now >= warm_at:
                first = {"operator": process_figures(operator.pid),
                         "gateway": process_figures(gateway.proc.pid)}  # fmt: skip
                writes_at_warm = operator.writes()
            if now >= next_churn:
                next_churn = now + churn_s
                serial += 1
                changed = {f"soak-{serial:05d}": 1}
                if versions:
                    edited = sorted(versions)[serial % len(versions)]
                    changed[edited] = versions[edited] + 1
                versions.update(changed)
                testbed.apply(yaml.safe_dump_all([cpu_model(n, v) for n, v in changed.items()]),
                              namespace=ns)  # fmt: skip
                if len(versions) > 12:
                    gone = sorted(versions)[0]
                    del versions[gone]
                    testbed.kubectl("delete", "tritonmodel", gone, "-n", ns, "--wait=false")
            if now >= next_kill:
                next_kill = now + kill_minutes * 60
                victim = tritons[kills % len(tritons)]
                kills += 1
                victim.kill()
                victim.restart()
            time.sleep(1)
        ended = time.monotonic()
        last = {"operator": process_figures(operator.pid),
                "gateway": process_figures(gateway.proc.pid)}  # fmt: skip
        writes_per_min = (operator.writes() - writes_at_warm) / max(1e-9, (ended - warm_at) / 60)
        answers = load.between(0, ended)
        failed = [a for a in answers if a.backend == "error"]
        load_avg = os.getloadavg()[0]
        print(f"\nsoak: {minutes:g} min, {serial} models applied, churn every {churn_s:g} s, "
              f"{kills} Triton kills, {clients} clients; load average {load_avg:.1f}")  # fmt: skip
        print(f"{'process':<10} {'RSS MiB start':>14} {'RSS MiB end':>12} {'fds start':>10} "
              f"{'fds end':>8}")  # fmt: skip
        for name in ("operator", "gateway"):
            s, e = first.get(name, (0, 0)), last[name]
            print(f"{name:<10} {s[0]:>14} {e[0]:>12} {s[1]:>10} {e[1]:>8}")
        print(f"operator API writes per minute (after the warm-up): {writes_per_min:.1f}")
        by_backend = {b: sum(a.backend == b for a in answers) for b in ("triton", "hosted")}
        print(f"requests: {len(answers)} answered ({by_backend}), {len(failed)} failed")
        for a in failed[:5]:
            print(f"  failed: {a.error}")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--churn-seconds", type=float, default=10.0)
    parser.add_argument("--kill-minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    raise SystemExit(soak(args.minutes, args.churn_seconds, args.kill_minutes, args.clients))


if __name__ == "__main__":
    main()
