"""Every CEL rule the API server enforces (``x-kubernetes-validations`` in the
generated CRDs) has a pydantic twin that refuses the same objects, so
``tritonfleet render`` never passes what ``kubectl apply`` refuses.

The table below pairs each rule (by message) with a Python reading of the CEL
rule and objects that violate it. The test fails when a rule is added to the
CRDs without a parity case, when a rule's text changes without its case being
reviewed, or when pydantic accepts an object the rule refuses. The real API
server's verdict on the same objects is checked by the integration tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.support.builders import config, ensemble_doc, model_doc
from tritonfleet.api import ModelEnsemble, TritonModel
from tritonfleet.api.crd import custom_resource_definitions
from tritonfleet.api.problems import problems_from_validation_error

KINDS: dict[str, tuple[type, Callable[[], dict[str, Any]]]] = {
    "TritonModel": (TritonModel, model_doc),
    "ModelEnsemble": (ModelEnsemble, ensemble_doc),
}


@dataclass(frozen=True)
class Rule:
    kind: str
    path: str  # dotted path of the schema node carrying the rule, e.g. spec.serving
    rule: str
    message: str
    schema: dict[str, Any] = field(compare=False, repr=False)


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[*]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{*}}")


def crd_rules() -> list[Rule]:
    rules = []
    for crd in custom_resource_definitions():
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            root = version["schema"]["openAPIV3Schema"]
            for path, node in _walk(root, ""):
                for item in node.get("x-kubernetes-validations", []):
                    rules.append(Rule(kind, path, item["rule"], item["message"], node))
    return rules


RULES = crd_rules()


# --- the parity table -------------------------------------------------------


@dataclass(frozen=True)
class Parity:
    rule: str
    holds: Callable[[dict[str, Any]], bool]  # the CEL rule, read in Python
    valid: Any  # a node value that satisfies the rule
    violations: dict[str, Any]  # id → node value the rule refuses


def _exactly_one(node: dict[str, Any], keys: tuple[str, ...]) -> bool:
    return sum(k in node for k in keys) == 1


def _files_ok(node: dict[str, Any]) -> bool:
    return all(
        k and not k.startswith("/") and "\\" not in k and ".." not in k.split("/")
        for k in node["files"]
    )


S3 = {"uri": "s3://bucket/model"}
PVC = {"claimName": "models"}
TRT = {**config(), "platform": "tensorrt_plan"}
TRT.pop("backend")

PARITY: dict[str, Parity] = {
    "file paths must be relative and stay inside the model directory": Parity(
        rule="self.files.all(k, size(k) > 0 && !k.startsWith('/') && !k.contains('\\\\')"
        " && k != '..' && !k.startsWith('../') && !k.endsWith('/..')"
        " && !k.contains('/../'))",
        holds=_files_ok,
        valid={"files": {"1/model.py": "", "config.pbtxt": "", "1/model..onnx": ""}},
        violations={
            "absolute": {"files": {"/etc/passwd": ""}},
            "parent": {"files": {"../x": ""}},
            "climbs-out": {"files": {"a/../../b": ""}},
            "dotdot": {"files": {"..": ""}},
            "trailing-dotdot": {"files": {"a/..": ""}},
            "backslash": {"files": {"a\\b": ""}},
            "empty": {"files": {"": ""}},
        },
    ),
    "dimensions must be -1 (variable) or at least 1": Parity(
        rule="self.dims.all(d, d != 0)",
        holds=lambda n: all(d != 0 for d in n["dims"]),
        valid={"name": "x", "dataType": "TYPE_FP32", "dims": [-1, 3]},
        violations={"zero": {"name": "x", "dataType": "TYPE_FP32", "dims": [0]}},
    ),
    "set exactly one of s3, http, pvc, inline": Parity(
        rule="[has(self.s3), has(self.http), has(self.pvc), has(self.inline)]"
        ".filter(x, x).size() == 1",
        holds=lambda n: _exactly_one(n, ("s3", "http", "pvc", "inline")),
        valid={"pvc": PVC},
        violations={
            "none": {},
            "two": {"s3": S3, "pvc": PVC},
            "all": {
                "s3": S3,
                "pvc": PVC,
                "http": {"url": "https://x/m"},
                "inline": {"files": {"a": ""}},
            },
        },
    ),
    "defaultPriorityLevel must not exceed priorityLevels": Parity(
        rule="!has(self.defaultPriorityLevel) || self.defaultPriorityLevel == 0"
        " || (has(self.priorityLevels) && self.defaultPriorityLevel <= self.priorityLevels)",
        holds=lambda n: (
            not n.get("defaultPriorityLevel")
            or ("priorityLevels" in n and n["defaultPriorityLevel"] <= n["priorityLevels"])
        ),
        valid={"priorityLevels": 3, "defaultPriorityLevel": 2},
        violations={
            "without-levels": {"defaultPriorityLevel": 1},
            "above-levels": {"priorityLevels": 2, "defaultPriorityLevel": 3},
        },
    ),
    "with priorityLevels set, defaultPriorityLevel must be between 1 and priorityLevels": Parity(
        rule="!has(self.priorityLevels) || self.priorityLevels == 0"
        " || (has(self.defaultPriorityLevel) && self.defaultPriorityLevel >= 1)",
        holds=lambda n: not n.get("priorityLevels") or n.get("defaultPriorityLevel", 0) >= 1,
        valid={"priorityLevels": 3, "defaultPriorityLevel": 1},
        violations={
            "no-default": {"priorityLevels": 3},
            "default-zero": {"priorityLevels": 3, "defaultPriorityLevel": 0},
        },
    ),
    "set exactly one of latest, all, specific": Parity(
        rule="[has(self.latest), has(self.all), has(self.specific)].filter(x, x).size() == 1",
        holds=lambda n: _exactly_one(n, ("latest", "all", "specific")),
        valid={"all": {}},
        violations={
            "none": {},
            "two": {"latest": {}, "all": {}},
            "three": {"latest": {}, "all": {}, "specific": {"versions": [1]}},
        },
    ),
    "set exactly one of platform, backend": Parity(
        rule="has(self.platform) != has(self.backend)",
        holds=lambda n: ("platform" in n) != ("backend" in n),
        valid=config(),
        violations={
            "both": {**config(), "platform": "onnxruntime_onnx"},
            "neither": {k: v for k, v in config().items() if k != "backend"},
        },
    ),
    "use a ModelEnsemble for ensembles": Parity(
        rule="!has(self.platform) || self.platform != 'ensemble'",
        holds=lambda n: n.get("platform") != "ensemble",
        valid=TRT,
        violations={"ensemble": {**TRT, "platform": "ensemble"}},
    ),
    "min must not exceed max": Parity(
        rule="self.min <= self.max",
        holds=lambda n: n["min"] <= n["max"],
        valid={"min": 0, "max": 2},
        violations={"min-above-max": {"min": 3, "max": 2}, "min-above-default-max": {"min": 2}},
    ),
    "autoscaling.scaleToZeroAfterSeconds needs replicas.min: 0": Parity(
        rule="!has(self.autoscaling) || !has(self.autoscaling.scaleToZeroAfterSeconds)"
        " || (has(self.replicas) && self.replicas.min == 0)",
        holds=lambda n: (
            "autoscaling" not in n
            or "scaleToZeroAfterSeconds" not in n["autoscaling"]
            or ("replicas" in n and n["replicas"]["min"] == 0)
        ),
        valid={"replicas": {"min": 0, "max": 2}, "autoscaling": {"scaleToZeroAfterSeconds": 60}},
        violations={
            "no-replicas": {"autoscaling": {"scaleToZeroAfterSeconds": 60}},
            "min-one": {
                "replicas": {"min": 1, "max": 2},
                "autoscaling": {"scaleToZeroAfterSeconds": 60},
            },
            "min-defaulted": {
                "replicas": {"max": 2},
                "autoscaling": {"scaleToZeroAfterSeconds": 60},
            },
        },
    ),
    "an ensemble needs at least one step": Parity(
        rule="size(self.steps) > 0",
        holds=lambda n: len(n["steps"]) > 0,
        valid=ensemble_doc()["spec"],
        violations={"no-steps": {**ensemble_doc()["spec"], "steps": []}},
    ),
}


# --- helpers ----------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The API server's defaulting of the scalar defaults in a structural schema."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    out = dict(value)
    for name, sub in schema["properties"].items():
        if name not in out and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


def place(rule: Rule, node: Any) -> dict[str, Any]:
    """A valid object of ``rule.kind`` with ``node`` at the rule's path."""
    doc = KINDS[rule.kind][1]()
    *parents, last = rule.path.split(".")
    target = doc
    for part in parents:
        assert "[" not in part and "{" not in part, f"teach place() about {rule.path}"
        target = target.setdefault(part, {})
    if last.endswith("[*]"):
        # A rule on list items: the list becomes that one item.
        target[last.removesuffix("[*]")] = [copy.deepcopy(node)]
    else:
        target[last] = copy.deepcopy(node)
    return doc


def pydantic_refusal(rule: Rule, node: Any) -> list[str] | None:
    try:
        KINDS[rule.kind][0].model_validate(place(rule, node))
    except ValidationError as error:
        return [p.path for p in problems_from_validation_error(error)]
    return None


def _ids(items: list[tuple[Rule, str]]) -> list[str]:
    return [f"{r.kind}:{r.path}:{v}" for r, v in items]


VIOLATIONS = [
    (rule, name)
    for rule in RULES
    if rule.message in PARITY
    for name in PARITY[rule.message].violations
]


# --- tests ------------------------------------------------------------------


def test_the_crds_carry_cel_rules() -> None:
    assert {r.kind for r in RULES} == set(KINDS)
    assert len(RULES) >= len(PARITY)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}:{r.path}:{r.message}")
def test_every_cel_rule_has_a_parity_case(rule: Rule) -> None:
    assert rule.message in PARITY, (
        f"CEL rule {rule.rule!r} on {rule.kind} {rule.path} has no parity case: add one to "
        "PARITY with objects it refuses, and make sure pydantic refuses them too"
    )
    assert PARITY[rule.message].rule == rule.rule, (
        f"the CEL rule for {rule.message!r} changed; review its parity case"
    )


def test_every_parity_case_is_still_a_crd_rule() -> None:
    stale = set(PARITY) - {r.message for r in RULES}
    assert not stale, f"parity cases for rules no CRD carries any more: {stale}"


@pytest.mark.parametrize(("rule", "violation"), VIOLATIONS, ids=_ids(VIOLATIONS))
def test_pydantic_refuses_what_the_cel_rule_refuses(rule: Rule, violation: str) -> None:
    case = PARITY[rule.message]
    node = case.violations[violation]
    # The table entry really violates the rule (after the API server's defaulting) ...
    assert not case.holds(apply_defaults(rule.schema, node)), "parity case does not violate"
    # ... and pydantic refuses it, pointing at the same part of the object.
    paths = pydantic_refusal(rule, node)
    assert paths is not None, (
        f"the API server refuses {node!r} at {rule.kind} {rule.path} ({rule.message!r}) "
        "but pydantic accepts it"
    )
    # A rule on list items (path "...[*]") is reported for the item placed at index 0.
    expected = rule.path.replace("[*]", "[0]")
    assert any(p.startswith(expected) for p in paths), paths


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.kind}:{r.path}:{r.message}")
def test_pydantic_accepts_what_the_cel_rule_accepts(rule: Rule) -> None:
    case = PARITY[rule.message]
    assert case.holds(apply_defaults(rule.schema, case.valid))
    assert pydantic_refusal(rule, case.valid) is None


FILES_RULE = next(r for r in RULES if r.message.startswith("file paths"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab./\\", min_size=1, max_size=8))
def test_inline_paths_the_api_server_refuses_are_refused_offline(path: str) -> None:
    node = {"files": {path: ""}}
    if not PARITY[FILES_RULE.message].holds(node):
        assert pydantic_refusal(FILES_RULE, node) is not None, path
