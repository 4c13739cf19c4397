"""What a route is while the gateway runs: the types every other gateway module shares.

A :class:`RouteTable` maps each OpenAI model name to a :class:`Route`: the
Triton model behind it, the pods (:class:`Endpoint`) that hold it, its
OpenAI <-> Triton mapping, its failover policy (:class:`Failover`) and its
timeouts, breaker and retry settings. Both sources of routes produce these
immutable values - the routes file (:mod:`.routes_file`) and the cluster's
objects (:mod:`.cluster`) - and the per-request choice (:mod:`.plan`) and the
gateway process (``tritonfleet.gateway``) only read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tritonfleet.desired.gateway.openai_mapping import EmbeddingMapping, GenerateMapping
from tritonfleet.desired.gateway.prices import PriceTable

Kind = Literal["generate", "embedding"]
Mode = Literal["auto", "hosted", "triton"]

DEFAULT_TRITON_HTTP_PORT = 8000
DEFAULT_TRITON_METRICS_PORT = 8002


class RoutesError(ValueError):
    """The routes file (or a mapping annotation) is invalid; lists every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid routes:\n  - " + "\n  - ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Triton pod (or server) that holds the route's model."""

    name: str
    url: str  # base URL of Triton's HTTP endpoint, no trailing slash
    metrics_url: str | None = None
    revision: str | None = None  # the revision it serves (a rollout runs two side by side)


Split = tuple[tuple[str, int], ...]  # (revision, percent of requests) while a canary runs


@dataclass(frozen=True, slots=True)
class ApiKeyRef:
    """Where the hosted provider's API key is; never the key itself."""

    env: str | None = None
    file: str | None = None
    secret_namespace: str | None = None
    secret_name: str | None = None
    secret_key: str | None = None

    def describe(self) -> str:
        if self.env:
            return f"env {self.env}"
        if self.file:
            return f"file {self.file}"
        return f"secret {self.secret_namespace}/{self.secret_name}[{self.secret_key}]"


@dataclass(frozen=True, slots=True)
class HostedTarget:
    base_url: str  # e.g. https://api.deepseek.com/v1 (no trailing slash)
    model: str
    api_key: ApiKeyRef | None = None


@dataclass(frozen=True, slots=True)
class Failover:
    mode: Mode = "auto"
    hosted: HostedTarget | None = None
    on_unavailable: bool = True
    queue_time_above_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines of one request; each attempt gets the smaller of its own and what
    is left of ``total_s``, so no request outlives ``total_s`` however often it is retried."""

    connect_s: float = 1.0
    first_byte_s: float = 30.0  # a stream's first event (queue + prefill), per attempt
    idle_s: float = 30.0  # between two streamed events
    total_s: float = 300.0  # the whole request, every attempt included
    answer_s: float = 120.0  # a whole (non-streamed) answer from one backend, per attempt


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 3  # consecutive failures that open a closed breaker
    open_s: float = 1.0  # first open period; doubles on each failed probe
    max_open_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_triton_attempts: int = 2  # distinct pods tried before the hosted provider
    budget_percent: float = 20.0  # re-sends to Triton allowed, as % of recent requests
    min_retries_per_s: float = 10.0  # ... but always at least this many per second
    max_retry_after_s: float = 2.0  # longest hosted Retry-After the gateway waits out
    max_hosted_attempts: int = 2


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # what OpenAI clients put in "model"
    kind: Kind
    triton_model: str
    endpoints: tuple[Endpoint, ...]
    generate: GenerateMapping | None = None
    embedding: EmbeddingMapping | None = None
    failover: Failover | None = None
    timeouts: Timeouts = Timeouts()
    breaker: BreakerSettings = BreakerSettings()
    retry: RetrySettings = RetrySettings()
    origin: str = "static"  # "static" or "TritonModel ns/name" (for messages)
    # While a canary runs: each revision's share. Empty: every endpoint takes requests.
    split: Split = ()

    @property
    def hosted(self) -> HostedTarget | None:
        return self.failover.hosted if self.failover else None

    @property
    def mode(self) -> Mode:
        """``triton`` when the route has no failover at all."""
        return self.failover.mode if self.failover else "triton"

    @property
    def can_host(self) -> bool:
        """Whether the hosted provider may ever answer for this route."""
        return self.mode != "triton" and self.hosted is not None


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: Mapping[str, Route]
    prices: PriceTable = field(default_factory=PriceTable)

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)
