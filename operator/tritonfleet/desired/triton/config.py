"""Render a ``TritonModel``'s typed config into Triton's ``config.pbtxt``.

The config is built as Triton's own ``ModelConfig`` protobuf (the one shipped in
tritonclient) and printed with ``text_format``, so only fields Triton knows can
come out; ``extra`` is parsed into the same message, so its mistakes are caught
here, with line and column, instead of when Triton loads the model hours later.
Pure: no I/O.
"""

from __future__ import annotations

import re

from google.protobuf import text_format

from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.model import (
    DynamicBatching,
    ModelConfigSpec,
    TensorSpec,
    VersionPolicy,
)
from tritonfleet.api.problems import Problem
from tritonfleet.desired.triton.proto import mc


def _tensor_problems(config: mc.ModelConfig, spec: ModelConfigSpec) -> list[Problem]:
    problems = []
    for kind, tensors in (("inputs", config.input), ("outputs", config.output)):
        seen: set[str] = set()
        for i, tensor in enumerate(tensors):
            if tensor.name in seen:
                problems.append(
                    Problem(
                        f"spec.config.{kind}[{i}].name",
                        f"duplicate {kind[:-1]} name {tensor.name!r}",
                    )
                )
            seen.add(tensor.name)
    for i, output in enumerate(spec.outputs):
        if output.optional is not None:
            problems.append(
                Problem(f"spec.config.outputs[{i}].optional", "only inputs can be optional")
            )
    return problems


def _batching_problems(config: mc.ModelConfig, spec: ModelConfigSpec) -> list[Problem]:
    if config.WhichOneof("scheduling_choice") != "dynamic_batching":
        if spec.dynamic_batching is not None:
            chosen = config.WhichOneof("scheduling_choice")
            return [
                Problem(
                    "spec.config.extra",
                    f"sets {chosen}, which replaces dynamicBatching (Triton allows only one "
                    "scheduler); remove one of them",
                )
            ]
        return []
    batching = config.dynamic_batching
    problems = []
    if config.max_batch_size == 0:
        problems.append(
            Problem(
                "spec.config.dynamicBatching",
                "dynamic batching needs maxBatchSize > 0 (the model must support batching)",
            )
        )
    for i, size in enumerate(batching.preferred_batch_size):
        if config.max_batch_size and size > config.max_batch_size:
            problems.append(
                Problem(
                    f"spec.config.dynamicBatching.preferredBatchSize[{i}]",
                    f"{size} exceeds maxBatchSize {config.max_batch_size}",
                )
            )
    return problems


def config_problems(config: mc.ModelConfig, spec: ModelConfigSpec) -> list[Problem]:
    """Semantic problems Triton would refuse at load time, found before it sees them.

    Checked on the final config (``extra`` merged), since that is what Triton
    gets; paths name the typed field a user would change.
    """
    return [*_tensor_problems(config, spec), *_batching_problems(config, spec)]


def _fill_tensor(target: mc.ModelInput | mc.ModelOutput, tensor: TensorSpec) -> None:
    target.name = tensor.name
    target.data_type = mc.DataType.Value(tensor.data_type)
    target.dims.extend(tensor.dims)
    if tensor.reshape is not None:
        target.reshape.shape.extend(tensor.reshape)


def _fill_batching(target: mc.ModelDynamicBatching, batching: DynamicBatching) -> None:
    target.SetInParent()
    target.preferred_batch_size.extend(batching.preferred_batch_size)
    if batching.max_queue_delay_microseconds is not None:
        target.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    if batching.preserve_ordering is not None:
        target.preserve_ordering = batching.preserve_ordering
    if batching.priority_levels is not None:
        target.priority_levels = batching.priority_levels
    if batching.default_priority_level is not None:
        target.default_priority_level = batching.default_priority_level
    policy = batching.default_queue_policy
    if policy is not None:
        queue = target.default_queue_policy
        queue.SetInParent()
        if policy.timeout_action is not None:
            queue.timeout_action = mc.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action)
        if policy.default_timeout_microseconds is not None:
            queue.default_timeout_microseconds = policy.default_timeout_microseconds
        if policy.allow_timeout_override is not None:
            queue.allow_timeout_override = policy.allow_timeout_override
        if policy.max_queue_size is not None:
            queue.max_queue_size = policy.max_queue_size


def _fill_version_policy(target: mc.ModelVersionPolicy, policy: VersionPolicy) -> None:
    if policy.latest is not None:
        target.latest.num_versions = policy.latest.num_versions
    elif policy.all is not None:
        target.all.SetInParent()
    elif policy.specific is not None:
        target.specific.versions.extend(policy.specific.versions)


def build_model_config(name: str, spec: ModelConfigSpec) -> mc.ModelConfig:
    """The typed part of the config as a ModelConfig message (``extra`` not applied)."""
    config = mc.ModelConfig(name=name, max_batch_size=spec.max_batch_size)
    if spec.platform:
        config.platform = spec.platform
    if spec.backend:
        config.backend = spec.backend
    for tensor in spec.inputs:
        item = config.input.add()
        _fill_tensor(item, tensor)
        if tensor.optional is not None:
            item.optional = tensor.optional
    for tensor in spec.outputs:
        _fill_tensor(config.output.add(), tensor)
    if spec.dynamic_batching is not None:
        _fill_batching(config.dynamic_batching, spec.dynamic_batching)
    for group in spec.instance_groups:
        item = config.instance_group.add(
            kind=mc.ModelInstanceGroup.Kind.Value(group.kind), count=group.count
        )
        if group.name:
            item.name = group.name
        if group.gpus is not None:
            item.gpus.extend(group.gpus)
    if spec.version_policy is not None:
        _fill_version_policy(config.version_policy, spec.version_policy)
    for key, value in sorted(spec.parameters.items()):
        config.parameters[key].string_value = value
    if spec.optimization is not None:
        opt = spec.optimization
        if opt.input_pinned_memory is not None:
            config.optimization.input_pinned_memory.enable = opt.input_pinned_memory
        if opt.output_pinned_memory is not None:
            config.optimization.output_pinned_memory.enable = opt.output_pinned_memory
        if opt.graph_level is not None:
            config.optimization.graph.level = opt.graph_level
    if spec.decoupled is not None:
        config.model_transaction_policy.decoupled = spec.decoupled
    return config


_FIELD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*:?\s*[^A-Za-z0-9_]*$")


def _describe_parse_error(text: str, error: text_format.ParseError) -> str:
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


def merge_extra(config: mc.ModelConfig, extra: str, path: str) -> list[Problem]:
    """Merge raw pbtxt into ``config`` (repeated fields append, scalars override)."""
    original_name, original_platform = config.name, config.platform
    try:
        text_format.Merge(extra, config)
    except text_format.ParseError as error:
        return [Problem(path, _describe_parse_error(extra, error))]
    problems = []
    if config.name != original_name:
        problems.append(Problem(path, "must not change the model name; set spec.modelName"))
    if config.platform != original_platform and config.platform == "ensemble":
        problems.append(Problem(path, "must not turn the model into an ensemble"))
    return problems


def to_pbtxt(config: mc.ModelConfig) -> str:
    return str(text_format.MessageToString(config))


def render_config(name: str, spec: ModelConfigSpec) -> tuple[str, list[Problem]]:
    """``config.pbtxt`` text for a model, or the problems that stop it from rendering.

    The text is returned even when there are problems (for previews); callers
    must not publish it unless the list is empty.
    """
    problems = []
    if not MODEL_NAME_RE.match(name):
        problems.append(Problem("spec.modelName", f"{name!r} is not a valid Triton model name"))
    config = build_model_config(name, spec)
    extra_problems = merge_extra(config, spec.extra, "spec.config.extra") if spec.extra else []
    # When extra does not parse, the typed part alone is still checked, so every
    # problem shows up in one pass.
    checked = build_model_config(name, spec) if extra_problems else config
    problems += extra_problems + config_problems(checked, spec)
    return to_pbtxt(config), problems
