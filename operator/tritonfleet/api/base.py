"""Shared building blocks of the API models: the camelCase convention, CEL rule
attachment, Kubernetes quantities and the minimal object metadata.

Every spec model derives from :class:`ApiModel` so field names are snake_case
in Python and camelCase on the wire, as Kubernetes users expect.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "tritonfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Triton model names become directory names in the model repository and path
# segments in its HTTP API, so keep them to a portable, URL-safe set.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,126}$"
MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)

# Kubernetes resource.Quantity as the API server parses it, minus the sign:
# no size or resource amount in this API can be negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_RE = re.compile(QUANTITY_PATTERN)

# Bounds of the protobuf fields the values end up in (Triton's ModelConfig).
INT32_MAX = 2**31 - 1
# int64/uint64 fields are bounded lower than their type: the API server keeps
# schema bounds as float64, and 2**63 - 1 wraps to a negative number there.
MAX_SAFE_INT = 2**53 - 1

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label or annotation key: an optional DNS subdomain prefix and "/", then a name.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
QUALIFIED_NAME_RE = re.compile(QUALIFIED_NAME_PATTERN)


def check_quantity(value: str | int) -> str | int:
    """Refuse what the API server would refuse as a resource.Quantity."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a quantity must not be negative")
        return value
    if not QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 512Mi, 2, 500m)")
    return value


_BINARY: dict[str, int] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DECIMAL: dict[str, Decimal | int] = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def quantity_bytes(value: str | int) -> int:
    """A memory quantity (``16Gi``, ``1.5G``, ``512Mi``, ``1e9``) in whole bytes, rounded up,
    as the API server reads it. Raises ValueError for what is not a quantity."""
    check_quantity(value)
    if isinstance(value, int):
        return value
    text = value.removeprefix("+")
    number, unit = text, ""
    for suffix in (*_BINARY, *_DECIMAL):
        if text.endswith(suffix) and not text.endswith(("e" + suffix, "E" + suffix)):
            number, unit = text[: -len(suffix)], suffix
            break
    try:
        amount = Decimal(number)
    except InvalidOperation as error:
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from error
    scale: Decimal | int = _BINARY.get(unit) or _DECIMAL.get(unit) or 1
    return math.ceil(amount * scale)


def format_bytes(amount: int) -> str:
    """Bytes as the largest binary unit that keeps it readable: ``12Gi``, ``1.5Gi``,
    ``640Mi`` (at most one decimal; an exact quantity when it has none)."""
    if amount < 0:
        return "-" + format_bytes(-amount)
    for unit in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
        size = _BINARY[unit]
        if amount >= size:
            whole, rest = divmod(amount, size)
            if rest == 0:
                return f"{whole}{unit}"
            tenths = round(amount * 10 / size)
            if tenths % 10 == 0:
                return f"{tenths // 10}{unit}"
            return f"{tenths / 10:.1f}{unit}"
    return str(amount)


Quantity = Annotated[
    str | int,
    AfterValidator(check_quantity),
    WithJsonSchema(
        {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    ),
]
"""A Kubernetes quantity such as ``1Gi`` or ``2``."""


FreeFormObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes core type we pass through verbatim (e.g. ``affinity``)."""


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One CEL rule for ``x-kubernetes-validations``.

    Every rule must have a pydantic validator twin on the same model, so the
    offline renderer refuses exactly what the API server refuses.
    """
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def exactly_one(obj: BaseModel, fields: tuple[str, ...], *, at_most: bool = False) -> None:
    """Refuse ``obj`` unless exactly one (``at_most``: at most one) of ``fields`` is set."""
    present = [f for f in fields if getattr(obj, f) is not None]
    if len(present) > 1 or (not at_most and not present):
        wire = [type(obj).model_fields[f].alias or f for f in fields]
        # The error's location already names the object; say only what is wrong.
        quantity = "at most one" if at_most else "exactly one"
        raise ValueError(f"set {quantity} of {', '.join(wire)} (found {len(present)})")


class ApiModel(BaseModel):
    """Base of all spec/status models: camelCase aliases, strict about unknown keys."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in Kubernetes: camelCase, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta the renderer needs; the rest is kept as-is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        description="Name of the object, unique in its namespace."
    )
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    generation: int | None = Field(
        default=None, description="Spec generation, set by the API server."
    )
    uid: str | None = Field(default=None, description="Unique id, set by the API server.")
    labels: dict[str, str] | None = Field(default=None, description="Labels of the object.")
    annotations: dict[str, str] | None = Field(
        default=None, description="Annotations of the object."
    )
