"""Between the typed API (camelCase wire dicts, as ``ApiModel.to_wire`` gives them) and
Triton's ``ModelConfig`` protobuf, in both directions.

The typed fields of ``api/triton_config.py`` follow the proto field by field, so one walk
over the message descriptors does the mapping; :data:`SHAPES` lists the few places where the
API is not the proto's JSON naming: plural names for repeated messages, one-field wrappers
the API flattens (``graph { level }`` → ``graphLevel``), parameter values carried as plain
strings, and the fields with no typed counterpart (the model's name, ensemble scheduling and
fields newer than Triton 2.51, which go through ``extra``). Rendering (``fill``) and
importing (``read``) use the same table, so what one writes the other reads back.
Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor


@dataclass(frozen=True)
class Shape:
    """How one proto message differs from its API model."""

    renames: Mapping[str, str] = field(default_factory=dict)  # proto field → API wire name
    flattened: Mapping[str, str] = field(default_factory=dict)  # wrapper field → its one field
    flat_map_values: Mapping[str, str] = field(default_factory=dict)  # map → value's one field
    untyped: frozenset[str] = frozenset()  # proto fields without a typed API field
    always: frozenset[str] = frozenset()  # enum fields the API requires even at their default


MODEL_CONFIG = "inference.ModelConfig"

SHAPES: dict[str, Shape] = {
    MODEL_CONFIG: Shape(
        renames={
            "input": "inputs",
            "output": "outputs",
            "batch_input": "batchInputs",
            "batch_output": "batchOutputs",
            "instance_group": "instanceGroups",
            "model_warmup": "modelWarmups",
            "model_transaction_policy": "decoupled",
        },
        flattened={"model_transaction_policy": "decoupled"},
        flat_map_values={"parameters": "string_value"},
        # ensemble_scheduling belongs to ModelEnsemble; model_metrics is newer than 2.51.
        untyped=frozenset({"name", "ensemble_scheduling", "model_metrics"}),
    ),
    "inference.ModelInput": Shape(flattened={"reshape": "shape"}),
    "inference.ModelOutput": Shape(flattened={"reshape": "shape"}),
    "inference.BatchInput": Shape(always=frozenset({"data_type"})),
    "inference.ModelOptimizationPolicy": Shape(
        renames={"graph": "graphLevel"},
        flattened={
            "graph": "level",
            "input_pinned_memory": "enable",
            "output_pinned_memory": "enable",
        },
    ),
    "inference.ModelOptimizationPolicy.Cuda": Shape(renames={"graph_spec": "graphSpecs"}),
    "inference.ModelOptimizationPolicy.ExecutionAccelerators": Shape(
        renames={
            "gpu_execution_accelerator": "gpuExecutionAccelerators",
            "cpu_execution_accelerator": "cpuExecutionAccelerators",
        }
    ),
    "inference.ModelSequenceBatching": Shape(
        renames={"control_input": "controlInputs", "state": "states"}
    ),
    "inference.ModelSequenceBatching.ControlInput": Shape(renames={"control": "controls"}),
    "inference.ModelSequenceBatching.Control": Shape(always=frozenset({"kind"})),
    "inference.ModelSequenceBatching.State": Shape(renames={"initial_state": "initialStates"}),
}

_PLAIN = Shape()


def shape_of(descriptor: Descriptor) -> Shape:
    return SHAPES.get(descriptor.full_name, _PLAIN)


def api_name(descriptor: Descriptor, proto_field: FieldDescriptor) -> str:
    return shape_of(descriptor).renames.get(proto_field.name, proto_field.json_name)


def _is_map(proto_field: FieldDescriptor) -> bool:
    message = proto_field.message_type
    return message is not None and message.GetOptions().map_entry


def _is_repeated(proto_field: FieldDescriptor) -> bool:
    return bool(proto_field.is_repeated)


def _to_proto_scalar(proto_field: FieldDescriptor, value: Any) -> Any:
    if proto_field.enum_type is not None:
        return proto_field.enum_type.values_by_name[value].number
    return value


def _from_proto_scalar(proto_field: FieldDescriptor, value: Any) -> Any:
    if proto_field.enum_type is not None:
        enum_value = proto_field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if proto_field.type == FieldDescriptor.TYPE_FLOAT:
        return float32_value(value)
    return value


def float32_value(value: float) -> float:
    """The shortest decimal that is the same float32 (0.1, not 0.10000000149011612)."""
    packed = struct.pack("<f", value)
    for digits in range(1, 18):
        candidate = float(f"{value:.{digits}g}")
        try:
            if struct.pack("<f", candidate) == packed:
                return candidate
        except OverflowError:
            continue  # rounding up near the float32 maximum left its range: more digits
    return value


def fields_by_api_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    shape = shape_of(descriptor)
    return {api_name(descriptor, f): f for f in descriptor.fields if f.name not in shape.untyped}


def fill(message: Any, wire: Mapping[str, Any]) -> None:
    """Set ``message``'s fields from an API wire dict (unset keys stay unset).

    Raises KeyError for a key that is not a typed field of the message.
    """
    descriptor = message.DESCRIPTOR
    shape = shape_of(descriptor)
    by_name = fields_by_api_name(descriptor)
    for key, value in wire.items():
        proto_field = by_name[key]
        name = proto_field.name
        if name in shape.flattened:
            inner_name = shape.flattened[name]
            wrapper = getattr(message, name)
            wrapper.SetInParent()
            inner = wrapper.DESCRIPTOR.fields_by_name[inner_name]
            if _is_repeated(inner):
                getattr(wrapper, inner_name).extend(_to_proto_scalar(inner, v) for v in value)
            else:
                setattr(wrapper, inner_name, _to_proto_scalar(inner, value))
        elif _is_map(proto_field):
            _fill_map(message, proto_field, value, shape.flat_map_values.get(name))
        elif proto_field.message_type is not None and _is_repeated(proto_field):
            target = getattr(message, name)
            for item in value:
                fill(target.add(), item)
        elif proto_field.message_type is not None:
            sub = getattr(message, name)
            sub.SetInParent()
            fill(sub, value)
        elif _is_repeated(proto_field):
            getattr(message, name).extend(_to_proto_scalar(proto_field, v) for v in value)
        else:
            setattr(message, name, _to_proto_scalar(proto_field, value))


def _fill_map(
    message: Any, proto_field: FieldDescriptor, value: Mapping[str, Any], flat_inner: str | None
) -> None:
    target = getattr(message, proto_field.name)
    entry = proto_field.message_type
    assert entry is not None
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
    integer_keys = key_field.cpp_type != FieldDescriptor.CPPTYPE_STRING
    for raw_key, item in value.items():
        key = int(raw_key) if integer_keys else raw_key
        if value_field.message_type is None:
            target[key] = _to_proto_scalar(value_field, item)
        elif flat_inner is not None:
            setattr(target[key], flat_inner, item)
        else:
            fill(target[key], item)  # target[key] creates the entry: an empty {} still appears


def read(message: Any) -> dict[str, Any]:
    """The API wire dict of ``message``: the fields that are set, typed ones only."""
    descriptor = message.DESCRIPTOR
    shape = shape_of(descriptor)
    out: dict[str, Any] = {}
    listed = {f.name for f, _ in message.ListFields()}
    for proto_field in descriptor.fields:
        name = proto_field.name
        if name in shape.untyped:
            continue
        if name not in listed and name not in shape.always:
            continue
        value = getattr(message, name)
        key = api_name(descriptor, proto_field)
        if name in shape.flattened:
            inner_name = shape.flattened[name]
            inner = value.DESCRIPTOR.fields_by_name[inner_name]
            inner_value = getattr(value, inner_name)
            out[key] = (
                [_from_proto_scalar(inner, v) for v in inner_value]
                if _is_repeated(inner)
                else _from_proto_scalar(inner, inner_value)
            )
        elif _is_map(proto_field):
            out[key] = _read_map(proto_field, value, shape.flat_map_values.get(name))
        elif proto_field.message_type is not None and _is_repeated(proto_field):
            out[key] = [read(item) for item in value]
        elif proto_field.message_type is not None:
            out[key] = read(value)
        elif _is_repeated(proto_field):
            out[key] = [_from_proto_scalar(proto_field, v) for v in value]
        else:
            out[key] = _from_proto_scalar(proto_field, value)
    return out


def _read_map(proto_field: FieldDescriptor, value: Any, flat_inner: str | None) -> dict[str, Any]:
    assert proto_field.message_type is not None
    value_field = proto_field.message_type.fields_by_name["value"]
    out: dict[str, Any] = {}
    for key in sorted(value):
        item = value[key]
        if value_field.message_type is None:
            out[str(key)] = _from_proto_scalar(value_field, item)
        elif flat_inner is not None:
            out[str(key)] = getattr(item, flat_inner)
        else:
            out[str(key)] = read(item)
    return out


def untyped_fields(message: Any) -> list[str]:
    """Names of the fields set on ``message`` (anywhere inside it) that have no typed field."""
    found: list[str] = []
    descriptor = message.DESCRIPTOR
    shape = shape_of(descriptor)
    for proto_field, value in message.ListFields():
        if proto_field.name in shape.untyped:
            found.append(proto_field.name)
        elif proto_field.name in shape.flattened or proto_field.message_type is None:
            continue
        elif _is_map(proto_field):
            value_field = proto_field.message_type.fields_by_name["value"]
            if value_field.message_type is not None and proto_field.name not in (
                shape.flat_map_values
            ):
                for item in value.values():
                    found += [f"{proto_field.name}.{n}" for n in untyped_fields(item)]
        elif _is_repeated(proto_field):
            for item in value:
                found += [f"{proto_field.name}.{n}" for n in untyped_fields(item)]
        else:
            found += [f"{proto_field.name}.{n}" for n in untyped_fields(value)]
    return found
