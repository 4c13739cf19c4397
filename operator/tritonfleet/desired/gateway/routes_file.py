"""The routes file: its schema, its loader, and the translations both route sources share.

``tritonfleet gateway --routes FILE`` reads a YAML document whose format
docs/gateway.md describes; :func:`load_routes` validates it (every problem
listed, each naming its field, no value echoed) and turns it into a
:class:`~tritonfleet.desired.gateway.routes.RouteTable`. :func:`load_prices`
does the same for its ``prices`` section alone (``--prices FILE``).

The blocks of this file are also the in-cluster vocabulary: a model's
``tritonfleet.io/openai-mapping`` annotation is a :class:`MappingSpec`, and a
``TritonModel``'s ``spec.failover`` has the shape of :class:`FailoverFileSpec`
but for where the key is. So the translations into runtime values -
:func:`generate_mapping`, :func:`embedding_mapping` and the one
:func:`failover_from` - live here, and :mod:`.cluster` uses them too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tritonfleet.api.base import ApiModel
from tritonfleet.api.model import FailoverSpec, FailoverTriggers
from tritonfleet.desired.gateway.openai_mapping import (
    EmbeddingMapping,
    GenerateMapping,
    template_from,
)
from tritonfleet.desired.gateway.prices import Price, PriceTable
from tritonfleet.desired.gateway.routes import (
    DEFAULT_TRITON_METRICS_PORT,
    ApiKeyRef,
    BreakerSettings,
    Endpoint,
    Failover,
    HostedTarget,
    Kind,
    Mode,
    RetrySettings,
    Route,
    RoutesError,
    RouteTable,
    Timeouts,
)

# --- the schema ----------------------------------------------------------------------


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

    def api_key_ref(self) -> ApiKeyRef | None:
        if not (self.api_key_env or self.api_key_file):
            return None
        return ApiKeyRef(env=self.api_key_env, file=self.api_key_file)


class FailoverFileSpec(ApiModel):
    """A TritonModel's ``spec.failover``, with the key from the environment or a file."""

    provider: ProviderSpec
    triggers: FailoverTriggers = Field(default_factory=FailoverTriggers)
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
    answer_ms: Annotated[float, Field(gt=0)] = 120_000


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


def problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per validation error, naming the field (``models.0.endpoints.0.url: ...``)."""
    # Never include the offending input values: the file may hold secrets
    # where they do not belong, and these messages end up in logs.
    out = []
    for e in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        out.append(f"{prefix}{loc}: {e['msg']}" if loc else f"{prefix}{e['msg']}")
    return out


# --- into runtime values ------------------------------------------------------------------


def failover_from(spec: FailoverFileSpec | FailoverSpec, api_key: ApiKeyRef | None) -> Failover:
    """The runtime failover policy of a routes-file entry or a TritonModel's
    ``spec.failover``; ``api_key`` says where the key is (the sources differ only there)."""
    return Failover(
        mode=spec.mode,
        hosted=HostedTarget(spec.provider.base_url.rstrip("/"), spec.provider.model, api_key),
        on_unavailable=spec.triggers.unavailable,
        queue_time_above_ms=spec.triggers.queue_time_above_ms,
    )


def generate_mapping(spec: MappingSpec, decoupled: bool) -> GenerateMapping:
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


def embedding_mapping(spec: MappingSpec) -> EmbeddingMapping:
    return EmbeddingMapping(spec.input, spec.output, spec.batched, spec.max_batch_size)


def _timeouts(spec: TimeoutsSpec | None, base: Timeouts) -> Timeouts:
    if spec is None:
        return base
    return Timeouts(
        spec.connect_ms / 1000,
        spec.first_byte_ms / 1000,
        spec.idle_ms / 1000,
        spec.total_ms / 1000,
        spec.answer_ms / 1000,
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


# --- the loaders ---------------------------------------------------------------------------


def load_prices(doc: Any, base: PriceTable | None = None) -> PriceTable:
    """A ``--prices FILE`` document (the ``prices`` section of a routes file)."""
    try:
        spec = PricesSpec.model_validate(doc or {})
    except ValidationError as error:
        raise RoutesError(problems(error, "prices.")) from None
    return _price_table(spec, base)


def load_routes(doc: Any) -> RouteTable:
    """Parse a routes file document (already YAML-decoded) into a table."""
    if not isinstance(doc, dict):
        raise RoutesError(["the routes file must be a mapping with a `models` list"])
    try:
        spec = RoutesFileSpec.model_validate(doc)
    except ValidationError as error:
        raise RoutesError(problems(error)) from None
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
            failover = failover_from(m.failover, m.failover.provider.api_key_ref())
        if not endpoints and (failover is None or failover.mode == "triton"):
            raise RoutesError([f"models.{i}: needs endpoints, or a failover provider"])
        routes[m.name] = Route(
            name=m.name,
            kind=m.kind,
            triton_model=m.triton_model or m.name,
            endpoints=tuple(endpoints),
            generate=generate_mapping(m.mapping, m.decoupled) if m.kind == "generate" else None,
            embedding=embedding_mapping(m.mapping) if m.kind == "embedding" else None,
            failover=failover,
            timeouts=_timeouts(m.timeouts, base_t),
            breaker=_breaker(m.breaker, base_b),
            retry=_retry(m.retry, base_r),
        )
    return RouteTable(routes, _price_table(spec.prices))
