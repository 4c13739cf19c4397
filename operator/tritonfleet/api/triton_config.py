"""Triton's ``ModelConfig`` as typed API fields: ``TritonModel.spec.config`` and the tensors
and settings a ``ModelEnsemble`` shares with it.

Every field of Triton 2.51's ``model_config.proto`` that a model can carry has a typed field
here, shaped like the proto in camelCase (``max_batch_size`` → ``maxBatchSize``). Two naming
rules differ from the proto and are applied everywhere: a repeated *message* field takes the
plural (``input`` → ``inputs``, ``instance_group`` → ``instanceGroups``, ``model_warmup`` →
``modelWarmups``), and a few one-field wrappers are flattened (``model_transaction_policy {
decoupled }`` → ``decoupled``, ``input_pinned_memory { enable }`` → ``inputPinnedMemory``,
``graph { level }`` → ``graphLevel``, ``reshape { shape }`` → ``reshape``, parameter values
``{ string_value }`` → strings). ``desired/triton/wire.py`` maps between the two and
``docs/triton-config.md`` lists every field. ``extra`` (raw pbtxt) remains for fields newer
than Triton 2.51.

Unset means "Triton's default": no field here has a default that differs from the proto's,
so importing a config and rendering it back gives the same ``ModelConfig``. Cross-field rules
Triton enforces at load time are CEL rules on the model that holds both fields, each with a
pydantic twin that is a *field* validator on the field the error points at, so that every
broken rule of an object is reported in one run (a model-level validator would stop at the
first). The Triton rule each one mirrors is named in its docstring.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tritonfleet.api.base import INT32_MAX, MAX_SAFE_INT, ApiModel, cel, exactly_one

DataType = Literal[
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
]

INT32_MIN = -(2**31)
UINT32_MAX = 2**32 - 1

Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
UInt32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]
# 64-bit fields stop at 2**53 - 1, the largest integer the API server's schema bounds hold.
Int64 = Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
UInt64 = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]

Dim = Annotated[int, Field(ge=-1, le=MAX_SAFE_INT)]
"""A tensor dimension: -1 (variable) or a positive size; 0 is refused as Triton does."""

MAX_DIMS = 16
Dims = Annotated[list[Dim], Field(min_length=1, max_length=MAX_DIMS)]
Reshape = Annotated[list[Dim], Field(max_length=MAX_DIMS)]
Name = Annotated[str, Field(min_length=1, max_length=1024)]
StringMap = dict[str, str]

# Triton's platforms and the backend each belongs to (core src/model_config_utils.cc,
# GetBackendTypeFromPlatform / GetBackendType).
PLATFORM_BACKENDS = {
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
}
KNOWN_BACKENDS = frozenset(PLATFORM_BACKENDS.values())

BATCHING_KINDS = ("CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_END")
CORRID_DATA_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")


def _cel_list(values: Any) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def show(value: Any, limit: int = 60) -> str:
    """A value as the user wrote it, clipped so a huge one does not drown the message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...'"


# --- tensors ----------------------------------------------------------------------------

DIMS_RULE = cel(
    "!has(self.dims) || self.dims.all(d, d != 0)",
    "dimensions must be -1 (variable) or at least 1",
    ".dims",
)
RESHAPE_RULE = cel(
    "!has(self.reshape) || self.reshape.all(d, d != 0)",
    "reshape dimensions must be -1 (variable) or at least 1",
    ".reshape",
)
FORMAT_RULE = cel(
    "!has(self.format) || self.format == 'FORMAT_NONE' || !has(self.dims) || size(self.dims) == 3",
    "format FORMAT_NHWC and FORMAT_NCHW need exactly 3 dims",
    ".format",
)
NON_LINEAR_RULE = cel(
    "!has(self.isNonLinearFormatIo) || !self.isNonLinearFormatIo || !has(self.dims)"
    " || size(self.dims) == 3",
    "isNonLinearFormatIo needs exactly 3 dims",
    ".isNonLinearFormatIo",
)


def _check_dims(dims: list[int] | None, what: str) -> list[int] | None:
    """Triton: ValidateIOShape, "dimension must be integer >= 1, or -1"."""
    if dims is not None and 0 in dims:
        raise ValueError(f"{what} must be -1 (variable) or at least 1, got {dims}")
    return dims


class _Tensor(ApiModel):
    name: Name = Field(description="Tensor name, as the model's code and requests use it.")
    data_type: DataType | None = Field(
        default=None,
        description="Unset: left to Triton's auto-complete, which reads it from the model "
        "(ONNX, TensorRT, TensorFlow, a python model's auto_complete_config).",
    )
    dims: Dims | None = Field(
        default=None,
        description="Shape without the batch dimension; -1 is variable. Unset: auto-complete.",
    )
    reshape: Reshape | None = Field(
        default=None,
        description="Shape the backend sees (Triton's reshape.shape); [] reshapes to a scalar.",
    )

    @field_validator("dims")
    @classmethod
    def _dims_not_zero(cls, dims: list[int] | None) -> list[int] | None:
        return _check_dims(dims, "dimensions")

    @field_validator("reshape")
    @classmethod
    def _reshape_not_zero(cls, reshape: list[int] | None) -> list[int] | None:
        return _check_dims(reshape, "reshape dimensions")


def _three_dims(info: ValidationInfo, what: str) -> None:
    dims = info.data.get("dims")
    if dims is not None and len(dims) != 3:
        raise ValueError(f"{what} needs exactly 3 dims, got {len(dims)} ({dims})")


def _format_needs_three_dims(value: str | None, info: ValidationInfo) -> str | None:
    """Triton: ValidateModelInput, "model input NHWC/NCHW require 3 dims"."""
    if value in ("FORMAT_NHWC", "FORMAT_NCHW"):
        _three_dims(info, f"format {value}")
    return value


def _non_linear_needs_three_dims(value: bool | None, info: ValidationInfo) -> bool | None:
    """Triton: ValidateNonLinearFormatIO, "Non-linear IO format ... requires 3 dims"."""
    if value:
        _three_dims(info, "isNonLinearFormatIo")
    return value


class ModelInput(_Tensor):
    """Triton's ``ModelInput``."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [DIMS_RULE, RESHAPE_RULE, FORMAT_RULE, NON_LINEAR_RULE]
        }
    )

    format: Literal["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"] | None = Field(
        default=None, description="Image layout some backends (and DALI) use."
    )
    optional: bool | None = Field(default=None, description="Requests may leave it out.")
    allow_ragged_batch: bool | None = Field(
        default=None, description="Batch requests whose shapes differ in this input."
    )
    is_shape_tensor: bool | None = Field(default=None, description="TensorRT shape tensor.")
    is_non_linear_format_io: bool | None = Field(
        default=None, description="TensorRT non-linear I/O format (3 dims)."
    )

    _format_rule = field_validator("format")(_format_needs_three_dims)

    _non_linear_rule = field_validator("is_non_linear_format_io")(_non_linear_needs_three_dims)


class ModelOutput(_Tensor):
    """Triton's ``ModelOutput``."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [DIMS_RULE, RESHAPE_RULE, NON_LINEAR_RULE]}
    )

    label_filename: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None,
        description="File in the model directory with one class label per line "
        "(classification extension).",
    )
    is_shape_tensor: bool | None = Field(default=None, description="TensorRT shape tensor.")
    is_non_linear_format_io: bool | None = Field(
        default=None, description="TensorRT non-linear I/O format (3 dims)."
    )

    _non_linear_rule = field_validator("is_non_linear_format_io")(_non_linear_needs_three_dims)


class EnsembleInput(_Tensor):
    """An ensemble's input: Triton has no auto-complete for ensembles, so dataType and dims
    are required; the features a backend reads (shape tensors, labels) have no meaning here."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [DIMS_RULE, RESHAPE_RULE, FORMAT_RULE]}
    )

    data_type: DataType = Field(description="Data type of the tensor (TYPE_FP32, TYPE_STRING...).")
    dims: Dims = Field(description="Shape without the batch dimension; -1 is variable.")
    format: Literal["FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"] | None = Field(
        default=None,
        description="Image layout of the tensor, for image inputs (FORMAT_NHWC, FORMAT_NCHW).",
    )
    optional: bool | None = Field(
        default=None,
        description="Requests may leave it out; the steps it feeds then get no value for it.",
    )
    allow_ragged_batch: bool | None = Field(
        default=None, description="Requests of different shapes may be batched together."
    )

    _format_rule = field_validator("format")(_format_needs_three_dims)


class EnsembleOutput(_Tensor):
    """An ensemble's output (dataType and dims required, as for its inputs)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [DIMS_RULE, RESHAPE_RULE]}
    )

    data_type: DataType = Field(description="Data type of the tensor (TYPE_FP32, TYPE_STRING...).")
    dims: Dims = Field(description="Shape without the batch dimension; -1 is variable.")


BatchInputKind = Literal[
    "BATCH_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT",
    "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO",
    "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE",
    "BATCH_ITEM_SHAPE",
    "BATCH_ITEM_SHAPE_FLATTEN",
]


class BatchInput(ApiModel):
    """Triton's ``BatchInput``: a tensor the batcher makes from a batch (ragged batching)."""

    kind: BatchInputKind | None = Field(
        default=None, description="Unset: BATCH_ELEMENT_COUNT, Triton's default."
    )
    target_name: Annotated[list[Name], Field(max_length=64)] | None = Field(
        default=None,
        description="Names of the extra inputs the model receives with this batch information.",
    )
    # Triton: ValidateBatchIO, "batch input data type must be TYPE_INT32 or TYPE_FP32".
    data_type: Literal["TYPE_INT32", "TYPE_FP32"] = Field(
        description="Data type of those inputs: TYPE_INT32 or TYPE_FP32."
    )
    # Triton: ValidateBatchIO, every kind "expects 1 source input".
    source_input: Annotated[list[Name], Field(min_length=1, max_length=1)] = Field(
        description="The request input the batch information is computed from."
    )


class BatchOutput(ApiModel):
    """Triton's ``BatchOutput``."""

    target_name: Annotated[list[Name], Field(max_length=64)] | None = Field(
        default=None, description="Names of the outputs to scatter back to each request."
    )
    kind: Literal["BATCH_SCATTER_WITH_INPUT_SHAPE"] | None = Field(
        default=None, description="The only kind there is (and Triton's default)."
    )
    # Triton: ValidateBatchIO, "batch output kind ... expects 1 source input".
    source_input: Annotated[list[Name], Field(min_length=1, max_length=1)] = Field(
        description="The request input whose shape each request's output takes."
    )


# --- scheduling -------------------------------------------------------------------------


class QueuePolicy(ApiModel):
    timeout_action: Literal["REJECT", "DELAY"] | None = Field(
        default=None,
        description="What happens to a request that timed out in the queue: REJECT or DELAY.",
    )
    default_timeout_microseconds: UInt64 | None = Field(
        default=None, description="Queue timeout of a request; 0 for none."
    )
    allow_timeout_override: bool | None = Field(
        default=None, description="Requests may set a shorter timeout of their own."
    )
    max_queue_size: UInt32 | None = Field(
        default=None, description="Most requests waiting; more are rejected; 0 for no limit."
    )

    def delays_timed_out_requests(self) -> bool:
        return self.timeout_action == "DELAY" and bool(self.default_timeout_microseconds)


PRIORITY_KEY_PATTERN = r"^[0-9]{1,15}$"


class DynamicBatching(ApiModel):
    """Triton's ``ModelDynamicBatching``. Rules from core src/model_config_utils.cc,
    ValidateModelConfig ("default priority level must be in range", "priority queue policy
    must have priority level in range", "Only one priority level is allowed when
    'preserve_ordering' is true", "Queue policy can not have DELAY ...")."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.defaultPriorityLevel) || self.defaultPriorityLevel == 0"
                    " || (has(self.priorityLevels)"
                    " && self.defaultPriorityLevel <= self.priorityLevels)",
                    "defaultPriorityLevel must not exceed priorityLevels",
                    ".defaultPriorityLevel",
                ),
                cel(
                    "!has(self.priorityLevels) || self.priorityLevels == 0 || "
                    "(has(self.defaultPriorityLevel) && self.defaultPriorityLevel >= 1)",
                    "with priorityLevels set, defaultPriorityLevel must be between 1 and "
                    "priorityLevels",
                    ".defaultPriorityLevel",
                ),
                cel(
                    "!has(self.priorityQueuePolicy) || self.priorityQueuePolicy.all(k,"
                    f" k.matches('{PRIORITY_KEY_PATTERN}') && (!has(self.priorityLevels)"
                    " || self.priorityLevels == 0"
                    " || (int(k) >= 1 && int(k) <= self.priorityLevels)))",
                    "priorityQueuePolicy keys must be priority levels from 1 to priorityLevels",
                    ".priorityQueuePolicy",
                ),
                cel(
                    "!has(self.preserveOrdering) || !self.preserveOrdering"
                    " || !has(self.priorityLevels) || self.priorityLevels <= 1",
                    "preserveOrdering allows only one priority level",
                    ".preserveOrdering",
                ),
                cel(
                    "!has(self.preserveOrdering) || !self.preserveOrdering || ("
                    "(!has(self.defaultQueuePolicy) || !has(self.defaultQueuePolicy.timeoutAction)"
                    " || self.defaultQueuePolicy.timeoutAction != 'DELAY'"
                    " || !has(self.defaultQueuePolicy.defaultTimeoutMicroseconds)"
                    " || self.defaultQueuePolicy.defaultTimeoutMicroseconds == 0)"
                    " && (!has(self.priorityQueuePolicy) || self.priorityQueuePolicy.all(k,"
                    " !has(self.priorityQueuePolicy[k].timeoutAction)"
                    " || self.priorityQueuePolicy[k].timeoutAction != 'DELAY'"
                    " || !has(self.priorityQueuePolicy[k].defaultTimeoutMicroseconds)"
                    " || self.priorityQueuePolicy[k].defaultTimeoutMicroseconds == 0)))",
                    "preserveOrdering cannot delay timed-out requests (timeoutAction DELAY "
                    "with a timeout)",
                    ".preserveOrdering",
                ),
            ]
        }
    )

    preferred_batch_size: (
        Annotated[list[Annotated[int, Field(ge=1, le=INT32_MAX)]], Field(max_length=64)] | None
    ) = Field(
        default=None,
        description="Unset: Triton uses maxBatchSize. Each must not exceed maxBatchSize.",
    )
    max_queue_delay_microseconds: UInt64 | None = Field(
        default=None, description="How long a request may wait for others to form a batch."
    )
    preserve_ordering: bool | None = Field(
        default=None, description="Answer requests in the order they came."
    )
    priority_levels: UInt64 | None = Field(
        default=None,
        description="Number of request priority levels (1 is the highest); 0 for none.",
    )
    default_priority_level: UInt64 | None = Field(
        default=None, description="Priority of requests that set none."
    )
    default_queue_policy: QueuePolicy | None = Field(
        default=None, description="Queue policy of every priority level without its own."
    )
    priority_queue_policy: (
        Annotated[dict[Annotated[str, Field(max_length=15)], QueuePolicy], Field(max_length=64)]
        | None
    ) = Field(default=None, description="Priority level (as a string key) → its queue policy.")

    @model_validator(mode="after")
    def _priorities_and_ordering(self) -> DynamicBatching:
        # One validator for the whole object, so that rules about fields the user left out
        # are checked too; every broken rule is listed in its one message.
        broken = []
        levels = self.priority_levels or 0
        default = self.default_priority_level or 0
        if default and default > levels:
            broken.append(
                f"defaultPriorityLevel must not exceed priorityLevels ({default} > {levels})"
            )
        if levels and not default:
            broken.append(
                "with priorityLevels set, defaultPriorityLevel must be between 1 and "
                f"priorityLevels (priorityLevels {levels}, defaultPriorityLevel {default})"
            )
        for key in self.priority_queue_policy or {}:
            if not key.isascii() or not key.isdigit() or (levels and not 1 <= int(key) <= levels):
                broken.append(
                    "priorityQueuePolicy keys must be priority levels from 1 to priorityLevels"
                    f" (got {show(key)}, priorityLevels {levels})"
                )
        if self.preserve_ordering and levels > 1:
            broken.append(f"preserveOrdering allows only one priority level (got {levels})")
        policies = [self.default_queue_policy, *(self.priority_queue_policy or {}).values()]
        if self.preserve_ordering and any(
            p is not None and p.delays_timed_out_requests() for p in policies
        ):
            broken.append(
                "preserveOrdering cannot delay timed-out requests (timeoutAction DELAY with a "
                "timeout)"
            )
        if broken:
            raise ValueError("; ".join(broken))
        return self


class SequenceControl(ApiModel):
    """Triton's ``ModelSequenceBatching.Control``. Rules from core src/model_config_utils.cc,
    GetBooleanSequenceControlProperties and GetTypedSequenceControlProperties."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.kind == 'CONTROL_SEQUENCE_CORRID' || [has(self.int32FalseTrue),"
                    " has(self.fp32FalseTrue), has(self.boolFalseTrue)].filter(x, x).size() == 1",
                    "a START, END or READY control needs exactly one of int32FalseTrue, "
                    "fp32FalseTrue, boolFalseTrue",
                ),
                cel(
                    "self.kind != 'CONTROL_SEQUENCE_CORRID' || (!has(self.int32FalseTrue)"
                    " && !has(self.fp32FalseTrue) && !has(self.boolFalseTrue)"
                    f" && has(self.dataType) && self.dataType in {_cel_list(CORRID_DATA_TYPES)})",
                    "a CORRID control takes a dataType (TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                    "TYPE_INT32 or TYPE_STRING) and no false/true values",
                ),
            ]
        }
    )

    kind: Literal[
        "CONTROL_SEQUENCE_START",
        "CONTROL_SEQUENCE_READY",
        "CONTROL_SEQUENCE_END",
        "CONTROL_SEQUENCE_CORRID",
    ] = Field(description="Which control this input carries (start, end, ready, correlation id).")
    int32_false_true: Annotated[list[Int32], Field(min_length=2, max_length=2)] | None = Field(
        default=None, description="The INT32 values meaning false and true."
    )
    fp32_false_true: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        default=None, description="The FP32 values meaning false and true."
    )
    bool_false_true: Annotated[list[bool], Field(min_length=2, max_length=2)] | None = Field(
        default=None, description="The BOOL values meaning false and true."
    )
    data_type: DataType | None = Field(
        default=None,
        description="Data type of a correlation id control (TYPE_UINT64 or TYPE_STRING).",
    )

    @model_validator(mode="after")
    def _values_fit_the_kind(self) -> SequenceControl:
        given = [
            f
            for f, v in (
                ("int32FalseTrue", self.int32_false_true),
                ("fp32FalseTrue", self.fp32_false_true),
                ("boolFalseTrue", self.bool_false_true),
            )
            if v is not None
        ]
        if self.kind in BATCHING_KINDS and len(given) != 1:
            raise ValueError(
                "a START, END or READY control needs exactly one of int32FalseTrue, "
                f"fp32FalseTrue, boolFalseTrue (got {', '.join(given) or 'none'})"
            )
        if self.kind == "CONTROL_SEQUENCE_CORRID" and (
            given or self.data_type not in CORRID_DATA_TYPES
        ):
            raise ValueError(
                "a CORRID control takes a dataType (TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                "TYPE_INT32 or TYPE_STRING) and no false/true values "
                f"(got dataType {self.data_type}{', ' if given else ''}{', '.join(given)})"
            )
        return self


class SequenceControlInput(ApiModel):
    name: Name = Field(description="Name of the model input that receives the controls.")
    controls: Annotated[list[SequenceControl], Field(max_length=8)] | None = Field(
        default=None, description="The controls Triton sets in that input."
    )


def at_most_one_rule(*wire_fields: str) -> dict[str, Any]:
    checks = ", ".join(f"has(self.{f})" for f in wire_fields)
    return cel(
        f"[{checks}].filter(x, x).size() <= 1", f"set at most one of {', '.join(wire_fields)}"
    )


class InitialState(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [at_most_one_rule("zeroData", "dataFile")]}
    )

    data_type: DataType | None = Field(default=None, description="Data type of the initial state.")
    dims: Annotated[list[Int64], Field(max_length=MAX_DIMS)] | None = Field(
        default=None, description="Shape of the initial state."
    )
    zero_data: bool | None = Field(default=None, description="Initialise the state with zeros.")
    data_file: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="File in the model directory with the initial state's bytes."
    )
    name: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Name of this initial state."
    )

    @model_validator(mode="after")
    def _one_source(self) -> InitialState:
        exactly_one(self, ("zero_data", "data_file"), at_most=True)
        return self


class SequenceState(ApiModel):
    """Triton's implicit state (``ModelSequenceBatching.State``)."""

    input_name: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Input tensor that receives the state."
    )
    output_name: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Output tensor that produces the next state."
    )
    data_type: DataType | None = Field(default=None, description="Data type of the state.")
    dims: Annotated[list[Int64], Field(max_length=MAX_DIMS)] | None = Field(
        default=None, description="Shape of the state."
    )
    initial_states: Annotated[list[InitialState], Field(max_length=64)] | None = Field(
        default=None, description="Values the state starts a sequence with."
    )
    use_same_buffer_for_input_output: bool | None = Field(
        default=None, description="The state's input and output share one buffer."
    )
    use_growable_memory: bool | None = Field(
        default=None, description="The state's buffer grows as needed (TensorRT-LLM style)."
    )


class SequenceDirect(ApiModel):
    max_queue_delay_microseconds: UInt64 | None = Field(
        default=None, description="How long a sequence request may wait for a batch slot's batch."
    )
    # Triton: ValidateModelConfig, "minimum slot utilization must be in range (0.0, 1.0]".
    minimum_slot_utilization: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="Fraction of batch slots that must be busy before a batch runs."
    )


class SequenceOldest(ApiModel):
    max_candidate_sequences: Int32 | None = Field(
        default=None, description="Most sequences considered for a batch at once."
    )
    preferred_batch_size: (
        Annotated[list[Annotated[int, Field(ge=1, le=INT32_MAX)]], Field(max_length=64)] | None
    ) = Field(
        default=None,
        description="Batch sizes to aim for; each must not exceed maxBatchSize.",
    )
    max_queue_delay_microseconds: UInt64 | None = Field(
        default=None, description="How long a request may wait to form a batch."
    )
    preserve_ordering: bool | None = Field(
        default=None, description="Answer requests in the order they came."
    )


class SequenceBatching(ApiModel):
    """Triton's ``ModelSequenceBatching`` (stateful models)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [at_most_one_rule("direct", "oldest")]}
    )

    direct: SequenceDirect | None = Field(
        default=None, description="The direct strategy: each sequence keeps one batch slot."
    )
    oldest: SequenceOldest | None = Field(
        default=None, description="The oldest strategy: batches from the oldest waiting sequences."
    )
    max_sequence_idle_microseconds: UInt64 | None = Field(
        default=None, description="A sequence idle this long is ended and its slot freed."
    )
    control_inputs: Annotated[list[SequenceControlInput], Field(max_length=16)] | None = Field(
        default=None,
        description="Inputs through which Triton tells the model about sequence starts, ends and "
        "ids.",
    )
    states: Annotated[list[SequenceState], Field(max_length=64)] | None = Field(
        default=None,
        description="Implicit state Triton keeps for the model between the requests of a sequence.",
    )
    iterative_sequence: bool | None = Field(
        default=None,
        description="The model calls itself on a sequence's requests (iterative decoding).",
    )

    @model_validator(mode="after")
    def _one_strategy(self) -> SequenceBatching:
        exactly_one(self, ("direct", "oldest"), at_most=True)
        return self


# --- instances --------------------------------------------------------------------------


class RateLimiterResource(ApiModel):
    model_config = ConfigDict(populate_by_name=True)

    name: Name = Field(description="Name of the resource an instance needs to run.")
    global_: bool | None = Field(
        default=None,
        alias="global",
        description="The resource is shared by every device, not per device.",
    )
    count: UInt32 | None = Field(default=None, description="How much of it an execution uses.")


class RateLimiter(ApiModel):
    resources: Annotated[list[RateLimiterResource], Field(max_length=64)] | None = Field(
        default=None,
        description="Resources an instance needs before it runs (with Triton's rate limiter on).",
    )
    priority: UInt32 | None = Field(
        default=None, description="Weight of the instance when several wait for the same resources."
    )


class SecondaryDevice(ApiModel):
    kind: Literal["KIND_NVDLA"] | None = Field(
        default=None, description="The only kind there is (and Triton's default)."
    )
    device_id: Int64 | None = Field(default=None, description="Id of the secondary device.")


class InstanceGroup(ApiModel):
    """Triton's ``ModelInstanceGroup``. Rules from core src/model_config_utils.cc,
    ValidateInstanceGroup."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.gpus) || size(self.gpus) == 0 || self.kind == 'KIND_GPU'"
                    " || self.kind == 'KIND_AUTO'",
                    "only KIND_GPU and KIND_AUTO instance groups can list gpus",
                    ".gpus",
                )
            ]
        }
    )

    name: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Name of the group."
    )
    kind: Literal["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"] = Field(
        default="KIND_AUTO",
        description="Where its instances run: KIND_GPU, KIND_CPU, KIND_MODEL or KIND_AUTO.",
    )
    count: Annotated[int, Field(ge=1, le=INT32_MAX)] | None = Field(
        default=None,
        description="Instances per device. Unset: Triton's default (1; 2 on CPU for the "
        "onnxruntime and tensorflow backends).",
    )
    rate_limiter: RateLimiter | None = Field(
        default=None, description="Resources and priority of its instances for the rate limiter."
    )
    gpus: (
        Annotated[list[Annotated[int, Field(ge=0, le=INT32_MAX)]], Field(max_length=64)] | None
    ) = Field(
        default=None,
        description="GPUs (by index in the pod) its instances run on; all the pod's GPUs if unset.",
    )
    secondary_devices: Annotated[list[SecondaryDevice], Field(max_length=16)] | None = Field(
        default=None, description="Secondary devices of its instances (e.g. NVDLA)."
    )
    # Triton: ValidateInstanceGroup, a profile is "the string representation of a
    # non-negative integer" (TensorRT optimisation profile index).
    profile: (
        Annotated[list[Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]], Field(max_length=64)] | None
    ) = Field(default=None, description="TensorRT optimisation profiles its instances use.")
    passive: bool | None = Field(
        default=None, description="Loaded but not scheduled by Triton (the backend drives it)."
    )
    host_policy: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Host policy (NUMA placement) of its instances."
    )

    @field_validator("gpus")
    @classmethod
    def _gpus_only_on_gpu_kinds(cls, gpus: list[int] | None, info: ValidationInfo) -> Any:
        kind = info.data.get("kind", "KIND_AUTO")
        if gpus and kind not in ("KIND_GPU", "KIND_AUTO"):
            raise ValueError(
                f"only KIND_GPU and KIND_AUTO instance groups can list gpus (kind {kind}, "
                f"gpus {gpus})"
            )
        return gpus


# --- versions, optimisation, warmup -------------------------------------------------------


class LatestVersions(ApiModel):
    num_versions: Annotated[int, Field(ge=1, le=UINT32_MAX)] = Field(
        default=1, description="Serve the newest this many versions."
    )


class SpecificVersions(ApiModel):
    versions: Annotated[
        list[Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]], Field(min_length=1, max_length=256)
    ] = Field(description="Serve exactly these versions.")


class AllVersions(ApiModel):
    pass


class VersionPolicy(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.latest), has(self.all), has(self.specific)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of latest, all, specific",
                )
            ]
        }
    )

    latest: LatestVersions | None = Field(default=None, description="Serve the newest versions.")
    all: AllVersions | None = Field(default=None, description="Serve every version present.")
    specific: SpecificVersions | None = Field(
        default=None, description="Serve the versions listed."
    )

    @model_validator(mode="after")
    def _exactly_one_policy(self) -> VersionPolicy:
        exactly_one(self, ("latest", "all", "specific"))
        return self


class GraphShape(ApiModel):
    dim: Annotated[list[Int64], Field(max_length=MAX_DIMS)] | None = Field(
        default=None, description="Shape of the input for this CUDA graph."
    )


class GraphLowerBound(ApiModel):
    batch_size: Int32 | None = Field(
        default=None, description="Smallest batch size the graph serves."
    )
    input: dict[str, GraphShape] | None = Field(
        default=None, description="Smallest input shapes the graph serves, by input name."
    )


class CudaGraphSpec(ApiModel):
    batch_size: Int32 | None = Field(
        default=None, description="Batch size the CUDA graph is captured for."
    )
    input: dict[str, GraphShape] | None = Field(
        default=None, description="Input shapes the CUDA graph is captured for, by input name."
    )
    graph_lower_bound: GraphLowerBound | None = Field(
        default=None, description="Smallest shapes the graph may also serve (padded)."
    )


class CudaOptimization(ApiModel):
    graphs: bool | None = Field(
        default=None, description="Capture CUDA graphs (TensorRT, ONNX Runtime with TensorRT)."
    )
    busy_wait_events: bool | None = Field(
        default=None, description="Busy-wait on CUDA events: lower latency, more CPU."
    )
    graph_specs: Annotated[list[CudaGraphSpec], Field(max_length=256)] | None = Field(
        default=None, description="The shapes to capture CUDA graphs for."
    )
    output_copy_stream: bool | None = Field(
        default=None, description="Copy outputs on a stream of their own."
    )


class ExecutionAccelerator(ApiModel):
    name: Name = Field(description='e.g. "tensorrt", "openvino", "gpu_io".')
    parameters: StringMap | None = Field(
        default=None, description="Parameters of the accelerator (e.g. precision_mode)."
    )


class ExecutionAccelerators(ApiModel):
    gpu_execution_accelerators: (
        Annotated[list[ExecutionAccelerator], Field(max_length=16)] | None
    ) = Field(default=None, description="Accelerators on GPU (e.g. tensorrt for ONNX models).")
    cpu_execution_accelerators: (
        Annotated[list[ExecutionAccelerator], Field(max_length=16)] | None
    ) = Field(default=None, description="Accelerators on CPU (e.g. openvino).")


class Optimization(ApiModel):
    """Triton's ``ModelOptimizationPolicy``."""

    graph_level: Int32 | None = Field(
        default=None, description="graph { level }: backend graph optimisation (e.g. 1 for XLA)."
    )
    priority: Literal["PRIORITY_DEFAULT", "PRIORITY_MAX", "PRIORITY_MIN"] | None = Field(
        default=None, description="Scheduling priority of the model's instances."
    )
    cuda: CudaOptimization | None = Field(default=None, description="CUDA-specific optimisations.")
    execution_accelerators: ExecutionAccelerators | None = Field(
        default=None, description="Accelerators the backend runs the model through."
    )
    input_pinned_memory: bool | None = Field(default=None, description="input_pinned_memory.enable")
    output_pinned_memory: bool | None = Field(
        default=None, description="output_pinned_memory.enable"
    )
    gather_kernel_buffer_threshold: UInt32 | None = Field(
        default=None, description="Use a gather kernel to copy inputs of this many buffers or more."
    )
    eager_batching: bool | None = Field(
        default=None, description="Start a batch before it is full when instances are idle."
    )


class WarmupInput(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                at_most_one_rule("zeroData", "randomData", "inputDataFile")
            ]
        }
    )

    data_type: DataType | None = Field(default=None, description="Data type of the warm-up input.")
    dims: Annotated[list[Int64], Field(max_length=MAX_DIMS)] | None = Field(
        default=None, description="Shape of the warm-up input."
    )
    zero_data: bool | None = Field(default=None, description="Fill it with zeros.")
    random_data: bool | None = Field(default=None, description="Fill it with random data.")
    input_data_file: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="File in the model's warmup directory with its bytes."
    )

    @model_validator(mode="after")
    def _one_source(self) -> WarmupInput:
        exactly_one(self, ("zero_data", "random_data", "input_data_file"), at_most=True)
        return self


class ModelWarmup(ApiModel):
    name: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Name of the warm-up request."
    )
    batch_size: UInt32 | None = Field(
        default=None, description="Batch size of the warm-up request."
    )
    inputs: Annotated[dict[str, WarmupInput], Field(max_length=256)] | None = Field(
        default=None, description="Inputs of the warm-up request, by name."
    )
    count: UInt32 | None = Field(
        default=None, description="How many times it is sent before the model is ready."
    )


class ModelOperations(ApiModel):
    op_library_filename: Annotated[list[Name], Field(max_length=64)] | None = Field(
        default=None, description="Custom operation libraries the backend loads first."
    )


class RepositoryAgent(ApiModel):
    name: Name = Field(description="Name of the repository agent.")
    parameters: StringMap | None = Field(default=None, description="Parameters of the agent.")


class ModelRepositoryAgents(ApiModel):
    agents: Annotated[list[RepositoryAgent], Field(max_length=16)] | None = Field(
        default=None, description="Agents run on the model's files before it loads (e.g. checksum)."
    )


class ResponseCache(ApiModel):
    enable: bool | None = Field(
        default=None,
        description="Cache answers of identical requests (Triton's response cache must be on).",
    )


# --- the config ---------------------------------------------------------------------------

RUNTIME_NAME = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=128)]
MAX_TENSORS = 1024


def _preferred_sizes_fit(sizes: list[int] | None, info: ValidationInfo, where: str) -> None:
    """Triton: ValidateModelConfig, "preferred size must be <= max batch size" (with
    max_batch_size 0 no preferred size fits, but dynamic batching itself is allowed)."""
    if "max_batch_size" not in info.data:  # invalid itself: reported there
        return
    max_batch_size = info.data["max_batch_size"]
    too_big = [s for s in sizes or () if s > max_batch_size]
    if too_big:
        raise ValueError(
            f"{where} {', '.join(map(str, too_big))} exceeds maxBatchSize {max_batch_size}"
            + (" (the model does not batch)" if max_batch_size == 0 else "")
        )


class ModelConfigSpec(ApiModel):
    """Triton's ``ModelConfig`` for one model (the name comes from the object)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.platform) || !has(self.backend)"
                    f" || !(self.backend in {_cel_list(sorted(KNOWN_BACKENDS))})"
                    + "".join(
                        f" || (self.backend == '{b}' && self.platform in "
                        f"{_cel_list(sorted(p for p, pb in PLATFORM_BACKENDS.items() if pb == b))})"
                        for b in sorted(KNOWN_BACKENDS)
                    ),
                    "platform does not belong to backend (tensorflow: tensorflow_graphdef or "
                    "tensorflow_savedmodel, tensorrt: tensorrt_plan, onnxruntime: "
                    "onnxruntime_onnx, pytorch: pytorch_libtorch)",
                    ".platform",
                ),
                cel(
                    "has(self.backend) || !has(self.platform) || self.platform == 'ensemble'"
                    f" || self.platform in {_cel_list(sorted(PLATFORM_BACKENDS))}",
                    "without a backend, platform must be one Triton knows the backend of: "
                    + ", ".join(sorted(PLATFORM_BACKENDS)),
                    ".platform",
                ),
                cel(
                    "!has(self.platform) || self.platform != 'ensemble'",
                    "use a ModelEnsemble for ensembles",
                    ".platform",
                ),
                cel(
                    "!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSize)"
                    " || self.dynamicBatching.preferredBatchSize.all(s, s <= self.maxBatchSize)",
                    "dynamicBatching.preferredBatchSize must not exceed maxBatchSize",
                    ".dynamicBatching.preferredBatchSize",
                ),
                cel(
                    "!has(self.dynamicBatching) || !has(self.sequenceBatching)",
                    "set at most one of dynamicBatching, sequenceBatching",
                    ".sequenceBatching",
                ),
                cel(
                    "!has(self.sequenceBatching) || !has(self.sequenceBatching.oldest)"
                    " || !has(self.sequenceBatching.oldest.preferredBatchSize)"
                    " || self.sequenceBatching.oldest.preferredBatchSize"
                    ".all(s, s <= self.maxBatchSize)",
                    "sequenceBatching.oldest.preferredBatchSize must not exceed maxBatchSize",
                    ".sequenceBatching.oldest.preferredBatchSize",
                ),
                cel(
                    "!has(self.responseCache) || !has(self.responseCache.enable)"
                    " || !self.responseCache.enable || ((!has(self.decoupled)"
                    " || !self.decoupled) && !has(self.sequenceBatching))",
                    "responseCache cannot be enabled for a decoupled or sequence-batched model",
                    ".responseCache.enable",
                ),
            ]
        }
    )

    backend: RUNTIME_NAME | None = Field(
        default=None,
        description="e.g. python, onnxruntime, pytorch, tensorrt, tensorrtllm, vllm, dali. "
        "Unset: Triton's auto-complete picks it from platform, defaultModelFilename or the "
        "model files (model.onnx, model.plan, model.py, ...).",
    )
    platform: RUNTIME_NAME | None = Field(
        default=None,
        description="e.g. onnxruntime_onnx, pytorch_libtorch, tensorrt_plan, "
        "tensorflow_savedmodel.",
        validate_default=True,
    )
    runtime: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="Backend library or python runtime (e.g. model.py)."
    )
    max_batch_size: Annotated[int, Field(ge=0, le=INT32_MAX)] = Field(
        default=0,
        description="Largest batch the model accepts; 0 when it takes no batch dimension.",
    )
    inputs: Annotated[list[ModelInput], Field(max_length=MAX_TENSORS)] = Field(
        default_factory=list,
        description="Unset: Triton's auto-complete reads them from the model where it can.",
    )
    outputs: Annotated[list[ModelOutput], Field(max_length=MAX_TENSORS)] = Field(
        default_factory=list, description="Tensors the model answers with."
    )
    batch_inputs: Annotated[list[BatchInput], Field(max_length=64)] | None = Field(
        default=None, description="Extra inputs Triton computes from the batch (ragged batching)."
    )
    batch_outputs: Annotated[list[BatchOutput], Field(max_length=64)] | None = Field(
        default=None, description="Outputs Triton scatters back to each request of a batch."
    )
    dynamic_batching: DynamicBatching | None = Field(
        default=None, description="Triton groups requests into batches for the model."
    )
    sequence_batching: SequenceBatching | None = Field(
        default=None,
        description="Requests form sequences routed to the same instance (stateful models).",
    )
    instance_groups: Annotated[list[InstanceGroup], Field(max_length=64)] = Field(
        default_factory=list,
        description="How many instances of the model run, and on which devices.",
    )
    version_policy: VersionPolicy | None = Field(
        default=None, description="Which versions of the model Triton serves."
    )
    parameters: StringMap = Field(
        default_factory=dict,
        description="Backend parameters; values are strings (quote numbers and booleans).",
    )
    optimization: Optimization | None = Field(
        default=None, description="Optimisations: priority, CUDA graphs, accelerators."
    )
    decoupled: bool | None = Field(
        default=None,
        description="model_transaction_policy.decoupled: the model may send any number of "
        "responses per request (streaming LLMs).",
    )
    default_model_filename: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None,
        description="File name of the model in each version directory, if not the backend's "
        "default.",
    )
    cc_model_filenames: StringMap | None = Field(
        default=None, description="GPU compute capability (e.g. 7.5) → model file."
    )
    metric_tags: StringMap | None = Field(
        default=None, description="Labels Triton adds to the model's metrics."
    )
    model_warmups: Annotated[list[ModelWarmup], Field(max_length=16)] | None = Field(
        default=None, description="Requests Triton sends before the model counts as ready."
    )
    model_operations: ModelOperations | None = Field(
        default=None, description="Custom operations the backend needs."
    )
    model_repository_agents: ModelRepositoryAgents | None = Field(
        default=None, description="Repository agents run on the model's files."
    )
    response_cache: ResponseCache | None = Field(
        default=None, description="Triton's response cache for the model."
    )
    extra: str | None = Field(
        default=None,
        description="Raw config.pbtxt text merged last, for ModelConfig fields newer than "
        "the typed ones. A tensor named like a typed one amends it in place.",
    )

    @field_validator("platform")
    @classmethod
    def _platform_fits_backend(cls, platform: str | None, info: ValidationInfo) -> str | None:
        """Triton: ValidateModelConfig ("unexpected 'platform' and 'backend' pair", "unexpected
        platform type") after AutoCompleteBackendFields, which fills the backend in only for
        the platforms of PLATFORM_BACKENDS."""
        if platform == "ensemble":
            raise ValueError("platform 'ensemble': use a ModelEnsemble for ensembles")
        if "backend" not in info.data:  # the backend itself is invalid: reported there
            return platform
        backend = info.data["backend"]
        if (
            platform is not None
            and backend in KNOWN_BACKENDS
            and (PLATFORM_BACKENDS.get(platform) != backend)
        ):
            wanted = sorted(p for p, b in PLATFORM_BACKENDS.items() if b == backend)
            raise ValueError(
                f"platform {show(platform)} does not belong to backend {backend!r} "
                f"(use {' or '.join(wanted)}, or leave platform unset)"
            )
        if platform is not None and backend is None and platform not in PLATFORM_BACKENDS:
            raise ValueError(
                f"platform {show(platform)} needs a backend: without one, platform must be one "
                "Triton knows the backend of: " + ", ".join(sorted(PLATFORM_BACKENDS))
            )
        return platform

    @field_validator("dynamic_batching")
    @classmethod
    def _dynamic_batching_fits(cls, value: DynamicBatching | None, info: ValidationInfo) -> Any:
        if value is not None:
            _preferred_sizes_fit(value.preferred_batch_size, info, "preferredBatchSize")
        return value

    @field_validator("sequence_batching")
    @classmethod
    def _sequence_batching_fits(cls, value: SequenceBatching | None, info: ValidationInfo) -> Any:
        if value is None:
            return value
        if info.data.get("dynamic_batching") is not None:
            raise ValueError(
                "set at most one of dynamicBatching, sequenceBatching (Triton's scheduler is one "
                "or the other)"
            )
        if value.oldest is not None:
            _preferred_sizes_fit(
                value.oldest.preferred_batch_size, info, "oldest.preferredBatchSize"
            )
        return value

    @field_validator("response_cache")
    @classmethod
    def _cache_fits_the_scheduler(cls, value: ResponseCache | None, info: ValidationInfo) -> Any:
        """Triton: ValidateModelConfig, "Response Cache does not currently support model ...
        with 'decoupled' transaction policy" / "with sequence batching scheduler"."""
        if value is not None and value.enable:
            if info.data.get("decoupled"):
                raise ValueError("responseCache cannot be enabled for a decoupled model")
            if info.data.get("sequence_batching") is not None:
                raise ValueError("responseCache cannot be enabled for a sequence-batched model")
        return value
