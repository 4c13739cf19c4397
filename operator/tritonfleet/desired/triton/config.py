"""Render a ``TritonModel``'s config into Triton's ``config.pbtxt``, and check it the way
Triton 2.51 will when it loads the model.

The config is built as Triton's own ``ModelConfig`` protobuf (``desired.triton.proto``,
generated at build time from Triton's model_config.proto, through ``wire.fill``) and printed
with ``text_format``, so only fields Triton knows can come out. ``extra`` is parsed into the
same message: a tensor it names like a typed one amends that tensor in place, other tensors
come after the typed ones, and every other field merges as protobuf text does (scalars
override, lists append). Its mistakes are caught here, with line and column, instead of when
Triton loads the model hours later.

The checks are the ones Triton makes at load time that need no model files and no GPU
(core src/model_config_utils.cc, release r24.10); each names the Triton function it mirrors.
Rules that fit a CEL expression live on the API models (with pydantic twins); the ones here
need the whole config. Both run on the config as Triton gets it (``extra`` merged): a problem
that only the merged config has is reported on ``spec.config.extra``. Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import text_format
from pydantic import ValidationError

from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.problems import Problem, problems_from_validation_error
from tritonfleet.api.triton_config import PLATFORM_BACKENDS, ModelConfigSpec
from tritonfleet.desired.triton import wire
from tritonfleet.desired.triton.proto import mc

CONFIG_PATH = "spec.config"
EXTRA_PATH = "spec.config.extra"
TENSORRT_PLATFORM = "tensorrt_plan"


def build_model_config(name: str, spec: ModelConfigSpec) -> mc.ModelConfig:
    """The typed part of the config as a ModelConfig message (``extra`` not applied)."""
    config = mc.ModelConfig(name=name)
    typed = spec.to_wire()
    typed.pop("extra", None)
    wire.fill(config, typed)
    return config


# --- extra -------------------------------------------------------------------------------

_FIELD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:?\s*[^A-Za-z0-9_]*$")


def describe_parse_error(text: str, error: text_format.ParseError) -> str:
    """'line L, column C, field F: what is wrong' from protobuf's terse ParseError."""
    detail = str(error)
    # protobuf formats it as "L:C : 'the line': message"; keep only the message.
    detail = re.sub(r"^\d+:\d+ : ", "", detail)
    detail = re.sub(r"^'.*?': ", "", detail, count=1)
    line, column = error.GetLine(), error.GetColumn() or 0
    if not line:
        return detail
    where = f"line {line}, column {column}"
    lines = text.splitlines()
    if 0 < line <= len(lines):
        match = _FIELD_BEFORE.search(lines[line - 1][: max(column - 1, 0)])
        if match and match.group(1) not in detail:
            where += f", field {match.group(1)}"
    return f"{where}: {detail}"


def _amend_tensors(
    typed: list[mc.ModelInput], patches: list[mc.ModelInput], kind: str
) -> tuple[list[mc.ModelInput], list[Problem]]:
    """Typed tensors with ``extra``'s amendments applied by name; new ones appended."""
    out = list(typed)
    index = {t.name: i for i, t in reversed(list(enumerate(typed)))}
    problems = []
    seen: set[str] = set()
    for patch in patches:
        if patch.name in seen:
            problems.append(
                Problem(EXTRA_PATH, f"{kind} {patch.name!r} appears more than once in extra")
            )
        seen.add(patch.name)
        if patch.name not in index:
            out.append(patch)
            index[patch.name] = len(out) - 1
            continue
        amended = type(patch)()
        amended.CopyFrom(out[index[patch.name]])
        for proto_field, value in patch.ListFields():
            if proto_field.message_type is not None and not proto_field.is_repeated:
                getattr(amended, proto_field.name).CopyFrom(value)
            elif proto_field.is_repeated:
                target = getattr(amended, proto_field.name)
                del target[:]
                target.extend(value)
            else:
                setattr(amended, proto_field.name, value)
        out[index[patch.name]] = amended
    return out, problems


def merge_extra(config: mc.ModelConfig, extra: str, path: str = EXTRA_PATH) -> list[Problem]:
    """Merge raw pbtxt into ``config``: tensors by name, everything else as protobuf text
    merges (repeated fields append, scalars override)."""
    original_name = config.name
    typed_inputs, typed_outputs = list(config.input), list(config.output)
    del config.input[:]
    del config.output[:]
    try:
        text_format.Merge(extra, config)
    except text_format.ParseError as error:
        config.input.extend(typed_inputs)
        config.output.extend(typed_outputs)
        return [Problem(path, describe_parse_error(extra, error))]
    inputs, input_problems = _amend_tensors(typed_inputs, list(config.input), "input")
    outputs, output_problems = _amend_tensors(typed_outputs, list(config.output), "output")
    del config.input[:]
    del config.output[:]
    config.input.extend(inputs)
    config.output.extend(outputs)
    problems = [*input_problems, *output_problems]
    if config.name != original_name:
        problems.append(Problem(path, "must not change the model name; set spec.modelName"))
    return problems


def to_pbtxt(config: mc.ModelConfig) -> str:
    return str(text_format.MessageToString(config))


# --- Triton's load-time checks ---------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """How a check names a part of the config: the API path of the typed field."""

    root: str = CONFIG_PATH

    def tensor(self, kind: str, index: int) -> str:
        return f"{self.root}.{kind}[{index}]"

    def field(self, name: str) -> str:
        return f"{self.root}.{name}"


def effective_platform(config: mc.ModelConfig) -> str | None:
    """The platform Triton validates against after AutoCompleteBackendFields, or None when
    only the model files can tell (no platform and no backend, or tensorflow)."""
    if config.platform:
        return str(config.platform)
    if not config.backend or config.backend == "tensorflow":
        return None
    filled = {b: p for p, b in PLATFORM_BACKENDS.items() if b != "tensorflow"}
    return filled.get(config.backend, "")


def _element_count(dims: Sequence[int]) -> int:
    """Triton's GetElementCount: -1 when any dim is variable, 0 for no dims."""
    if -1 in dims:
        return -1
    return math.prod(dims) if dims else 0


def _element_counts(dims: Sequence[int]) -> list[int]:
    """Element count of each run of fixed dims between variable (-1) ones."""
    counts, current = [], 1
    for dim in dims:
        if dim == -1:
            counts.append(current)
            current = 1
        else:
            current *= dim
    counts.append(current)
    return counts


def _reshape_problem(dims: Sequence[int], shape: Sequence[int], batching: bool) -> str | None:
    """Triton: ValidateIOShape ("cannot have empty reshape for non-batching model", "has
    different size for dims and reshape", "different number of variable-size dimensions")."""
    if not shape and not batching:
        return (
            "reshape: [] (a scalar) needs maxBatchSize > 0: Triton refuses scalar tensors "
            "on a non-batching model"
        )
    if not dims or 0 in dims or 0 in shape:
        return None  # no dims is left to auto-complete; zeros are refused by the API rules
    mismatch = f"dims {list(dims)} and reshape {list(shape)} hold different numbers of elements"
    dims_size, reshape_size = _element_count(dims), _element_count(shape)
    if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
        return mismatch
    if dims_size == -1:
        dims_counts, reshape_counts = _element_counts(dims), _element_counts(shape)
        if len(dims_counts) != len(reshape_counts):
            return (
                f"dims {list(dims)} and reshape {list(shape)} have different numbers of "
                "variable (-1) dimensions"
            )
        if dims_counts != reshape_counts:
            return mismatch
    return None


def _tensor_problems(config: mc.ModelConfig, where: Where) -> Iterator[Problem]:
    batching = config.max_batch_size > 0
    platform = effective_platform(config)
    required: dict[str, int] = {}
    for kind, tensors in (("inputs", config.input), ("outputs", config.output)):
        for i, tensor in enumerate(tensors):
            path = where.tensor(kind, i)
            if kind == "inputs" and not tensor.optional:
                if tensor.name in required:
                    yield Problem(
                        f"{path}.name",
                        f"input {tensor.name!r} is declared twice as required (first at "
                        f"{where.tensor(kind, required[tensor.name])}): Triton 2.51 then "
                        "counts it twice and refuses every request",
                    )
                required.setdefault(tensor.name, i)
            if tensor.HasField("reshape"):
                problem = _reshape_problem(list(tensor.dims), list(tensor.reshape.shape), batching)
                if problem:
                    yield Problem(f"{path}.reshape", problem)
            for flag, label in (
                ("is_shape_tensor", "isShapeTensor"),
                ("is_non_linear_format_io", "isNonLinearFormatIo"),
            ):
                # Triton: ValidateModelInput/ValidateModelOutput, "shape tensors are only
                # supported for TensorRT platform"; ValidateNonLinearFormatIO likewise.
                if getattr(tensor, flag) and platform is not None and platform != TENSORRT_PLATFORM:
                    yield Problem(
                        f"{path}.{label}",
                        f"{label} is only supported on TensorRT models (platform "
                        f"{TENSORRT_PLATFORM}), not on {_runtime(config)}",
                    )


def _runtime(config: mc.ModelConfig) -> str:
    parts = [f"platform {config.platform!r}"] if config.platform else []
    parts += [f"backend {config.backend!r}"] if config.backend else []
    return " and ".join(parts) or "a model without platform or backend"


def _batch_io_problems(config: mc.ModelConfig, where: Where) -> Iterator[Problem]:
    """Triton: ValidateBatchIO ("unknown source input name", "unknown target output name",
    "target output name ... can only be specified once")."""
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    for i, batch_input in enumerate(config.batch_input):
        for name in batch_input.source_input:
            if name not in inputs:
                yield Problem(
                    f"{where.field('batchInputs')}[{i}].sourceInput",
                    f"{name!r} is not an input of the model",
                )
    for i, batch_output in enumerate(config.batch_output):
        path = f"{where.field('batchOutputs')}[{i}]"
        for name in batch_output.source_input:
            if name not in inputs:
                yield Problem(f"{path}.sourceInput", f"{name!r} is not an input of the model")
        seen: set[str] = set()
        for name in batch_output.target_name:
            if name not in outputs:
                yield Problem(f"{path}.targetName", f"{name!r} is not an output of the model")
            if name in seen:
                yield Problem(f"{path}.targetName", f"{name!r} is listed more than once")
            seen.add(name)


def _sequence_problems(config: mc.ModelConfig, where: Where) -> Iterator[Problem]:
    """Triton: GetBooleanSequenceControlProperties / GetTypedSequenceControlProperties (a
    control tensor appears once; each control kind belongs to one tensor)."""
    if not config.HasField("sequence_batching"):
        return
    path = f"{where.field('sequenceBatching')}.controlInputs"
    names: dict[str, int] = {}
    kinds: dict[int, int] = {}
    for i, control_input in enumerate(config.sequence_batching.control_input):
        if control_input.name in names:
            yield Problem(
                f"{path}[{i}].name",
                f"control tensor {control_input.name!r} is listed twice (also at index "
                f"{names[control_input.name]})",
            )
        names.setdefault(control_input.name, i)
        for control in control_input.control:
            if control.kind in kinds and kinds[control.kind] != i:
                kind = mc.ModelSequenceBatching.Control.Kind.Name(control.kind)
                yield Problem(
                    f"{path}[{i}].controls",
                    f"{kind} is already given by control input {kinds[control.kind]}; "
                    "each control kind belongs to one tensor",
                )
            elif control.kind in kinds:
                kind = mc.ModelSequenceBatching.Control.Kind.Name(control.kind)
                yield Problem(f"{path}[{i}].controls", f"{kind} is listed twice")
            kinds.setdefault(control.kind, i)


def _instance_group_problems(config: mc.ModelConfig, where: Where) -> Iterator[Problem]:
    """Triton: ValidateInstanceGroup, "specifies profile field which is only supported for
    TensorRT models"."""
    platform = effective_platform(config)
    if platform is None or platform == TENSORRT_PLATFORM:
        return
    for i, group in enumerate(config.instance_group):
        if group.profile:
            yield Problem(
                f"{where.field('instanceGroups')}[{i}].profile",
                f"profiles are TensorRT optimisation profiles (platform {TENSORRT_PLATFORM}); "
                f"this model has {_runtime(config)}",
            )


SEMANTIC_CHECKS: tuple[Callable[[mc.ModelConfig, Where], Iterator[Problem]], ...] = (
    _tensor_problems,
    _batch_io_problems,
    _sequence_problems,
    _instance_group_problems,
)


def semantic_problems(config: mc.ModelConfig, where: Where = Where()) -> list[Problem]:
    """Triton's load-time checks of a whole config that no single field can make."""
    return [p for check in SEMANTIC_CHECKS for p in check(config, where)]


def rule_problems(config: mc.ModelConfig) -> list[Problem]:
    """The typed API's rules (the CEL rules and their twins) applied to a config, e.g. one
    with ``extra`` merged: the config read back into the API and validated."""
    problems = []
    if config.HasField("ensemble_scheduling"):
        problems.append(
            Problem(
                CONFIG_PATH,
                "ensemble_scheduling turns the model into an ensemble; use a ModelEnsemble "
                "(Triton: ValidateEnsembleSchedulingConfig)",
            )
        )
    try:
        ModelConfigSpec.model_validate(wire.read(config))
    except ValidationError as error:
        problems += problems_from_validation_error(error, CONFIG_PATH)
    return problems


def config_problems(typed: mc.ModelConfig, final: mc.ModelConfig) -> list[Problem]:
    """Every problem Triton would refuse at load time, for the typed config and for the
    final one (``extra`` merged); what only the final one has is blamed on ``extra``."""
    own = semantic_problems(typed)
    if final is typed:
        return own
    known = set(own)
    from_extra = []
    for problem in [*rule_problems(final), *semantic_problems(final)]:
        if problem in known:
            continue
        known.add(problem)
        where = problem.path.removeprefix(CONFIG_PATH).lstrip(".") or "the config"
        from_extra.append(Problem(EXTRA_PATH, f"with extra merged, {where}: {problem.message}"))
    return [*own, *from_extra]


def final_config(name: str, spec: ModelConfigSpec) -> tuple[mc.ModelConfig, list[Problem]]:
    """The config Triton gets (typed fields, then ``extra``) and every problem with it."""
    problems = []
    if not MODEL_NAME_RE.match(name):
        problems.append(Problem("spec.modelName", f"{name!r} is not a valid Triton model name"))
    typed = build_model_config(name, spec)
    final = typed
    if spec.extra:
        final = mc.ModelConfig()
        final.CopyFrom(typed)
        extra_problems = merge_extra(final, spec.extra)
        problems += extra_problems
        if extra_problems:
            final = typed  # extra did not merge: still check the typed part
    return final, problems + config_problems(typed, final)


def render_config(name: str, spec: ModelConfigSpec) -> tuple[str, list[Problem]]:
    """``config.pbtxt`` text for a model, or the problems that stop it from rendering.

    The text is returned even when there are problems (for previews); callers
    must not publish it unless the list is empty.
    """
    config, problems = final_config(name, spec)
    return to_pbtxt(config), problems
