"""Benchmark: from a queue-time spike to a new desired replica count, ours against Prometheus.

Why it exists: the design target for autoscaling is "from a queue-time spike to a new
desired replica count within one HPA sync period (15 s) plus the metric window", and the
operator serves the HPA's metric itself (``external.metrics.k8s.io``) instead of the usual
Prometheus + prometheus-adapter chain. This measures both chains on the same spikes.

Where it sits: ``bench/`` (``make bench`` or ``make bench-autoscaling``), not a test. It
reuses the e2e machinery: its own testbed (``TESTBED_NAME=tfbench``, state in
``.bench/testbed-tfbench``, so it never touches another testbed), the local pod runner
(real Triton and operator processes on loopback pod IPs), the chart ``helm install``ed as
in ``tests/e2e/test_user_path.py`` (the operator's metrics API behind the real
aggregator, APIService Available), the runnable ``toy-llm`` sample with an HPA, and the
real kube-controller-manager's HPA controller.

Each spike: restart the operator's pod and give Prometheus's target a new label, wait
until everything is idle at 1 replica, wait a random 0-15 s, then 12 clients call one
Triton pod's generate endpoint (100 ms per token, one model instance: requests queue).
The restart and the label matter: the collector (every 5 s, from the operator's start),
the scrape (every 15 s, at an offset Prometheus derives from the target's labels) and the
HPA sync (every 15 s) are all periodic, so without them each chain keeps one phase against
the HPA for the whole run and the comparison measures that luck (``--fixed-phase`` shows
it).
Recorded, from the spike's start:

* **Triton**: the first time the pod's own cumulative counters, read directly from its
  ``/metrics`` every 0.5 s, give a mean queue time per request since the spike over the
  target (the source: queue time is only counted when a queued request completes);
* **ours, metric**: the first time ``tritonfleet_queue_time_seconds`` read through the
  aggregator (the same GET as ``kubectl get --raw /apis/external.metrics.k8s.io/...``,
  polled every 0.5 s) is over the model's target (the collector scrapes every 5 s and
  averages over ``windowSeconds``);
* **ours, HPA**: the first time the HPA's ``status.desiredReplicas`` (polled every
  0.25 s) is above 1; **HPA wait** is the gap between the two;
* **Prometheus, query**: a real Prometheus (``hack/prometheus/install.sh``) scrapes the
  same Triton pods' ``/metrics`` every 15 s (file_sd targets written from the pods'
  podIPs, loopback only), and the prometheus-adapter-style external-metric query
  ``sum(rate(nv_inference_queue_duration_us{model=M}[1m])) /
  sum(rate(nv_inference_request_success{model=M}[1m])) / 1000`` (the adapter's default
  external rule shape and its default 1m rate window) is evaluated through Prometheus's
  HTTP API every 1 s; the first time it is over the target;
* **Prometheus, HPA (estimated)**: prometheus-adapter itself is not run (it would be one
  more Go build; it answers an external-metrics GET with that query, live). The same HPA
  controller would act at its first sync at or after the query crossed: HPA syncs are
  periodic (each HPA is re-queued every sync period), and the measured change of our
  chain is one such sync, so the estimate is the first sync tick of that same grid at or
  after the Prometheus crossing. The simpler "query crossing + our measured HPA wait" is
  printed too.

The machine has 2 shared cores, so the load average is printed with the figures.

    .venv/bin/python bench/bench_autoscaling.py [--spikes 5] [--clients 12] [--keep-testbed]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ipaddress
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from hack.devtools.chart import TRITON_PODS, installed  # noqa: E402
from hack.devtools.operator import apply_crds  # noqa: E402
from hack.devtools.pod_runner import Api, ApiError, PodRunner  # noqa: E402
from hack.devtools.prometheus import PrometheusServer, ensure_prometheus  # noqa: E402
from hack.devtools.triton import parse_metrics  # noqa: E402
from tritonfleet.desired.kube.autoscaling import parse_quantity  # noqa: E402

SAMPLE = ROOT / "manifests" / "samples" / "runnable" / "toy-llm.yaml"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
METRIC = "tritonfleet_queue_time_seconds"
TRITON_METRICS_PORT = 8002
# Loopback only: never route through an http(s)_proxy from the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in LOOPBACK
    except ValueError:
        return False


def local_open(url: str, data: bytes | None = None, timeout: float = 5) -> bytes:
    """POST/GET a loopback address (the only kind this benchmark dials) and read the body."""
    host = urllib.parse.urlparse(url).hostname or ""
    if not loopback(host):
        raise ValueError(f"refusing to dial {url}: not a 127.0.0.0/8 address")
    with LOCAL.open(urllib.request.Request(url, data=data), timeout=timeout) as response:
        return bytes(response.read())


def local_get(url: str, timeout: float = 5) -> Any:
    return json.loads(local_open(url, timeout=timeout))


def triton_counters(ip: str) -> tuple[float, float]:
    """A Triton pod's cumulative (queue µs, successful requests) for toy_llm, from /metrics."""
    metrics = parse_metrics(local_open(f"http://{ip}:{TRITON_METRICS_PORT}/metrics").decode())
    queue = success = 0.0
    for (name, labels), value in metrics.items():
        if ("model", "toy_llm") in labels:
            if name == "nv_inference_queue_duration_us":
                queue += value
            elif name == "nv_inference_request_success":
                success += value
    return queue, success


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    """A real Prometheus server on 127.0.0.1 scraping file_sd targets every ``scrape`` s."""

    def __init__(self, binary: Path, workdir: Path, scrape_seconds: int) -> None:
        self.server = PrometheusServer(binary, workdir)
        self.workdir = workdir
        self.scrape_seconds = scrape_seconds
        self.targets_file = workdir / "targets.json"
        self.url = self.server.url
        self._targets: tuple[list[str], int] | None = None
        self._lock = threading.Lock()
        self._ips: list[str] = []
        #: Part of every target's labels; Prometheus derives a target's scrape offset from
        #: the hash of its labels, so a new round moves the scrape to a new phase.
        self.round = 0
        self.rotated_at = time.monotonic()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        config = {
            "global": {
                "scrape_interval": f"{self.scrape_seconds}s",
                "scrape_timeout": f"{min(self.scrape_seconds, 10)}s",
            },
            "scrape_configs": [
                {
                    "job_name": "triton",
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "5s"}
                    ],
                }
            ],
        }
        self.server.start(config)

    def stop(self) -> None:
        self.server.stop()

    def set_targets(self, ips: list[str]) -> None:
        """Write the scrape targets (``<podIP>:8002``) atomically; only loopback IPs."""
        with self._lock:
            self._ips = sorted(ip for ip in ips if loopback(ip))
            if (self._ips, self.round) == self._targets:
                return
            groups = [
                {
                    "targets": [f"{ip}:{TRITON_METRICS_PORT}" for ip in self._ips],
                    "labels": {"bench_round": str(self.round)},
                }
            ]
            tmp = self.targets_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups if self._ips else []))
            tmp.replace(self.targets_file)
            self._targets = (list(self._ips), self.round)

    def rephase(self) -> None:
        """New target labels: the same pods, scraped at another (hash-derived) phase."""
        with self._lock:
            self.round += 1
            self.rotated_at = time.monotonic()
        self.set_targets(self._ips)

    def healthy_targets(self) -> int:
        body = local_get(self.url + "/api/v1/targets?state=active")
        return sum(1 for t in body["data"]["activeTargets"] if t["health"] == "up")

    def query(self, promql: str) -> float | None:
        """The instant query's single value now; None without a series (NaN is kept)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        result = local_get(url)["data"]["result"]
        return float(result[0]["value"][1]) if result else None


# --------------------------------------------------------------------------- observation


@dataclass
class Series:
    """Timestamped readings of one signal (time.monotonic(), value)."""

    points: list[tuple[float, float | None]] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, value: float | None) -> None:
        with self.lock:
            self.points.append((time.monotonic(), value))

    def latest(self) -> float | None:
        with self.lock:
            return self.points[-1][1] if self.points else None

    def first(self, since: float, test: Callable[[float], bool]) -> float | None:
        with self.lock:
            for t, v in self.points:
                if t >= since and v is not None and not math.isnan(v) and test(v):
                    return t
        return None


class Poller(threading.Thread):
    """Calls ``read`` every ``interval`` s and records the value (None on error/no data)."""

    def __init__(self, name: str, interval: float, read: Callable[[], float | None]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.read = read
        self.series = Series()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            try:
                value = self.read()
            except (ApiError, OSError, ValueError, KeyError, IndexError):
                value = None
                self.series.errors += 1
            self.series.add(value)
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - started)))


# --------------------------------------------------------------------------- load


@contextlib.contextmanager
def spike(ip: str, clients: int, max_tokens: int) -> Iterator[None]:
    """``clients`` closed-loop clients on one Triton pod's generate endpoint."""
    if not loopback(ip):
        raise ValueError(f"refusing to load {ip}: not a 127.0.0.0/8 address")
    stop = threading.Event()
    body = json.dumps({"text_input": "a b c d", "max_tokens": max_tokens}).encode()

    def client() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                local_open(f"http://{ip}:8000/v2/models/toy_llm/generate", body, timeout=60)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=70)


# --------------------------------------------------------------------------- the run


@dataclass
class Spike:
    load_before: float
    triton: float | None = None
    ours_metric: float | None = None
    ours_hpa: float | None = None
    prom_query: float | None = None
    prom_hpa_tick: float | None = None
    load_after: float = 0.0

    @property
    def hpa_wait(self) -> float | None:
        if self.ours_metric is None or self.ours_hpa is None:
            return None
        return self.ours_hpa - self.ours_metric

    @property
    def prom_hpa_gap(self) -> float | None:
        if self.prom_query is None or self.hpa_wait is None:
            return None
        return self.prom_query + self.hpa_wait


def duration_seconds(text: str) -> float:
    """A Prometheus duration of one unit (``1m``, ``30s``, ``2h``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unsupported duration {text!r} (use e.g. 1m or 30s)")
    return int(match.group(1)) * units[match.group(2)]


def restart_operator(bed: tb.Testbed, runner: PodRunner, namespace: str) -> None:
    """Delete the operator's pod and wait for its replacement to be Ready."""
    selector = "app.kubernetes.io/component=operator"
    old = {p["metadata"]["name"] for p in runner.wait_ready(namespace, selector, 1)}
    for name in old:
        bed.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")

    def replaced() -> bool:
        ready = runner.wait_ready(namespace, selector, 1, timeout=180)
        return all(p["metadata"]["name"] not in old for p in ready)

    bed.wait_for(replaced, 240, "a new operator pod Ready", 1)


def hpa_sync_period(bed: tb.Testbed) -> float:
    """kube-controller-manager's --horizontal-pod-autoscaler-sync-period on this testbed."""
    config = bed.cluster_dir / "kwok.yaml"
    text = config.read_text() if config.is_file() else ""
    match = re.search(r"horizontal-pod-autoscaler-sync-period\D*?(\d+(?:\.\d+)?)(ms|s|m)", text)
    if not match:
        return 15.0  # the controller-manager's default
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def model_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(SAMPLE.read_text()))
    serving = body["spec"]["serving"]
    serving["replicas"] = {"min": 1, "max": 2}
    serving["autoscaling"] = {"queueTimeTargetMs": args.target_ms, "windowSeconds": args.window}
    body["spec"]["config"].setdefault("parameters", {})["token_delay_ms"] = str(args.token_delay_ms)
    return body


def summary(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    missing = len(values) - len(got)
    if not got:
        return "n/a"
    text = f"{min(got):5.1f} {statistics.median(got):6.1f} {max(got):5.1f}"
    return text + (f"  ({missing} not reached)" if missing else "")


def fmt(value: float | None) -> str:
    return f"{value:6.1f}" if value is not None else "     -"


def run(bed: tb.Testbed, runner: PodRunner, prometheus_bin: Path, args: argparse.Namespace) -> int:
    api = Api(bed.kubeconfig)
    period = hpa_sync_period(bed)
    target = float(args.target_ms)
    suffix = uuid.uuid4().hex[:5]
    system, models = f"tfb-system-{suffix}", f"tfb-scale-{suffix}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-autoscaling-", dir=bed.state_dir))
    prometheus = Prometheus(prometheus_bin, workdir / "prometheus", args.scrape_seconds)
    rule = (
        f'sum(rate(nv_inference_queue_duration_us{{model="toy_llm"}}[{args.rate_window}])) / '
        f'sum(rate(nv_inference_request_success{{model="toy_llm"}}[{args.rate_window}])) / 1000'
    )
    metric_path = (
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{models}/{METRIC}"
        "?labelSelector=model%3Dtoy_llm"
    )
    hpa_path = f"/apis/autoscaling/v2/namespaces/{models}/horizontalpodautoscalers/tm-toy-llm"
    pods_path = f"/api/v1/namespaces/{models}/pods?" + urllib.parse.urlencode(
        {"labelSelector": TRITON_PODS}
    )
    spikes: list[Spike] = []
    triton_errors = 0

    def ready_triton_ips() -> list[str]:
        ips = []
        for pod in api.get(pods_path)["items"]:
            status = pod.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            if ready and not pod["metadata"].get("deletionTimestamp") and status.get("podIP"):
                ips.append(str(status["podIP"]))
        return [ip for ip in ips if loopback(ip)]

    def our_metric() -> float | None:
        """The operator's answer, in milliseconds (it serves seconds)."""
        try:
            return parse_quantity(str(api.get(metric_path)["items"][0]["value"])) * 1000
        except ApiError:
            return None  # 503 while the operator has no data

    def desired() -> float | None:
        return float((api.get(hpa_path).get("status") or {}).get("desiredReplicas") or 0)

    stabilization = f"externalMetrics.scaleDownStabilizationSeconds={args.stabilization}"
    with installed(bed, system, stabilization):
        runner.wait_ready(system, "app.kubernetes.io/component=operator", 1, timeout=180)

        def api_available() -> bool:
            service = bed.get("apiservice", "v1beta1.external.metrics.k8s.io")
            conditions = (service or {}).get("status", {}).get("conditions") or []
            return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

        bed.wait_for(api_available, 90, "APIService v1beta1.external.metrics.k8s.io Available")
        bed.kubectl("create", "namespace", models)
        bed.apply(json.dumps(model_body(args)), namespace=models)
        try:
            print("waiting for toy-llm Ready on 1 replica and an idle metric ...", flush=True)
            bed.wait_for(lambda: len(ready_triton_ips()) == 1, 300, "a Ready Triton pod")
            bed.wait_for(lambda: our_metric() == 0.0, 120, "an idle queue time of 0 ms")

            prometheus.start()
            stop_targets = threading.Event()

            def follow_targets() -> None:
                while not stop_targets.wait(2):
                    with contextlib.suppress(ApiError, OSError, ValueError, KeyError):
                        prometheus.set_targets(ready_triton_ips())

            prometheus.set_targets(ready_triton_ips())
            targets = threading.Thread(target=follow_targets, daemon=True)
            targets.start()
            bed.wait_for(prometheus.healthy_targets, 60, "Prometheus scraping the Triton pod")

            pollers = [
                Poller("ours", 0.5, our_metric),
                Poller("hpa", 0.25, desired),
                Poller("prometheus", 1.0, lambda: prometheus.query(rule)),
            ]
            for poller in pollers:
                poller.start()
            ours, hpa, prom = (p.series for p in pollers)

            history = duration_seconds(args.rate_window) + args.scrape_seconds + 5

            def settled() -> bool:
                value = prom.latest()
                return (
                    time.monotonic() - prometheus.rotated_at >= history
                    and hpa.latest() == 1.0
                    and ours.latest() == 0.0
                    and (value is None or math.isnan(value) or value <= target)
                    and len(ready_triton_ips()) == 1
                )

            try:
                for i in range(args.spikes):
                    if not args.fixed_phase:
                        # New phases of the collector (its loop starts with the operator)
                        # and of the scrape, against the HPA's sync grid.
                        restart_operator(bed, runner, system)
                        prometheus.rephase()
                    bed.wait_for(settled, 300, f"idle at 1 replica before spike {i + 1}", 1)
                    time.sleep(random.uniform(0, period))
                    (ip,) = ready_triton_ips()
                    record = Spike(load_before=os.getloadavg()[0])
                    queue0, success0 = triton_counters(ip)

                    def at_source(
                        ip: str = ip, q0: float = queue0, s0: float = success0
                    ) -> float | None:
                        queue, success = triton_counters(ip)
                        return (queue - q0) / (success - s0) / 1000 if success > s0 else None

                    source = Poller("triton", 0.5, at_source)
                    t0 = time.monotonic()
                    source.start()
                    with spike(ip, args.clients, args.max_tokens):
                        deadline = t0 + args.spike_timeout
                        while time.monotonic() < deadline:
                            up = hpa.first(t0, lambda v: v > 1)
                            over = prom.first(t0, lambda v: v > target)
                            if up is not None and over is not None:
                                break
                            time.sleep(0.25)
                    source.halt.set()
                    triton_errors += source.series.errors
                    record.load_after = os.getloadavg()[0]
                    at = {
                        name: series.first(t0, test)
                        for name, series, test in (
                            ("triton", source.series, lambda v: v > target),
                            ("ours", ours, lambda v: v > target),
                            ("hpa", hpa, lambda v: v > 1),
                            ("prom", prom, lambda v: v > target),
                        )
                    }
                    record.triton = at["triton"] - t0 if at["triton"] is not None else None
                    record.ours_metric = at["ours"] - t0 if at["ours"] is not None else None
                    record.ours_hpa = at["hpa"] - t0 if at["hpa"] is not None else None
                    record.prom_query = at["prom"] - t0 if at["prom"] is not None else None
                    if record.ours_hpa is not None and record.prom_query is not None:
                        ticks = math.ceil((record.prom_query - record.ours_hpa) / period)
                        record.prom_hpa_tick = record.ours_hpa + ticks * period
                    spikes.append(record)
                    print(
                        f"spike {i + 1}/{args.spikes}: Triton {fmt(record.triton)} s,"
                        f" ours metric {fmt(record.ours_metric)} s,"
                        f" HPA {fmt(record.ours_hpa)} s; Prometheus query"
                        f" {fmt(record.prom_query)} s (load {record.load_before:.2f})",
                        flush=True,
                    )
            finally:
                for poller in pollers:
                    poller.halt.set()
                stop_targets.set()
                prometheus.stop()
        finally:
            bed.kubectl("delete", "tritonmodel", "toy-llm", "-n", models, "--timeout=120s",
                        check=False, timeout=150)  # fmt: skip
            bed.kubectl("delete", "namespace", models, "--wait=false", check=False)
    shutil.rmtree(workdir, ignore_errors=True)
    report(spikes, args, period, rule, [triton_errors, *(p.series.errors for p in pollers)])
    return 0


def report(
    spikes: list[Spike], args: argparse.Namespace, period: float, rule: str, errors: list[int]
) -> None:
    window = args.window
    budget = period + window
    print(
        f"\nautoscaling reaction: {len(spikes)} spikes, {args.clients} clients on one Triton pod"
        f" ({args.token_delay_ms} ms/token, {args.max_tokens} tokens), target"
        f" {args.target_ms} ms queue time per request; {os.cpu_count()} cores (shared)"
    )
    print(
        f"  ours: operator collector every 5 s, window {window} s, external.metrics.k8s.io;"
        f" HPA sync period {period:g} s (kube-controller-manager)"
    )
    print(
        f"  Prometheus: scrape every {args.scrape_seconds} s, prometheus-adapter-style query"
        f" (its default {args.rate_window} rate window), polled every 1 s:\n    {rule}"
    )
    phases = (
        "fixed for the run (--fixed-phase)"
        if args.fixed_phase
        else "new per spike (operator pod restarted, Prometheus target relabelled)"
    )
    print(f"  phases of the collector and the scrape against the HPA sync: {phases}")
    print(f"  poll errors (Triton, ours, HPA, Prometheus): {errors}\n")
    print("seconds from each spike's start (load = 1-min load average at the start)")
    print(
        f"{'spike':>5} {'load':>5} {'Triton':>6} | {'ours':>6} {'HPA':>6} {'wait':>6} |"
        f" {'Prom':>6} {'+wait':>6} {'tick':>6}"
    )
    for i, s in enumerate(spikes, 1):
        print(
            f"{i:>5} {s.load_before:>5.2f} {fmt(s.triton)} |"
            f" {fmt(s.ours_metric)} {fmt(s.ours_hpa)} {fmt(s.hpa_wait)} |"
            f" {fmt(s.prom_query)} {fmt(s.prom_hpa_gap)} {fmt(s.prom_hpa_tick)}"
        )
    print(f"\n{'':<50} min median   max")
    rows: list[tuple[str, list[float | None]]] = [
        ("Triton: its own counters over target", [s.triton for s in spikes]),
        ("ours: metric over target in our API", [s.ours_metric for s in spikes]),
        ("ours: HPA desiredReplicas > 1 (measured)", [s.ours_hpa for s in spikes]),
        ("ours: HPA sync wait (HPA - metric)", [s.hpa_wait for s in spikes]),
        ("Prom: query over target", [s.prom_query for s in spikes]),
        ("Prom: HPA at the next sync tick (estimate)", [s.prom_hpa_tick for s in spikes]),
        ("Prom: query + our HPA wait (cruder estimate)", [s.prom_hpa_gap for s in spikes]),
    ]
    for label, values in rows:
        print(f"  {label:<48} {summary(values)}")
    met = sum(1 for s in spikes if s.ours_hpa is not None and s.ours_hpa <= budget)
    later = sum(
        1
        for s in spikes
        if s.ours_hpa is not None and s.prom_hpa_tick is not None and s.prom_hpa_tick > s.ours_hpa
    )
    loads = [s.load_before for s in spikes] + [s.load_after for s in spikes]
    print(
        f"\n  design target (HPA sync {period:g} s + window {window} s = {budget:g} s):"
        f" met by ours in {met}/{len(spikes)} spikes"
    )
    print(
        f"  the Prometheus chain would have missed the HPA sync that scaled ours in"
        f" {later}/{len(spikes)} spikes (one more sync period, {period:g} s, each)"
    )
    if loads:
        print(
            f"  1-min load average during the spikes: {min(loads):.2f} .. {max(loads):.2f}"
            f" (now {', '.join(f'{v:.2f}' for v in os.getloadavg())})"
        )
    print(
        "  Prom's HPA figures are estimates: prometheus-adapter was not run. The same HPA"
        " controller would\n  act at its first sync at or after the query crossed; 'tick' uses"
        " the sync grid seen in the same spike."
    )
    if args.fixed_phase:
        print(
            "  With fixed phases 'wait' takes few distinct values and 'tick' mostly equals HPA:"
            " the collector,\n  the scrape and the HPA all run on fixed periods."
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spikes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--token-delay-ms", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--target-ms", type=int, default=50, help="queueTimeTargetMs")
    parser.add_argument("--window", type=int, default=15, help="windowSeconds (the sample's)")
    parser.add_argument("--stabilization", type=int, default=20, help="scale-down, seconds")
    parser.add_argument("--scrape-seconds", type=int, default=15)
    parser.add_argument("--rate-window", default="1m")
    parser.add_argument("--spike-timeout", type=float, default=120)
    parser.add_argument(
        "--fixed-phase",
        action="store_true",
        help="keep the collector's and the scrape's phase against the HPA sync for the whole run",
    )
    parser.add_argument("--keep-testbed", action="store_true", help="leave the testbed running")
    args = parser.parse_args()

    prometheus_bin = ensure_prometheus()
    with tb.for_a_run(keep=args.keep_testbed) as bed:
        apply_crds(bed)
        with PodRunner(bed.kubeconfig, bed.state_dir) as runner:
            return run(bed, runner, prometheus_bin, args)


if __name__ == "__main__":
    sys.exit(main())
