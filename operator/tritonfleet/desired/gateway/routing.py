"""The gateway's routing table and the pure decisions made from it.

A :class:`RouteTable` maps each OpenAI model name to a :class:`Route`: the
Triton model behind it, the pods ready to serve it, its OpenAI↔Triton mapping
and its failover policy. It is built from either source the gateway knows:

* a static routes file (``tritonfleet gateway --routes FILE``), parsed by
  :func:`load_routes`;
* ``TritonModel``/``ModelEnsemble`` objects and their ``status.pods`` (the
  in-cluster mode), by :func:`routes_from_cluster` — only pods ``Ready`` at the
  object's current revision are routed to.

The per-request choice — which pods to try, in which order, and whether to go
to the hosted provider instead — is :func:`plan`, a pure function of the route
and of what the gateway observes (outstanding requests, breakers, health,
queue time). Price lookups and cost math live here too. Nothing in this module
does I/O; the gateway (``tritonfleet.gateway``) owns the clocks and sockets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from tritonfleet.api.base import ApiModel
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import FailoverSpec, TritonModel
from tritonfleet.api.status import ModelStatus
from tritonfleet.desired.gateway.openai_mapping import (
    EmbeddingMapping,
    GenerateMapping,
    template_from,
)
from tritonfleet.desired.triton.metrics import parse_triton_metrics

Backend = Literal["triton", "hosted"]
Kind = Literal["generate", "embedding"]
Mode = Literal["auto", "hosted", "triton"]

# Annotation on a TritonModel/ModelEnsemble holding its OpenAI mapping (YAML or
# JSON, the same shape as a routes file's `mapping`, plus `kind`).
MAPPING_ANNOTATION = "tritonfleet.io/openai-mapping"
# Annotation naming the model clients use, when it differs from the Triton name.
OPENAI_NAME_ANNOTATION = "tritonfleet.io/openai-model"

DEFAULT_TRITON_HTTP_PORT = 8000
DEFAULT_TRITON_METRICS_PORT = 8002


class RoutesError(ValueError):
    """The routes file (or a mapping annotation) is invalid; lists every problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid routes:\n  - " + "\n  - ".join(problems))
        self.problems = tuple(problems)


# --- runtime structures -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Triton pod (or server) that holds the route's model."""

    name: str
    url: str  # base URL of Triton's HTTP endpoint, no trailing slash
    metrics_url: str | None = None
    revision: str | None = None


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
    connect_s: float = 1.0
    first_byte_s: float = 30.0  # until Triton's first answer byte (queue + prefill)
    idle_s: float = 30.0  # between two streamed events
    total_s: float = 300.0


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

    @property
    def hosted(self) -> HostedTarget | None:
        return self.failover.hosted if self.failover else None

    @property
    def mode(self) -> Mode:
        return self.failover.mode if self.failover else "triton"


# --- prices and cost -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float


# Public list prices (USD per million tokens: input, output) of the providers
# the brief names; the output prices are the ones the chart documents.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(2.00, 8.00),
    "claude-sonnet-4.5": Price(3.00, 15.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "deepseek-v3.2": Price(0.28, 0.42),
}

# Names providers use on the wire for the models above.
DEFAULT_ALIASES: dict[str, str] = {
    "deepseek-chat": "deepseek-v3.2",
    "deepseek-reasoner": "deepseek-v3.2",
    "deepseek-v3.2-exp": "deepseek-v3.2",
    "claude-sonnet-4-5": "claude-sonnet-4.5",
    "gemini-2.5-flash-latest": "gemini-2.5-flash",
}

_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    triton: Price = Price(0.0, 0.0)  # own cost of Triton tokens, if a team sets one

    def lookup(self, model: str | None) -> Price | None:
        """Price of a provider model name: exact, then without a ``provider/``
        prefix and a date suffix, then through the aliases."""
        if not model:
            return None
        name = model.lower()
        for candidate in (name, name.rsplit("/", 1)[-1]):
            for key in (candidate, _DATE_SUFFIX.sub("", candidate)):
                if key in self.prices:
                    return self.prices[key]
                alias = self.aliases.get(key)
                if alias is not None and alias in self.prices:
                    return self.prices[alias]
        return None


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Cost:
    """What one answer cost, and what it would have cost on the hosted API."""

    usd: float
    hosted_equivalent_usd: float  # only when Triton served; else 0
    saving_usd: float


def request_cost(
    table: PriceTable, route: Route, backend: Backend, prompt_tokens: int, completion_tokens: int
) -> Cost:
    hosted_price = table.lookup(route.hosted.model if route.hosted else None)
    if backend == "hosted":
        return Cost(cost_usd(hosted_price, prompt_tokens, completion_tokens), 0.0, 0.0)
    own = cost_usd(table.triton, prompt_tokens, completion_tokens)
    if hosted_price is None:
        return Cost(own, 0.0, 0.0)
    equivalent = cost_usd(hosted_price, prompt_tokens, completion_tokens)
    return Cost(own, equivalent, equivalent - own)


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: Mapping[str, Route]
    prices: PriceTable = PriceTable()

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)


# --- the per-request decision ----------------------------------------------------------

Reason = Literal[
    "triton",  # Triton pods to try
    "mode_hosted",  # manual hosted mode
    "no_ready_replica",  # nothing ready: cold start, scaled to zero, sync in progress
    "breaker_open",  # pods exist but every breaker is open (crash, 5xx, timeouts)
    "queue_time",  # every pod is over the queue-time budget
]


class PodView(NamedTuple):
    """What the gateway knows about one endpoint of a route right now
    (a NamedTuple: built per pod per request, so it must be cheap)."""

    endpoint: Endpoint
    outstanding: int = 0
    healthy: bool = True  # health probe and in-cluster readiness
    admits: bool = True  # its breaker lets a request through
    queue_ms: float | None = None  # Triton's recent average queue time for the model


class Plan(NamedTuple):
    pods: tuple[Endpoint, ...]  # in the order to try them
    hosted: bool  # whether the hosted provider may be used after them
    reason: Reason

    @property
    def activation(self) -> bool:
        """Demand with nothing ready: the signal to scale up from zero."""
        return self.reason == "no_ready_replica"


def plan(
    route: Route, pods: Sequence[PodView], *, model_admits: bool = True, rotation: int = 0
) -> Plan:
    """Which pods to try, least outstanding requests first, and whether the
    hosted provider backs them up. ``rotation`` breaks ties between equally
    loaded pods so they share traffic."""
    failover = route.failover
    mode = failover.mode if failover else "triton"
    can_host = failover is not None and failover.hosted is not None and mode != "triton"
    if mode == "hosted":
        return Plan((), can_host, "mode_hosted")
    healthy = [p for p in pods if p.healthy]
    if not healthy:
        host = can_host and failover is not None and failover.on_unavailable
        return Plan((), host, "no_ready_replica")
    admitted = [p for p in healthy if p.admits] if model_admits else []
    if not admitted:
        return Plan((), can_host, "breaker_open")
    limit = failover.queue_time_above_ms if failover else None
    if limit is not None and can_host:
        under = [p for p in admitted if p.queue_ms is None or p.queue_ms <= limit]
        if not under:
            return Plan((), True, "queue_time")
        admitted = under
    n = len(admitted)
    order = sorted(range(n), key=lambda i: (admitted[i].outstanding, (i - rotation) % n))
    tries = max(1, route.retry.max_triton_attempts)
    return Plan(tuple(admitted[i].endpoint for i in order[:tries]), can_host, "triton")


# --- Triton metrics --------------------------------------------------------------------


def queue_counters(metrics_text: str) -> dict[str, tuple[float, float]]:
    """Triton ``/metrics`` → {model: (queue_us_total, successes_total)} summed over versions
    (parsing shared with the operator's collector: :mod:`tritonfleet.desired.triton.metrics`)."""
    return {
        model: (c.queue_us, c.success) for model, c in parse_triton_metrics(metrics_text).items()
    }


def average_queue_ms(before: tuple[float, float] | None, after: tuple[float, float]) -> float:
    """Mean queue time per request between two scrapes (0 when nothing ran:
    an idle model has no queue, which lets spilled traffic come back)."""
    if before is None:
        return 0.0
    d_queue, d_ok = after[0] - before[0], after[1] - before[1]
    if d_ok <= 0 or d_queue < 0:
        return 0.0
    return d_queue / d_ok / 1000.0


# --- the routes file ---------------------------------------------------------------------


class EndpointSpec(ApiModel):
    url: Annotated[str, Field(pattern=r"^https?://[^/]+/?$")] = Field(
        description="Base URL of the pod's Triton HTTP endpoint, e.g. http://10.0.0.7:8000."
    )
    name: str | None = Field(default=None, description="Pod name for headers and metrics.")
    metrics_url: Annotated[str, Field(pattern=r"^https?://.+")] | None = Field(
        default=None, description="Triton's /metrics URL; default: same host, port 8002."
    )


class ProviderSpec(ApiModel):
    base_url: Annotated[str, Field(pattern=r"^https?://.+")]
    model: Annotated[str, Field(min_length=1)]
    api_key_env: str | None = None
    api_key_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("apiKey" in data or "api_key" in data):
            raise ValueError(
                "apiKey: inline API keys are not accepted (they end up in logs and "
                "version control); use apiKeyEnv or apiKeyFile"
            )
        return data

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderSpec:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set at most one of apiKeyEnv, apiKeyFile")
        return self


class TriggersSpec(ApiModel):
    unavailable: bool = True
    queue_time_above_ms: Annotated[float, Field(gt=0)] | None = None


class FailoverFileSpec(ApiModel):
    provider: ProviderSpec
    triggers: TriggersSpec = Field(default_factory=TriggersSpec)
    mode: Mode = "auto"


class OutputsSpec(ApiModel):
    text: str = "text_output"
    prompt_tokens: str | None = "prompt_tokens"
    completion_tokens: str | None = "completion_tokens"
    finish_reason: str | None = "finish_reason"


class MappingSpec(ApiModel):
    """OpenAI ↔ Triton mapping of one model (see docs/gateway.md)."""

    prompt_input: str = "text_input"
    inputs: dict[str, str | None] | None = Field(
        default=None,
        description="OpenAI field → Triton input (null: not mapped). Merged over the defaults "
        "max_tokens, temperature, top_p.",
    )
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    chat_template: str | dict[str, Any] = "chatml"
    extra_inputs: dict[str, Any] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=lambda: ["seed"])
    stream_output: Literal["delta", "cumulative"] = "delta"
    # embeddings
    input: str = "text"
    output: str = "embedding"
    batched: bool = True
    max_batch_size: Annotated[int, Field(ge=0)] = 0

    @field_validator("chat_template")
    @classmethod
    def _known_template(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        template_from(value)
        return value


class TimeoutsSpec(ApiModel):
    connect_ms: Annotated[float, Field(gt=0)] = 1000
    first_byte_ms: Annotated[float, Field(gt=0)] = 30_000
    idle_ms: Annotated[float, Field(gt=0)] = 30_000
    total_ms: Annotated[float, Field(gt=0)] = 300_000


class BreakerSpec(ApiModel):
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    open_ms: Annotated[float, Field(gt=0)] = 1000
    max_open_ms: Annotated[float, Field(gt=0)] = 30_000


class RetrySpec(ApiModel):
    max_triton_attempts: Annotated[int, Field(ge=1, le=10)] = 2
    budget_percent: Annotated[float, Field(ge=0, le=100)] = 20
    min_retries_per_second: Annotated[float, Field(ge=0)] = 10
    max_retry_after_ms: Annotated[float, Field(ge=0)] = 2000
    max_hosted_attempts: Annotated[int, Field(ge=1, le=5)] = 2


class PolicySpec(ApiModel):
    timeouts: TimeoutsSpec | None = None
    breaker: BreakerSpec | None = None
    retry: RetrySpec | None = None


class ModelRouteSpec(PolicySpec):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    triton_model: str | None = Field(
        default=None, description="Name inside Triton (default: name)."
    )
    kind: Kind = "generate"
    decoupled: bool = Field(
        default=False,
        description="The model is decoupled (streams): every request uses generate_stream and "
        "non-streaming answers are assembled by the gateway.",
    )
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    mapping: MappingSpec = Field(default_factory=MappingSpec)
    failover: FailoverFileSpec | None = None


class PriceSpec(ApiModel):
    input: Annotated[float, Field(ge=0)] = 0.0
    output: Annotated[float, Field(ge=0)]


class PricesSpec(ApiModel):
    models: dict[str, PriceSpec] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)
    triton: PriceSpec | None = None


class RoutesFileSpec(ApiModel):
    defaults: PolicySpec = Field(default_factory=PolicySpec)
    models: list[ModelRouteSpec] = Field(default_factory=list)
    prices: PricesSpec | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> RoutesFileSpec:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"models: duplicate model name {m.name!r}")
            seen.add(m.name)
        return self


def _problems(error: ValidationError, prefix: str = "") -> list[str]:
    # Never include the offending input values: the file may hold secrets
    # where they do not belong, and these messages end up in logs.
    out = []
    for e in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        out.append(f"{prefix}{loc}: {e['msg']}" if loc else f"{prefix}{e['msg']}")
    return out


def _timeouts(spec: TimeoutsSpec | None, base: Timeouts) -> Timeouts:
    if spec is None:
        return base
    return Timeouts(
        spec.connect_ms / 1000, spec.first_byte_ms / 1000, spec.idle_ms / 1000, spec.total_ms / 1000
    )


def _breaker(spec: BreakerSpec | None, base: BreakerSettings) -> BreakerSettings:
    if spec is None:
        return base
    return BreakerSettings(spec.failure_threshold, spec.open_ms / 1000, spec.max_open_ms / 1000)


def _retry(spec: RetrySpec | None, base: RetrySettings) -> RetrySettings:
    if spec is None:
        return base
    return RetrySettings(
        spec.max_triton_attempts,
        spec.budget_percent,
        spec.min_retries_per_second,
        spec.max_retry_after_ms / 1000,
        spec.max_hosted_attempts,
    )


def _generate_mapping(spec: MappingSpec, decoupled: bool) -> GenerateMapping:
    inputs: dict[str, str] = dict(GenerateMapping().inputs)
    for name, target in (spec.inputs or {}).items():
        if target is None:
            inputs.pop(name, None)
        else:
            inputs[name] = target
    return GenerateMapping(
        prompt_input=spec.prompt_input,
        inputs=inputs,
        text_output=spec.outputs.text,
        prompt_tokens_output=spec.outputs.prompt_tokens,
        completion_tokens_output=spec.outputs.completion_tokens,
        finish_reason_output=spec.outputs.finish_reason,
        chat_template=template_from(spec.chat_template),
        extra_inputs=dict(spec.extra_inputs),
        ignore=frozenset(spec.ignore),
        stream_output=spec.stream_output,
        decoupled=decoupled,
    )


def _embedding_mapping(spec: MappingSpec) -> EmbeddingMapping:
    return EmbeddingMapping(spec.input, spec.output, spec.batched, spec.max_batch_size)


def _default_metrics_url(url: str) -> str:
    host = url.split("://", 1)[1].rstrip("/").rsplit(":", 1)[0]
    return f"http://{host}:{DEFAULT_TRITON_METRICS_PORT}/metrics"


def _price_table(spec: PricesSpec | None, base: PriceTable | None = None) -> PriceTable:
    base = base or PriceTable()
    if spec is None:
        return base
    prices = dict(base.prices)
    prices.update({k.lower(): Price(v.input, v.output) for k, v in spec.models.items()})
    aliases = dict(base.aliases)
    aliases.update({k.lower(): v.lower() for k, v in spec.aliases.items()})
    triton = Price(spec.triton.input, spec.triton.output) if spec.triton else base.triton
    return PriceTable(prices, aliases, triton)


def load_prices(doc: Any, base: PriceTable | None = None) -> PriceTable:
    """A ``--prices FILE`` document (the ``prices`` section of a routes file)."""
    try:
        spec = PricesSpec.model_validate(doc or {})
    except ValidationError as error:
        raise RoutesError(_problems(error, "prices.")) from None
    return _price_table(spec, base)


def load_routes(doc: Any) -> RouteTable:
    """Parse a routes file document (already YAML-decoded) into a table."""
    if not isinstance(doc, dict):
        raise RoutesError(["the routes file must be a mapping with a `models` list"])
    try:
        spec = RoutesFileSpec.model_validate(doc)
    except ValidationError as error:
        raise RoutesError(_problems(error)) from None
    base_t = _timeouts(spec.defaults.timeouts, Timeouts())
    base_b = _breaker(spec.defaults.breaker, BreakerSettings())
    base_r = _retry(spec.defaults.retry, RetrySettings())
    routes: dict[str, Route] = {}
    for i, m in enumerate(spec.models):
        endpoints = []
        for j, e in enumerate(m.endpoints):
            url = e.url.rstrip("/")
            endpoints.append(
                Endpoint(
                    name=e.name or f"{m.name}-{j}",
                    url=url,
                    metrics_url=e.metrics_url or _default_metrics_url(url),
                )
            )
        failover = None
        if m.failover is not None:
            p = m.failover.provider
            key = (
                ApiKeyRef(env=p.api_key_env, file=p.api_key_file)
                if p.api_key_env or p.api_key_file
                else None
            )
            failover = Failover(
                mode=m.failover.mode,
                hosted=HostedTarget(p.base_url.rstrip("/"), p.model, key),
                on_unavailable=m.failover.triggers.unavailable,
                queue_time_above_ms=m.failover.triggers.queue_time_above_ms,
            )
        if not endpoints and (failover is None or failover.mode == "triton"):
            raise RoutesError([f"models.{i}: needs endpoints, or a failover provider"])
        routes[m.name] = Route(
            name=m.name,
            kind=m.kind,
            triton_model=m.triton_model or m.name,
            endpoints=tuple(endpoints),
            generate=_generate_mapping(m.mapping, m.decoupled) if m.kind == "generate" else None,
            embedding=_embedding_mapping(m.mapping) if m.kind == "embedding" else None,
            failover=failover,
            timeouts=_timeouts(m.timeouts, base_t),
            breaker=_breaker(m.breaker, base_b),
            retry=_retry(m.retry, base_r),
        )
    return RouteTable(routes, _price_table(spec.prices))


# --- routes from the cluster ---------------------------------------------------------------


def ready_endpoints(
    status: ModelStatus | None,
    *,
    http_port: int = DEFAULT_TRITON_HTTP_PORT,
    metrics_port: int = DEFAULT_TRITON_METRICS_PORT,
) -> tuple[Endpoint, ...]:
    """The pods of a status that hold the model Ready at the current revision."""
    if status is None:
        return ()
    out = []
    for pod in status.pods:
        if pod.state != "Ready" or not pod.ip:
            continue
        if status.revision is not None and pod.revision != status.revision:
            continue  # still on the old revision (or not yet reloaded): not this model
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        out.append(
            Endpoint(
                name=pod.name,
                url=f"http://{host}:{http_port}",
                metrics_url=f"http://{host}:{metrics_port}/metrics",
                revision=pod.revision,
            )
        )
    return tuple(out)


class _AnnotationSpec(MappingSpec):
    kind: Kind | None = None


def _cluster_failover(spec: FailoverSpec | None, namespace: str) -> Failover | None:
    if spec is None:
        return None
    ref = spec.provider.api_key_secret
    key = (
        ApiKeyRef(secret_namespace=namespace, secret_name=ref.name, secret_key=ref.key)
        if ref
        else None
    )
    return Failover(
        mode=spec.mode,
        hosted=HostedTarget(spec.provider.base_url.rstrip("/"), spec.provider.model, key),
        on_unavailable=spec.triggers.unavailable,
        queue_time_above_ms=spec.triggers.queue_time_above_ms,
    )


def _guess_kind(input_names: Sequence[str], decoupled: bool) -> Kind | None:
    if "text_input" in input_names or decoupled:
        return "generate"
    if len(input_names) == 1:
        return "embedding"
    return None


@dataclass(frozen=True, slots=True)
class ClusterRoutes:
    table: RouteTable
    problems: tuple[str, ...]  # objects that could not be routed, and why


def openai_name(obj: TritonModel | ModelEnsemble) -> str:
    """The model name clients send (and the gateway's metrics label): the
    ``tritonfleet.io/openai-model`` annotation, else the Triton model name."""
    return (obj.metadata.annotations or {}).get(OPENAI_NAME_ANNOTATION) or obj.triton_name


def routes_from_cluster(
    models: Iterable[TritonModel],
    ensembles: Iterable[ModelEnsemble] = (),
    *,
    prices: PriceTable | None = None,
    http_port: int = DEFAULT_TRITON_HTTP_PORT,
    metrics_port: int = DEFAULT_TRITON_METRICS_PORT,
    defaults: Route | None = None,
) -> ClusterRoutes:
    """Routes for the in-cluster mode, from the objects the gateway watches.

    The OpenAI name is the ``tritonfleet.io/openai-model`` annotation or the
    Triton model name; the mapping comes from the ``tritonfleet.io/openai-mapping``
    annotation, else from the model's tensors by convention (an input named
    ``text_input`` means a generate model, a single input an embedding model).
    Objects sorted by namespace/name, so a duplicate name resolves the same way
    on every gateway replica.
    """
    problems: list[str] = []
    routes: dict[str, Route] = {}
    items: list[tuple[str, TritonModel | ModelEnsemble]] = [
        *(("TritonModel", m) for m in models),
        *(("ModelEnsemble", e) for e in ensembles),
    ]
    items.sort(key=lambda kv: (kv[1].metadata.namespace or "", kv[1].metadata.name, kv[0]))
    base = defaults or Route("", "generate", "", ())
    for kind_name, obj in items:
        meta = obj.metadata
        ns = meta.namespace or "default"
        origin = f"{kind_name} {ns}/{meta.name}"
        annotations = meta.annotations or {}
        name = openai_name(obj)
        if isinstance(obj, TritonModel):
            input_names = [t.name for t in obj.spec.config.inputs]
            output_names = {t.name for t in obj.spec.config.outputs}
            decoupled = bool(obj.spec.config.decoupled)
        else:
            input_names = [t.name for t in obj.spec.inputs]
            output_names = {t.name for t in obj.spec.outputs}
            decoupled = False
        try:
            raw = annotations.get(MAPPING_ANNOTATION)
            spec = _AnnotationSpec.model_validate(yaml.safe_load(raw) or {} if raw else {})
        except (ValidationError, yaml.YAMLError) as error:
            detail = (
                "; ".join(_problems(error)) if isinstance(error, ValidationError) else "bad YAML"
            )
            problems.append(f"{origin}: annotation {MAPPING_ANNOTATION}: {detail}")
            continue
        kind = spec.kind or _guess_kind(input_names, decoupled)
        if kind is None:
            problems.append(
                f"{origin}: cannot tell how to call it from OpenAI; set annotation "
                f"{MAPPING_ANNOTATION} with kind and mapping"
            )
            continue
        if name in routes:
            problems.append(
                f"{origin}: model name {name!r} already served by {routes[name].origin}"
            )
            continue
        generate = embedding = None
        if kind == "generate":
            mapping = spec
            if raw is None:
                # Conventions: leave out token/finish outputs the model lacks.
                outputs = OutputsSpec(
                    prompt_tokens="prompt_tokens" if "prompt_tokens" in output_names else None,
                    completion_tokens=(
                        "completion_tokens" if "completion_tokens" in output_names else None
                    ),
                    finish_reason="finish_reason" if "finish_reason" in output_names else None,
                )
                known = {k: (k if k in input_names else None) for k in GenerateMapping().inputs}
                mapping = _AnnotationSpec(outputs=outputs, inputs=known)
            generate = _generate_mapping(mapping, decoupled)
        else:
            embedding_spec = spec
            if raw is None and input_names and output_names:
                embedding_spec = _AnnotationSpec(
                    input=input_names[0],
                    output=sorted(output_names)[0],
                    batched=(
                        obj.spec.config.max_batch_size > 0
                        if isinstance(obj, TritonModel)
                        else obj.spec.max_batch_size > 0
                    ),
                )
            embedding = _embedding_mapping(embedding_spec)
        routes[name] = Route(
            name=name,
            kind=kind,
            triton_model=obj.triton_name,
            endpoints=ready_endpoints(obj.status, http_port=http_port, metrics_port=metrics_port),
            generate=generate,
            embedding=embedding,
            failover=_cluster_failover(obj.spec.failover, ns),
            timeouts=base.timeouts,
            breaker=base.breaker,
            retry=base.retry,
            origin=origin,
        )
    return ClusterRoutes(RouteTable(routes, prices or PriceTable()), tuple(problems))
