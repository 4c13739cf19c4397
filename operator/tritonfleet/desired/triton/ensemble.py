"""Check a ``ModelEnsemble`` against its member ``TritonModel``s and render its
``config.pbtxt``.

Triton only finds a broken ensemble when it loads it — after every member was
synced and loaded. Here the whole pipeline is checked from the specs alone:
members exist, mapped tensors exist on the members, every consumed tensor has
exactly one producer, no cycles, every ensemble output is produced, and data
types agree along every edge. Every problem is reported, not just the first.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from tritonfleet.api.base import MODEL_NAME_RE
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TensorSpec, TritonModel
from tritonfleet.api.problems import Problem
from tritonfleet.desired.triton.config import to_pbtxt
from tritonfleet.desired.triton.proto import mc


@dataclass(frozen=True)
class _Producer:
    """Who produces an ensemble tensor: an ensemble input or a step's output."""

    where: str
    data_type: str
    step: int | None  # None for ensemble inputs


def _producers(
    ensemble: ModelEnsemble, members: Mapping[str, TritonModel], problems: list[Problem]
) -> dict[str, _Producer]:
    producers: dict[str, _Producer] = {}
    for ensemble_input in ensemble.spec.inputs:
        producers[ensemble_input.name] = _Producer(
            f"ensemble input {ensemble_input.name!r}", ensemble_input.data_type, None
        )
    for i, step in enumerate(ensemble.spec.steps):
        member = members.get(step.model)
        outputs = {t.name: t for t in member.spec.config.outputs} if member else {}
        for member_output, tensor in step.output_map.items():
            where = f"spec.steps[{i}].outputMap.{member_output}"
            if member is not None and member_output not in outputs:
                problems.append(
                    Problem(
                        where,
                        f"{step.model!r} has no output {member_output!r} "
                        f"(outputs: {', '.join(sorted(outputs)) or 'none'})",
                    )
                )
            if tensor in producers:
                problems.append(
                    Problem(
                        where,
                        f"tensor {tensor!r} is already produced by {producers[tensor].where}; "
                        "every ensemble tensor needs exactly one producer",
                    )
                )
                continue
            data_type = outputs[member_output].data_type if member_output in outputs else ""
            producers[tensor] = _Producer(f"step {i} ({step.model})", data_type, i)
    return producers


def _check_consumers(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    producers: Mapping[str, _Producer],
    problems: list[Problem],
) -> dict[int, set[int]]:
    """Check each step's inputs; return the step dependency graph (step → steps it needs)."""
    needs: dict[int, set[int]] = {i: set() for i in range(len(ensemble.spec.steps))}
    for i, step in enumerate(ensemble.spec.steps):
        member = members.get(step.model)
        inputs = {t.name: t for t in member.spec.config.inputs} if member else {}
        for member_input, tensor in step.input_map.items():
            where = f"spec.steps[{i}].inputMap.{member_input}"
            if member is not None and member_input not in inputs:
                problems.append(
                    Problem(
                        where,
                        f"{step.model!r} has no input {member_input!r} "
                        f"(inputs: {', '.join(sorted(inputs)) or 'none'})",
                    )
                )
            producer = producers.get(tensor)
            if producer is None:
                problems.append(
                    Problem(
                        where, f"tensor {tensor!r} is not an ensemble input or any step's output"
                    )
                )
                continue
            if producer.step is not None:
                needs[i].add(producer.step)
            expected = inputs[member_input].data_type if member_input in inputs else ""
            if expected and producer.data_type and expected != producer.data_type:
                problems.append(
                    Problem(
                        where,
                        f"data type mismatch: {producer.where} gives {producer.data_type}, "
                        f"{step.model!r} input {member_input!r} takes {expected}",
                    )
                )
        if member is not None:
            for name, tensor_spec in inputs.items():
                if name not in step.input_map and not tensor_spec.optional:
                    problems.append(
                        Problem(
                            f"spec.steps[{i}].inputMap",
                            f"required input {name!r} of {step.model!r} is not mapped",
                        )
                    )
    return needs


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


def _check_outputs(
    outputs: list[TensorSpec], producers: Mapping[str, _Producer], problems: list[Problem]
) -> None:
    for i, tensor in enumerate(outputs):
        producer = producers.get(tensor.name)
        where = f"spec.outputs[{i}]"
        if producer is None or producer.step is None:
            problems.append(
                Problem(where, f"ensemble output {tensor.name!r} is not produced by any step")
            )
        elif producer.data_type and producer.data_type != tensor.data_type:
            problems.append(
                Problem(
                    f"{where}.dataType",
                    f"{producer.where} produces {tensor.name!r} as {producer.data_type}, "
                    f"the ensemble declares {tensor.data_type}",
                )
            )


def _check_unused(ensemble: ModelEnsemble, problems: list[Problem]) -> None:
    """Triton refuses ensembles with dangling tensors, so name them here."""
    consumed = {t for step in ensemble.spec.steps for t in step.input_map.values()}
    wanted = consumed | {o.name for o in ensemble.spec.outputs}
    for i, tensor in enumerate(ensemble.spec.inputs):
        if tensor.name not in consumed:
            problems.append(
                Problem(
                    f"spec.inputs[{i}]", f"ensemble input {tensor.name!r} is not used by any step"
                )
            )
    for i, step in enumerate(ensemble.spec.steps):
        for member_output, tensor_name in step.output_map.items():
            if tensor_name not in wanted:
                problems.append(
                    Problem(
                        f"spec.steps[{i}].outputMap.{member_output}",
                        f"tensor {tensor_name!r} is neither used by a step nor an ensemble output",
                    )
                )


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
    for i, step in enumerate(ensemble.spec.steps):
        member = members.get(step.model)
        if member is None and step.model in invalid_members:
            problems.append(
                Problem(
                    f"spec.steps[{i}].model",
                    f"TritonModel {step.model!r} is invalid; fix it first",
                )
            )
        elif member is None:
            problems.append(
                Problem(
                    f"spec.steps[{i}].model",
                    f"TritonModel {step.model!r} not found in namespace "
                    f"{ensemble.metadata.namespace or 'default'}",
                )
            )
        elif ensemble.spec.max_batch_size > member.spec.config.max_batch_size:
            problems.append(
                Problem(
                    "spec.maxBatchSize",
                    f"{ensemble.spec.max_batch_size} exceeds maxBatchSize "
                    f"{member.spec.config.max_batch_size} of member {step.model!r}",
                )
            )
    producers = _producers(ensemble, members, problems)
    needs = _check_consumers(ensemble, members, producers, problems)
    cycle = _find_cycle(needs)
    if cycle:
        path = " → ".join(f"step {s} ({ensemble.spec.steps[s].model})" for s in cycle)
        problems.append(Problem("spec.steps", f"the steps form a cycle: {path}"))
    _check_outputs(ensemble.spec.outputs, producers, problems)
    _check_unused(ensemble, problems)
    return problems


def render_ensemble_config(
    ensemble: ModelEnsemble,
    members: Mapping[str, TritonModel],
    invalid_members: Collection[str] = (),
) -> tuple[str, list[Problem]]:
    """``config.pbtxt`` of the ensemble, with every problem found (render only if none)."""
    problems = ensemble_problems(ensemble, members, invalid_members)
    config = mc.ModelConfig(
        name=ensemble.triton_name,
        platform="ensemble",
        max_batch_size=ensemble.spec.max_batch_size,
    )
    for tensor in ensemble.spec.inputs:
        config.input.add(
            name=tensor.name, data_type=mc.DataType.Value(tensor.data_type), dims=tensor.dims
        )
    for tensor in ensemble.spec.outputs:
        config.output.add(
            name=tensor.name, data_type=mc.DataType.Value(tensor.data_type), dims=tensor.dims
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
    return to_pbtxt(config), problems
