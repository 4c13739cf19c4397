"""The CEL parity table: every CEL rule the generated CRDs carry
(``x-kubernetes-validations``), paired by its message with a Python reading of the rule and
objects that violate it, plus the helpers that place such an object where the rule applies.

Two suites read it: tests/unit/test_cel_parity.py checks that pydantic refuses what each rule
refuses (so ``tritonfleet render`` never passes what ``kubectl apply`` refuses), and
tests/integration/test_crds_apiserver.py checks the real API server's verdict on the same
objects. It lives here so neither suite imports the other.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tests.support.builders import config, ensemble_doc, model_doc, pool_doc
from tritonfleet.api import ModelEnsemble, TritonModel
from tritonfleet.api.base import QUALIFIED_NAME_PATTERN, QUALIFIED_NAME_RE, QUANTITY_RE
from tritonfleet.api.crd import custom_resource_definitions
from tritonfleet.api.pool import TritonServerPool
from tritonfleet.api.problems import problems_from_validation_error
from tritonfleet.api.triton_config import CORRID_DATA_TYPES, PLATFORM_BACKENDS

KINDS: dict[str, tuple[type, Callable[[], dict[str, Any]]]] = {
    "TritonModel": (TritonModel, model_doc),
    "ModelEnsemble": (ModelEnsemble, ensemble_doc),
    "TritonServerPool": (TritonServerPool, pool_doc),
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
    # A kind whose node needs more to be valid (a pool's spec needs its budget).
    valid_for: dict[str, Any] = field(default_factory=dict)

    def valid_in(self, kind: str) -> Any:
        return self.valid_for.get(kind, self.valid)


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
TENSOR = {"name": "x", "dataType": "TYPE_FP32", "dims": [-1, 3]}
POOL_REF = {"name": "shared", "memory": "2Gi"}


def _quantity(value: Any, positive: bool = False) -> bool:
    """isQuantity(string(v)), and not below zero (above zero when ``positive``)."""
    text = str(value)
    if not QUANTITY_RE.match(text.removeprefix("-")):
        return False
    digits = text.lstrip("+-").rstrip("KMGTPEimnuk")
    negative = text.startswith("-") and any(c not in "0." for c in digits)
    zero = all(c in "0." for c in digits)
    return not negative and not (positive and zero)


def _pool_serving_ok(n: dict[str, Any]) -> bool:
    return "pool" not in n or (
        "image" not in n
        and n["gpus"] == 1
        and n["gpuResource"] == "nvidia.com/gpu"
        and n.get("replicas", {"min": 1, "max": 1}) == {"min": 1, "max": 1}
        and "autoscaling" not in n
        and "resources" not in n
        and not n.get("nodeSelector")
        and not n.get("tolerations")
        and "affinity" not in n
        and str(n["shmSize"]) == "1Gi"
        and not n.get("env")
        and not n.get("imagePullSecrets")
        and "priorityClassName" not in n
        and "runtimeClassName" not in n
        and not n.get("topologySpreadConstraints")
        and not n.get("podAnnotations")
    )


def _pool_budget_ok(n: dict[str, Any]) -> bool:
    selector = n.get("nodeSelector", {})
    return (
        "gpuMemory" in n
        or n["gpuResource"].startswith("nvidia.com/mig-")
        or selector.get("nvidia.com/gpu.memory", "x").isdigit()
        or re.search("[0-9]+GB", selector.get("nvidia.com/gpu.product", "")) is not None
    )


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
        rule="!has(self.dims) || self.dims.all(d, d != 0)",
        holds=lambda n: all(d != 0 for d in n.get("dims", [])),
        valid=TENSOR,
        violations={
            "zero": {**TENSOR, "dims": [0]},
            "zero-among-others": {**TENSOR, "dims": [4, 0]},
        },
    ),
    "reshape dimensions must be -1 (variable) or at least 1": Parity(
        rule="!has(self.reshape) || self.reshape.all(d, d != 0)",
        holds=lambda n: all(d != 0 for d in n.get("reshape", [])),
        valid={**TENSOR, "dims": [2, 3], "reshape": [6]},
        violations={"zero": {**TENSOR, "dims": [2, 3], "reshape": [0, 6]}},
    ),
    "format FORMAT_NHWC and FORMAT_NCHW need exactly 3 dims": Parity(
        rule="!has(self.format) || self.format == 'FORMAT_NONE' || !has(self.dims)"
        " || size(self.dims) == 3",
        holds=lambda n: n.get("format", "FORMAT_NONE") == "FORMAT_NONE" or len(n["dims"]) == 3,
        valid={**TENSOR, "dims": [3, 224, 224], "format": "FORMAT_NCHW"},
        violations={
            "nhwc-2d": {**TENSOR, "dims": [224, 224], "format": "FORMAT_NHWC"},
            "nchw-4d": {**TENSOR, "dims": [1, 3, 224, 224], "format": "FORMAT_NCHW"},
        },
    ),
    "isNonLinearFormatIo needs exactly 3 dims": Parity(
        rule="!has(self.isNonLinearFormatIo) || !self.isNonLinearFormatIo || !has(self.dims)"
        " || size(self.dims) == 3",
        holds=lambda n: not n.get("isNonLinearFormatIo") or len(n["dims"]) == 3,
        valid={**TENSOR, "dims": [3, 4, 5], "isNonLinearFormatIo": True},
        violations={"one-dim": {**TENSOR, "dims": [3], "isNonLinearFormatIo": True}},
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
    "platform does not belong to backend (tensorflow: tensorflow_graphdef or "
    "tensorflow_savedmodel, tensorrt: tensorrt_plan, onnxruntime: onnxruntime_onnx, pytorch: "
    "pytorch_libtorch)": Parity(
        rule="!has(self.platform) || !has(self.backend) || !(self.backend in ['onnxruntime', "
        "'pytorch', 'tensorflow', 'tensorrt']) || (self.backend == 'onnxruntime' && "
        "self.platform in ['onnxruntime_onnx']) || (self.backend == 'pytorch' && self.platform "
        "in ['pytorch_libtorch']) || (self.backend == 'tensorflow' && self.platform in "
        "['tensorflow_graphdef', 'tensorflow_savedmodel']) || (self.backend == 'tensorrt' && "
        "self.platform in ['tensorrt_plan'])",
        holds=lambda n: (
            "platform" not in n
            or "backend" not in n
            or n["backend"] not in set(PLATFORM_BACKENDS.values())
            or PLATFORM_BACKENDS.get(n["platform"]) == n["backend"]
        ),
        valid={**config(), "backend": "tensorrt", "platform": "tensorrt_plan"},
        violations={
            "onnx-platform-on-pytorch": {
                **config(),
                "backend": "pytorch",
                "platform": "onnxruntime_onnx",
            },
            "savedmodel-on-tensorrt": {
                **config(),
                "backend": "tensorrt",
                "platform": "tensorflow_savedmodel",
            },
        },
    ),
    "without a backend, platform must be one Triton knows the backend of: onnxruntime_onnx, "
    "pytorch_libtorch, tensorflow_graphdef, tensorflow_savedmodel, tensorrt_plan": Parity(
        rule="has(self.backend) || !has(self.platform) || self.platform == 'ensemble' || "
        "self.platform in ['onnxruntime_onnx', 'pytorch_libtorch', 'tensorflow_graphdef', "
        "'tensorflow_savedmodel', 'tensorrt_plan']",
        holds=lambda n: (
            "backend" in n
            or "platform" not in n
            or n["platform"] == "ensemble"
            or n["platform"] in PLATFORM_BACKENDS
        ),
        valid=TRT,
        violations={
            "python-platform": {**TRT, "platform": "python"},
            "onnx-without-runtime": {**TRT, "platform": "onnx"},
        },
    ),
    "dynamicBatching.preferredBatchSize must not exceed maxBatchSize": Parity(
        rule="!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSize) || "
        "self.dynamicBatching.preferredBatchSize.all(s, s <= self.maxBatchSize)",
        holds=lambda n: all(
            s <= n["maxBatchSize"]
            for s in n.get("dynamicBatching", {}).get("preferredBatchSize", [])
        ),
        valid={**config(maxBatchSize=8), "dynamicBatching": {"preferredBatchSize": [4, 8]}},
        violations={
            "above": {**config(maxBatchSize=4), "dynamicBatching": {"preferredBatchSize": [2, 8]}},
            "not-batching": {
                **config(maxBatchSize=0),
                "dynamicBatching": {"preferredBatchSize": [1]},
            },
        },
    ),
    "set at most one of dynamicBatching, sequenceBatching": Parity(
        rule="!has(self.dynamicBatching) || !has(self.sequenceBatching)",
        holds=lambda n: not ("dynamicBatching" in n and "sequenceBatching" in n),
        valid={**config(), "sequenceBatching": {}},
        violations={"both": {**config(), "dynamicBatching": {}, "sequenceBatching": {}}},
    ),
    "sequenceBatching.oldest.preferredBatchSize must not exceed maxBatchSize": Parity(
        rule="!has(self.sequenceBatching) || !has(self.sequenceBatching.oldest) || "
        "!has(self.sequenceBatching.oldest.preferredBatchSize) || "
        "self.sequenceBatching.oldest.preferredBatchSize.all(s, s <= self.maxBatchSize)",
        holds=lambda n: all(
            s <= n["maxBatchSize"]
            for s in n.get("sequenceBatching", {}).get("oldest", {}).get("preferredBatchSize", [])
        ),
        valid={
            **config(maxBatchSize=8),
            "sequenceBatching": {"oldest": {"preferredBatchSize": [8]}},
        },
        violations={
            "above": {
                **config(maxBatchSize=8),
                "sequenceBatching": {"oldest": {"preferredBatchSize": [4, 16]}},
            }
        },
    ),
    "responseCache cannot be enabled for a decoupled or sequence-batched model": Parity(
        rule="!has(self.responseCache) || !has(self.responseCache.enable) || "
        "!self.responseCache.enable || ((!has(self.decoupled) || !self.decoupled) && "
        "!has(self.sequenceBatching))",
        holds=lambda n: (
            not n.get("responseCache", {}).get("enable")
            or (not n.get("decoupled") and "sequenceBatching" not in n)
        ),
        valid={**config(), "responseCache": {"enable": True}, "decoupled": False},
        violations={
            "decoupled": {**config(), "responseCache": {"enable": True}, "decoupled": True},
            "sequence": {**config(), "responseCache": {"enable": True}, "sequenceBatching": {}},
        },
    ),
    "priorityQueuePolicy keys must be priority levels from 1 to priorityLevels": Parity(
        rule="!has(self.priorityQueuePolicy) || self.priorityQueuePolicy.all(k, "
        "k.matches('^[0-9]{1,15}$') && (!has(self.priorityLevels) || self.priorityLevels == 0 "
        "|| (int(k) >= 1 && int(k) <= self.priorityLevels)))",
        holds=lambda n: all(
            k.isdigit() and (not n.get("priorityLevels") or 1 <= int(k) <= n["priorityLevels"])
            for k in n.get("priorityQueuePolicy", {})
        ),
        valid={"priorityLevels": 2, "defaultPriorityLevel": 1, "priorityQueuePolicy": {"2": {}}},
        violations={
            "zero": {
                "priorityLevels": 2,
                "defaultPriorityLevel": 1,
                "priorityQueuePolicy": {"0": {}},
            },
            "above": {
                "priorityLevels": 2,
                "defaultPriorityLevel": 1,
                "priorityQueuePolicy": {"3": {}},
            },
            "not-a-level": {"priorityQueuePolicy": {"high": {}}},
        },
    ),
    "preserveOrdering allows only one priority level": Parity(
        rule="!has(self.preserveOrdering) || !self.preserveOrdering || "
        "!has(self.priorityLevels) || self.priorityLevels <= 1",
        holds=lambda n: not n.get("preserveOrdering") or n.get("priorityLevels", 0) <= 1,
        valid={"preserveOrdering": True, "priorityLevels": 1, "defaultPriorityLevel": 1},
        violations={
            "three-levels": {
                "preserveOrdering": True,
                "priorityLevels": 3,
                "defaultPriorityLevel": 2,
            }
        },
    ),
    "preserveOrdering cannot delay timed-out requests (timeoutAction DELAY with a timeout)": Parity(
        rule="!has(self.preserveOrdering) || !self.preserveOrdering || "
        "((!has(self.defaultQueuePolicy) || !has(self.defaultQueuePolicy.timeoutAction) || "
        "self.defaultQueuePolicy.timeoutAction != 'DELAY' || "
        "!has(self.defaultQueuePolicy.defaultTimeoutMicroseconds) || "
        "self.defaultQueuePolicy.defaultTimeoutMicroseconds == 0) && "
        "(!has(self.priorityQueuePolicy) || self.priorityQueuePolicy.all(k, "
        "!has(self.priorityQueuePolicy[k].timeoutAction) || "
        "self.priorityQueuePolicy[k].timeoutAction != 'DELAY' || "
        "!has(self.priorityQueuePolicy[k].defaultTimeoutMicroseconds) || "
        "self.priorityQueuePolicy[k].defaultTimeoutMicroseconds == 0)))",
        holds=lambda n: (
            not n.get("preserveOrdering")
            or not any(
                p.get("timeoutAction") == "DELAY" and p.get("defaultTimeoutMicroseconds")
                for p in [
                    n.get("defaultQueuePolicy", {}),
                    *n.get("priorityQueuePolicy", {}).values(),
                ]
            )
        ),
        valid={
            "preserveOrdering": True,
            "defaultQueuePolicy": {"timeoutAction": "REJECT", "defaultTimeoutMicroseconds": 100},
        },
        violations={
            "default-policy": {
                "preserveOrdering": True,
                "defaultQueuePolicy": {"timeoutAction": "DELAY", "defaultTimeoutMicroseconds": 100},
            },
            "level-policy": {
                "preserveOrdering": True,
                "priorityLevels": 1,
                "defaultPriorityLevel": 1,
                "priorityQueuePolicy": {
                    "1": {"timeoutAction": "DELAY", "defaultTimeoutMicroseconds": 5}
                },
            },
        },
    ),
    "set at most one of direct, oldest": Parity(
        rule="[has(self.direct), has(self.oldest)].filter(x, x).size() <= 1",
        holds=lambda n: not ("direct" in n and "oldest" in n),
        valid={"oldest": {"maxCandidateSequences": 4}},
        violations={"both": {"direct": {}, "oldest": {}}},
    ),
    "a START, END or READY control needs exactly one of int32FalseTrue, fp32FalseTrue, "
    "boolFalseTrue": Parity(
        rule="self.kind == 'CONTROL_SEQUENCE_CORRID' || [has(self.int32FalseTrue), "
        "has(self.fp32FalseTrue), has(self.boolFalseTrue)].filter(x, x).size() == 1",
        holds=lambda n: (
            n["kind"] == "CONTROL_SEQUENCE_CORRID"
            or sum(k in n for k in ("int32FalseTrue", "fp32FalseTrue", "boolFalseTrue")) == 1
        ),
        valid={"kind": "CONTROL_SEQUENCE_START", "int32FalseTrue": [0, 1]},
        violations={
            "none": {"kind": "CONTROL_SEQUENCE_READY"},
            "two": {
                "kind": "CONTROL_SEQUENCE_END",
                "int32FalseTrue": [0, 1],
                "boolFalseTrue": [False, True],
            },
        },
    ),
    "a CORRID control takes a dataType (TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or "
    "TYPE_STRING) and no false/true values": Parity(
        rule="self.kind != 'CONTROL_SEQUENCE_CORRID' || (!has(self.int32FalseTrue) && "
        "!has(self.fp32FalseTrue) && !has(self.boolFalseTrue) && has(self.dataType) && "
        "self.dataType in ['TYPE_UINT64', 'TYPE_INT64', 'TYPE_UINT32', 'TYPE_INT32', "
        "'TYPE_STRING'])",
        holds=lambda n: (
            n["kind"] != "CONTROL_SEQUENCE_CORRID"
            or (
                not any(k in n for k in ("int32FalseTrue", "fp32FalseTrue", "boolFalseTrue"))
                and n.get("dataType") in CORRID_DATA_TYPES
            )
        ),
        valid={"kind": "CONTROL_SEQUENCE_CORRID", "dataType": "TYPE_UINT64"},
        violations={
            "no-type": {"kind": "CONTROL_SEQUENCE_CORRID"},
            "float-type": {"kind": "CONTROL_SEQUENCE_CORRID", "dataType": "TYPE_FP32"},
            "with-values": {
                "kind": "CONTROL_SEQUENCE_CORRID",
                "dataType": "TYPE_UINT64",
                "int32FalseTrue": [0, 1],
            },
        },
    ),
    "set at most one of zeroData, dataFile": Parity(
        rule="[has(self.zeroData), has(self.dataFile)].filter(x, x).size() <= 1",
        holds=lambda n: not ("zeroData" in n and "dataFile" in n),
        valid={"zeroData": True, "dataType": "TYPE_INT32", "dims": [1]},
        violations={"both": {"zeroData": True, "dataFile": "state.bin"}},
    ),
    "set at most one of zeroData, randomData, inputDataFile": Parity(
        rule="[has(self.zeroData), has(self.randomData), has(self.inputDataFile)]"
        ".filter(x, x).size() <= 1",
        holds=lambda n: sum(k in n for k in ("zeroData", "randomData", "inputDataFile")) <= 1,
        valid={"randomData": True, "dataType": "TYPE_FP32", "dims": [4]},
        violations={
            "two": {"zeroData": True, "randomData": True},
            "three": {"zeroData": True, "randomData": True, "inputDataFile": "raw"},
        },
    ),
    "only KIND_GPU and KIND_AUTO instance groups can list gpus": Parity(
        rule="!has(self.gpus) || size(self.gpus) == 0 || self.kind == 'KIND_GPU' || "
        "self.kind == 'KIND_AUTO'",
        holds=lambda n: not n.get("gpus") or n["kind"] in ("KIND_GPU", "KIND_AUTO"),
        valid={"kind": "KIND_GPU", "gpus": [0, 1]},
        violations={
            "cpu": {"kind": "KIND_CPU", "gpus": [0]},
            "model": {"kind": "KIND_MODEL", "gpus": [1]},
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
    "podAnnotations keys must be qualified names ([prefix/]name)": Parity(
        rule="!has(self.podAnnotations) || self.podAnnotations.all(k, k.matches('"
        + QUALIFIED_NAME_PATTERN.replace("\\", "\\\\")
        + "'))",
        holds=lambda n: all(QUALIFIED_NAME_RE.match(k) for k in n.get("podAnnotations", {})),
        valid={"podAnnotations": {"sidecar.istio.io/inject": "false", "team": "search"}},
        valid_for={"TritonServerPool": {"gpuMemory": "16Gi", "podAnnotations": {"team": "search"}}},
        violations={
            "space": {"podAnnotations": {"has space": "x"}},
            "two-slashes": {"podAnnotations": {"a/b/c": "x"}},
            "upper-prefix": {"podAnnotations": {"Example.com/x": "x"}},
            "empty-name": {"podAnnotations": {"example.com/": "x"}},
        },
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
    "memory must be a quantity such as 6Gi": Parity(
        rule="isQuantity(string(self.memory))"
        " && !quantity(string(self.memory)).isLessThan(quantity('0'))",
        holds=lambda n: _quantity(n["memory"]),
        valid=POOL_REF,
        violations={
            "words": {**POOL_REF, "memory": "lots"},
            "negative": {**POOL_REF, "memory": "-1Gi"},
        },
    ),
    "pool replaces the per-model serving fields: leave image, gpus, gpuResource, replicas, "
    "autoscaling, resources, nodeSelector, tolerations, affinity, shmSize, env, imagePullSecrets, "
    "priorityClassName, runtimeClassName, topologySpreadConstraints, podAnnotations to the "
    "TritonServerPool": Parity(
        rule="!has(self.pool) || (!has(self.image) && self.gpus == 1"
        " && self.gpuResource == 'nvidia.com/gpu'"
        " && (!has(self.replicas)"
        " || (self.replicas.min == 1 && self.replicas.max == 1))"
        " && !has(self.autoscaling) && !has(self.resources)"
        " && (!has(self.nodeSelector) || size(self.nodeSelector) == 0)"
        " && (!has(self.tolerations) || size(self.tolerations) == 0)"
        " && !has(self.affinity) && string(self.shmSize) == '1Gi'"
        " && (!has(self.env) || size(self.env) == 0)"
        " && (!has(self.imagePullSecrets) || size(self.imagePullSecrets) == 0)"
        " && !has(self.priorityClassName) && !has(self.runtimeClassName)"
        " && (!has(self.topologySpreadConstraints)"
        " || size(self.topologySpreadConstraints) == 0)"
        " && (!has(self.podAnnotations) || size(self.podAnnotations) == 0))",
        holds=_pool_serving_ok,
        valid={"pool": POOL_REF, "env": [], "gpus": 1, "replicas": {"min": 1, "max": 1}},
        violations={
            "gpus": {"pool": POOL_REF, "gpus": 0},
            "replicas": {"pool": POOL_REF, "replicas": {"min": 1, "max": 2}},
            "image": {"pool": POOL_REF, "image": "nvcr.io/nvidia/tritonserver:24.10-py3"},
            "node-selector": {"pool": POOL_REF, "nodeSelector": {"pool": "a"}},
            "shm": {"pool": POOL_REF, "shmSize": "2Gi"},
            "env": {"pool": POOL_REF, "env": [{"name": "A", "value": "1"}]},
            "autoscaling": {"pool": POOL_REF, "autoscaling": {}},
            "priority-class": {"pool": POOL_REF, "priorityClassName": "serving"},
            "pod-annotations": {"pool": POOL_REF, "podAnnotations": {"team": "search"}},
        },
    ),
    "set gpuMemory, or select nodes by nvidia.com/gpu.memory (MiB) or by a "
    "nvidia.com/gpu.product naming its memory (e.g. NVIDIA-A100-SXM4-80GB), or request a MIG "
    "gpuResource: models are placed within each replica's GPU memory": Parity(
        rule="has(self.gpuMemory) || self.gpuResource.startsWith('nvidia.com/mig-')"
        " || (has(self.nodeSelector) && (('nvidia.com/gpu.memory' in"
        " self.nodeSelector && self.nodeSelector['nvidia.com/gpu.memory']"
        ".matches('^[0-9]+$')) || ('nvidia.com/gpu.product' in self.nodeSelector"
        " && self.nodeSelector['nvidia.com/gpu.product'].matches('[0-9]+GB'))))",
        holds=_pool_budget_ok,
        valid={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
        violations={
            "nothing": {},
            "product-without-memory": {"nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"}},
            "memory-not-a-number": {"nodeSelector": {"nvidia.com/gpu.memory": "lots"}},
        },
    ),
    "gpuMemory must be a positive quantity such as 80Gi": Parity(
        rule="!has(self.gpuMemory) || (isQuantity(string(self.gpuMemory))"
        " && quantity(string(self.gpuMemory)).isGreaterThan(quantity('0')))",
        holds=lambda n: "gpuMemory" not in n or _quantity(n["gpuMemory"], positive=True),
        valid={"gpuMemory": "80Gi"},
        violations={
            "zero": {"gpuMemory": "0"},
            "words": {"gpuMemory": "lots"},
            "negative": {"gpuMemory": "-1Gi"},
        },
    ),
    "step weights must not decrease": Parity(
        rule="self.steps.map(s, s.weight).isSorted()",
        holds=lambda n: (
            [s["weight"] for s in n["steps"]] == sorted(s["weight"] for s in n["steps"])
        ),
        valid={"steps": [{"weight": 10}, {"weight": 10}, {"weight": 100}]},
        violations={
            "down": {"steps": [{"weight": 50}, {"weight": 10}]},
            "down-at-the-end": {"steps": [{"weight": 10}, {"weight": 60}, {"weight": 50}]},
        },
    ),
    "strategy Canary needs canary (its steps)": Parity(
        rule="self.strategy != 'Canary' || has(self.canary)",
        holds=lambda n: n["strategy"] != "Canary" or "canary" in n,
        valid={"strategy": "Canary", "canary": {"steps": [{"weight": 10}]}},
        violations={"no-steps": {"strategy": "Canary"}},
    ),
    "canary may only be set with strategy Canary": Parity(
        rule="self.strategy == 'Canary' || !has(self.canary)",
        holds=lambda n: n["strategy"] == "Canary" or "canary" not in n,
        valid={"strategy": "Rolling"},
        violations={
            "rolling": {"strategy": "Rolling", "canary": {"steps": [{"weight": 10}]}},
            "defaulted": {"canary": {"steps": [{"weight": 10}]}},
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


# Required fields of the objects place() creates on the way to a rule's node.
_MINIMAL: dict[str, Any] = {
    "controlInputs": {"name": "START"},
    "rollout": {"strategy": "Canary"},  # a canary's rules need the Canary strategy around them
}
_MAP_KEY = "x"  # the key place() uses for a rule on map values ("...inputs{*}")


def place(rule: Rule, node: Any) -> dict[str, Any]:
    """A valid object of ``rule.kind`` with ``node`` at the rule's path.

    A list segment (``steps[*]``) becomes a list of that one item, a map segment
    (``inputs{*}``) a map with the one key ``x``.
    """
    doc = KINDS[rule.kind][1]()
    parts = rule.path.split(".")
    target: Any = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        name = part.removesuffix("[*]").removesuffix("{*}")
        inner: Any = copy.deepcopy(node) if last else copy.deepcopy(_MINIMAL.get(name, {}))
        if part.endswith("[*]"):
            target[name] = [inner]
        elif part.endswith("{*}"):
            target[name] = {_MAP_KEY: inner}
        elif last:
            target[name] = inner
        else:
            target = target.setdefault(name, copy.deepcopy(_MINIMAL.get(name, {})))
            continue
        target = inner
    return doc


def reported_at(rule: Rule) -> str:
    """Where pydantic reports a problem of the node place() put at the rule's path."""
    return rule.path.replace("[*]", "[0]").replace("{*}", f".{_MAP_KEY}")


def pydantic_refusal(rule: Rule, node: Any) -> list[str] | None:
    try:
        KINDS[rule.kind][0].model_validate(place(rule, node))
    except ValidationError as error:
        return [p.path for p in problems_from_validation_error(error)]
    return None


def ids_of(items: list[tuple[Rule, str]]) -> list[str]:
    return [f"{r.kind}:{r.path}:{v}" for r, v in items]


VIOLATIONS = [
    (rule, name)
    for rule in RULES
    if rule.message in PARITY
    for name in PARITY[rule.message].violations
]
