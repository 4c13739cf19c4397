"""Check a ``ModelEnsemble`` against its member ``TritonModel``s and render its
``config.pbtxt``.

Triton only finds a broken ensemble when it loads it, after every member was synced and
loaded. Here the whole pipeline is checked from the specs alone, against each member's
config as Triton will get it (typed fields and ``extra``): members exist, mapped tensors
exist on the members, every consumed tensor has exactly one producer, no cycles, every
ensemble output is produced, nothing is left dangling, and data types and shapes agree
wherever a tensor is used. Each check mirrors a Triton 2.51 rule (core
src/model_config_utils.cc ValidateEnsembleSchedulingConfig / BuildEnsembleGraph and
src/ensemble_scheduler/ensemble_utils.cc ValidateEnsembleConfig / ValidateTensorMapping /
ValidateTensorConsistency). A member whose config lists no inputs (or no outputs) leaves them
to Triton's auto-complete, so mappings onto that side are left for Triton to check. Every
problem is reported, not just the first. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.api.problems import Problem
from tritonfleet.api.triton_config import EnsembleInput, EnsembleOutput
from tritonfleet.desired.triton import wire
from tritonfleet.desired.triton.config import (
    Where,
    final_config,
    merge_extra,
    semantic_problems,
    to_pbtxt,
)
from tritonfleet.desired.triton.proto import mc

EXTRA_PATH = "spec.extra"
# The ModelEnsemble fields that are ModelConfig fields under the same names.
_CONFIG_FIELDS = ("maxBatchSize", "inputs", "outputs", "versionPolicy", "parameters")


@dataclass(frozen=True)
class _Use:
    """One place an ensemble tensor is declared: what Triton infers its type and shape from."""

    where: str  # for messages: "ensemble input 'x'", "step 1 (encoder) output 'y'"
    path: str  # the API path to blame
    data_type: int  # 0: unknown (left to auto-complete)
    dims: tuple[int, ...] | None  # None: unknown
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...] | None:
        if self.dims is None:
            return None
        return (-1, *self.dims) if self.batching else self.dims


def _dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Triton's CompareDimsWithWildcard: same rank, each pair equal or either variable."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _inconsistency(first: _Use, other: _Use) -> str | None:
    """Triton: ValidateTensorConsistency (the type must match; the shape must match with
    wildcards, either as declared or with the batch dimension added to batching models)."""
    if first.data_type and other.data_type and first.data_type != other.data_type:
        return (
            f"data type mismatch: {first.where} is {mc.DataType.Name(first.data_type)}, "
            f"{other.where} is {mc.DataType.Name(other.data_type)}"
        )
    if first.dims is None or other.dims is None:
        return None
    if _dims_match(first.dims, other.dims):
        return None
    assert first.full_dims is not None and other.full_dims is not None
    if _dims_match(first.full_dims, other.full_dims):
        return None
    return (
        f"shape mismatch: {first.where} has {list(first.full_dims)}, "
        f"{other.where} has {list(other.full_dims)} (batch dimension included)"
    )


def _tensor_use(where: str, path: str, tensor: mc.ModelInput, batching: bool) -> _Use:
    dims = tuple(tensor.dims) if tensor.dims else None
    return _Use(where, path, tensor.data_type, dims, batching)


@dataclass
class _Graph:
    """The ensemble's tensors: first declaration of each (Triton compares every later use
    with it), who produces it, and which steps consume it."""

    first: dict[str, _Use]
    producer: dict[str, int | None]  # None: an ensemble input
    consumers: dict[str, list[int]]


def _ensemble_uses(ensemble: ModelEnsemble, graph: _Graph, problems: list[Problem]) -> None:
    batching = ensemble.spec.max_batch_size > 0
    tensors: list[tuple[str, EnsembleInput | EnsembleOutput]] = [
        *(("input", t) for t in ensemble.spec.inputs),
        *(("output", t) for t in ensemble.spec.outputs),
    ]
    for i, (kind, tensor) in enumerate(tensors):
        # Triton: ValidateEnsembleConfig uses an ensemble tensor's reshape when it has one.
        dims = tuple(tensor.reshape) if tensor.reshape is not None else tuple(tensor.dims)
        index = i if kind == "input" else i - len(ensemble.spec.inputs)
        use = _Use(
            f"ensemble {kind} {tensor.name!r}",
            f"spec.{kind}s[{index}]",
            mc.DataType.Value(tensor.data_type),
            dims,
            batching,
        )
        if kind == "input":
            graph.first.setdefault(tensor.name, use)
            graph.producer[tensor.name] = None
        else:
            _declare(graph, tensor.name, use, problems)


def _declare(graph: _Graph, tensor: str, use: _Use, problems: list[Problem]) -> None:
    first = graph.first.get(tensor)
    if first is None:
        graph.first[tensor] = use
        return
    problem = _inconsistency(first, use)
    if problem:
        problems.append(Problem(use.path, f"tensor {tensor!r}: {problem}"))


def _step_problems(
    ensemble: ModelEnsemble,
    configs: Mapping[str, mc.ModelConfig],
    graph: _Graph,
    problems: list[Problem],
) -> None:
    """Triton: ValidateTensorMapping, for each step in order."""
    for i, step in enumerate(ensemble.spec.steps):
        config = configs.get(step.model)
        batching = config is not None and config.max_batch_size > 0
        inputs = {t.name: t for t in reversed(config.input)} if config else {}
        outputs = {t.name: t for t in reversed(config.output)} if config else {}
        label = f"step {i} ({step.model})"
        for member_input, tensor in step.input_map.items():
            path = f"spec.steps[{i}].inputMap.{member_input}"
            graph.consumers.setdefault(tensor, []).append(i)
            if config is None or not config.input:
                continue
            if member_input not in inputs:
                problems.append(
                    Problem(
                        path,
                        f"{step.model!r} has no input {member_input!r} "
                        f"(inputs: {_names(config.input)})",
                    )
                )
                continue
            use = _tensor_use(
                f"{label} input {member_input!r}", path, inputs[member_input], batching
            )
            _declare(graph, tensor, use, problems)
        if config is not None and config.input:
            for name, tensor_config in inputs.items():
                if name not in step.input_map and not tensor_config.optional:
                    problems.append(
                        Problem(
                            f"spec.steps[{i}].inputMap",
                            f"required input {name!r} of {step.model!r} is not mapped",
                        )
                    )
        for member_output, tensor in step.output_map.items():
            path = f"spec.steps[{i}].outputMap.{member_output}"
            producer = graph.producer.get(tensor, -1)
            if producer != -1:
                who = "an ensemble input" if producer is None else f"step {producer}"
                problems.append(
                    Problem(
                        path,
                        f"tensor {tensor!r} is already produced by {who}; every ensemble "
                        "tensor needs exactly one producer",
                    )
                )
                continue
            graph.producer[tensor] = i
            if config is None or not config.output:
                continue
            if member_output not in outputs:
                problems.append(
                    Problem(
                        path,
                        f"{step.model!r} has no output {member_output!r} "
                        f"(outputs: {_names(config.output)})",
                    )
                )
                continue
            use = _tensor_use(
                f"{label} output {member_output!r}", path, outputs[member_output], batching
            )
            _declare(graph, tensor, use, problems)


def _names(tensors: Sequence[mc.ModelInput]) -> str:
    names = sorted({t.name for t in tensors})
    listed = ", ".join(names[:12])
    return listed + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _find_cycle(needs: Mapping[int, set[int]]) -> list[int] | None:
    visiting: list[int] = []
    done: set[int] = set()

    def visit(step: int) -> list[int] | None:
        if step in visiting:
            return [*visiting[visiting.index(step) :], step]
        if step in done:
            return None
        visiting.append(step)
        for dep in sorted(needs[step]):
            cycle = visit(dep)
            if cycle:
                return cycle
        visiting.pop()
        done.add(step)
        return None

    for step in sorted(needs):
        cycle = visit(step)
        if cycle:
            return cycle
    return None


def _flow_problems(ensemble: ModelEnsemble, graph: _Graph, problems: list[Problem]) -> None:
    """Triton: ValidateEnsembleSchedulingConfig (inputs used, outputs written, no unused
    tensors) and the steps' dependency order."""
    steps = ensemble.spec.steps
    needs: dict[int, set[int]] = {i: set() for i in range(len(steps))}
    for i, step in enumerate(steps):
        for member_input, tensor in step.input_map.items():
            if tensor not in graph.producer:
                problems.append(
                    Problem(
                        f"spec.steps[{i}].inputMap.{member_input}",
                        f"tensor {tensor!r} is not an ensemble input or any step's output",
                    )
                )
                continue
            producer = graph.producer[tensor]
            if producer is not None:
                needs[i].add(producer)
    cycle = _find_cycle(needs)
    if cycle:
        path = " → ".join(f"step {s} ({steps[s].model})" for s in cycle)
        problems.append(Problem("spec.steps", f"the steps form a cycle: {path}"))
    outputs = {t.name for t in ensemble.spec.outputs}
    for i, name in enumerate(t.name for t in ensemble.spec.outputs):
        if graph.producer.get(name) is None:
            problems.append(
                Problem(
                    f"spec.outputs[{i}]", f"ensemble output {name!r} is not produced by any step"
                )
            )
    for i, name in enumerate(t.name for t in ensemble.spec.inputs):
        if name not in graph.consumers:
            problems.append(
                Problem(f"spec.inputs[{i}]", f"ensemble input {name!r} is not used by any step")
            )
    for i, step in enumerate(steps):
        for member_output, tensor in step.output_map.items():
            if tensor not in graph.consumers and tensor not in outputs:
                problems.append(
                    Problem(
                        f"spec.steps[{i}].outputMap.{member_output}",
                        f"tensor {tensor!r} is neither used by a step nor an ensemble output",
                    )
                )


def _member_problems(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    configs: Mapping[str, mc.ModelConfig],
    invalid_members: Collection[str],
) -> list[Problem]:
    problems = []
    namespace = ensemble.metadata.namespace or "default"
    for i, step in enumerate(ensemble.spec.steps):
        config = configs.get(step.model)
        if step.model not in members and step.model in invalid_members:
            problems.append(
                Problem(
                    f"spec.steps[{i}].model", f"TritonModel {step.model!r} is invalid; fix it first"
                )
            )
        elif step.model not in members:
            problems.append(
                Problem(
                    f"spec.steps[{i}].model",
                    f"TritonModel {step.model!r} not found in namespace {namespace}",
                )
            )
        elif config is not None and 0 < config.max_batch_size < ensemble.spec.max_batch_size:
            # Triton: ValidateEnsembleConfig checks batching members only ("batchable ensemble
            # can include non-batchable models").
            problems.append(
                Problem(
                    "spec.maxBatchSize",
                    f"{ensemble.spec.max_batch_size} exceeds maxBatchSize "
                    f"{config.max_batch_size} of member {step.model!r}",
                )
            )
    return problems


def member_configs(members: Mapping[str, TritonModel]) -> dict[str, mc.ModelConfig]:
    """Each member's config as Triton gets it (``extra`` merged when it merges)."""
    return {
        name: final_config(member.triton_name, member.spec.config)[0]
        for name, member in members.items()
    }


def ensemble_problems(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    invalid_members: Collection[str] = (),
) -> list[Problem]:
    """Every problem with the ensemble given the member TritonModels it names.

    ``invalid_members`` are TritonModels that exist but failed their own
    validation: they are reported as such, not as missing.
    """
    problems: list[Problem] = []
    if not MODEL_NAME_RE.match(ensemble.triton_name):
        problems.append(
            Problem("spec.modelName", f"{ensemble.triton_name!r} is not a valid Triton model name")
        )
    configs = member_configs(members)
    problems += _member_problems(ensemble, members, configs, invalid_members)
    graph = _Graph({}, {}, {})
    _ensemble_uses(ensemble, graph, problems)
    _step_problems(ensemble, configs, graph, problems)
    _flow_problems(ensemble, graph, problems)
    return problems


# --- rendering -----------------------------------------------------------------------------


def build_ensemble_config(
    ensemble: ModelEnsemble, members: Mapping[str, TritonModel]
) -> mc.ModelConfig:
    """The ensemble's typed config (``extra`` not applied)."""
    config = mc.ModelConfig(name=ensemble.triton_name, platform="ensemble")
    spec = ensemble.spec.to_wire()
    wire.fill(
        config,
        {k: v for k, v in spec.items() if k in _CONFIG_FIELDS},
    )
    for step in ensemble.spec.steps:
        member = members.get(step.model)
        item = config.ensemble_scheduling.step.add(
            model_name=member.triton_name if member else step.model,
            model_version=step.model_version,
        )
        for key, value in sorted(step.input_map.items()):
            item.input_map[key] = value
        for key, value in sorted(step.output_map.items()):
            item.output_map[key] = value
    return config


def _extra_problems(typed: mc.ModelConfig, final: mc.ModelConfig) -> list[Problem]:
    """What ``extra`` must not do to an ensemble (Triton: ValidateModelConfig, "Ensemble model
    ... must have platform type 'ensemble' and empty backend type";
    ValidateEnsembleSchedulingConfig, no instance_group, optimization or model_warmup)."""
    problems = []

    def refuse(message: str) -> None:
        problems.append(Problem(EXTRA_PATH, message))

    if final.name != typed.name:
        refuse("must not change the model name; set spec.modelName")
    if final.platform != "ensemble" or final.backend:
        refuse("must not set platform or backend: an ensemble has platform 'ensemble' only")
    if final.WhichOneof("scheduling_choice") != "ensemble_scheduling":
        refuse(f"sets {final.WhichOneof('scheduling_choice')}, which replaces the ensemble's steps")
    elif list(final.ensemble_scheduling.step) != list(typed.ensemble_scheduling.step):
        refuse("must not add or change steps; use spec.steps")
    for field, label in (
        ("instance_group", "instance_group"),
        ("model_warmup", "model_warmup"),
    ):
        if len(getattr(final, field)):
            refuse(f"sets {label}, which Triton refuses on an ensemble")
    if final.HasField("optimization"):
        refuse("sets optimization, which Triton refuses on an ensemble")
    return problems


def render_ensemble_config(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    invalid_members: Collection[str] = (),
) -> tuple[str, list[Problem]]:
    """``config.pbtxt`` of the ensemble, with every problem found (render only if none)."""
    problems = ensemble_problems(ensemble, members, invalid_members)
    typed = build_ensemble_config(ensemble, members)
    where = Where("spec")
    problems += semantic_problems(typed, where)
    final = typed
    if ensemble.spec.extra:
        merged = mc.ModelConfig()
        merged.CopyFrom(typed)
        extra_problems = merge_extra(merged, ensemble.spec.extra, EXTRA_PATH)
        if not extra_problems:
            final = merged
            extra_problems = _extra_problems(typed, merged)
            known = set(semantic_problems(typed, where))
            extra_problems += [
                Problem(
                    EXTRA_PATH, f"with extra merged, {p.path.removeprefix('spec.')}: {p.message}"
                )
                for p in semantic_problems(merged, where)
                if p not in known
            ]
        problems += extra_problems
    return to_pbtxt(final), problems
