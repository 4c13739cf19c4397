"""The CRDs generated from the pydantic models: structural schemas the API
server accepts, what ``kubectl get`` shows, the drift check, and the chart copy."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.builders import ROOT
from tritonfleet.api.crd import CHART_CRD_DIR, CRD_DIR, crd_files, custom_resource_definitions
from tritonfleet.cli import main

CRDS = custom_resource_definitions()
BY_KIND = {crd["spec"]["names"]["kind"]: crd for crd in CRDS}
INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (not property-name maps), with its path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from nodes(node[key], f"{path}[{key}]")
    for i, option in enumerate(node.get("anyOf", [])):
        yield from nodes(option, f"{path}[anyOf {i}]")


ALL_NODES = [
    (f"{kind}{path}", node) for kind, crd in BY_KIND.items() for path, node in nodes(schema_of(crd))
]


def _node_ids(items: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [p for p, _ in items]


def test_there_are_three_crds_in_the_tritonfleet_group() -> None:
    assert set(BY_KIND) == {"TritonModel", "ModelEnsemble", "TritonServerPool"}
    for crd in CRDS:
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["spec"]["group"] == "tritonfleet.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.tritonfleet.io"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1"
        assert version["served"] is True
        assert version["storage"] is True


@pytest.mark.parametrize(
    ("kind", "plural"),
    [
        ("TritonModel", "tritonmodels"),
        ("ModelEnsemble", "modelensembles"),
        ("TritonServerPool", "tritonserverpools"),
    ],
)
def test_names(kind: str, plural: str) -> None:
    names = BY_KIND[kind]["spec"]["names"]
    assert names["plural"] == plural
    assert names["singular"] == kind.lower()
    assert names["listKind"] == f"{kind}List"
    assert "tritonfleet" in names["categories"]


def test_short_names_exist_and_do_not_collide() -> None:
    seen: set[str] = set()
    for crd in CRDS:
        names = crd["spec"]["names"]
        short = names["shortNames"]
        assert short, f"{names['kind']} has no short names"
        for name in short:
            assert re.fullmatch(r"[a-z][a-z0-9]*", name), name
            assert name not in seen, f"short name {name} used twice"
            seen.add(name)
    plurals = {crd["spec"]["names"]["plural"] for crd in CRDS}
    singulars = {crd["spec"]["names"]["singular"] for crd in CRDS}
    assert not seen & (plurals | singulars)
    assert "tm" in BY_KIND["TritonModel"]["spec"]["names"]["shortNames"]
    assert BY_KIND["TritonServerPool"]["spec"]["names"]["shortNames"] == ["tsp"]


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_status_subresource(kind: str) -> None:
    (version,) = BY_KIND[kind]["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


COLUMNS = {
    "TritonModel": ("Ready", "Replicas", "Revision", "Served-By", "Age"),
    "ModelEnsemble": ("Ready", "Replicas", "Revision", "Served-By", "Age"),
    "TritonServerPool": ("Ready", "Models", "Replicas", "Memory", "Age"),
}


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_printer_columns(kind: str) -> None:
    (version,) = BY_KIND[kind]["spec"]["versions"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    for name in COLUMNS[kind]:
        assert name in columns, f"{kind} has no {name} column"
        assert columns[name].get("priority", 0) == 0, f"{name} is hidden from plain kubectl get"
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    status = schema_of(BY_KIND[kind])["properties"]["status"]["properties"]
    for column in columns.values():
        match = re.match(r"\.status\.(\w+)", column["jsonPath"])
        if match:
            assert match.group(1) in status, f"column {column['name']} shows a missing field"


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_top_level_schema(kind: str) -> None:
    schema = schema_of(BY_KIND[kind])
    assert schema["type"] == "object"
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    # The API server refuses anything else on metadata, a description included.
    assert schema["properties"]["metadata"] == {"type": "object"}


@pytest.mark.parametrize(("path", "node"), ALL_NODES, ids=_node_ids(ALL_NODES))
def test_schema_node_is_structural(path: str, node: dict[str, Any]) -> None:
    assert "$ref" not in node
    assert "$defs" not in node
    assert "title" not in node
    assert "const" not in node
    assert node.get("type") != "null"
    assert node.get("additionalProperties") is not False
    assert "nullable" not in node or node["nullable"] is True
    if "anyOf" in node:
        assert node.get("x-kubernetes-int-or-string") is True
        assert node["anyOf"] == INT_OR_STRING_ANYOF
        assert "type" not in node
    elif "[anyOf" not in path and not node.get("x-kubernetes-preserve-unknown-fields"):
        assert "type" in node, "every structural node needs a type"
    if "properties" in node:
        assert node["type"] == "object"
        assert "additionalProperties" not in node
        for name in node.get("required", []):
            assert name in node["properties"], f"required {name} is not a property"
    if node.get("type") == "array":
        assert isinstance(node.get("items"), dict)
    for key in ("minimum", "maximum"):
        if key in node:
            assert isinstance(node[key], int | float)
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            assert node[key] is True  # OpenAPI v3.0 form
    if "default" in node:
        assert not isinstance(node["default"], dict | list | type(None))
        if "enum" in node:
            assert node["default"] in node["enum"]
        if "pattern" in node:
            assert re.search(node["pattern"], node["default"])


@pytest.mark.parametrize(
    ("path", "node"),
    [(p, n) for p, n in ALL_NODES if "x-kubernetes-validations" in n],
    ids=_node_ids([(p, n) for p, n in ALL_NODES if "x-kubernetes-validations" in n]),
)
def test_cel_field_paths_point_at_fields(path: str, node: dict[str, Any]) -> None:
    for rule in node["x-kubernetes-validations"]:
        assert rule["rule"]
        assert rule["message"]
        target = node
        for part in rule.get("fieldPath", "").split(".")[1:]:
            assert part in target.get("properties", {}), f"{rule['fieldPath']} not in {path}"
            target = target["properties"][part]


def test_every_field_is_described_for_kubectl_explain() -> None:
    """`kubectl explain tritonmodel.spec...` says what each field is for, at every depth."""

    def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, sub in node.get("properties", {}).items():
            yield f"{path}.{name}", sub
            yield from fields(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from fields(node[key], path)

    undescribed = [
        path
        for kind, crd in BY_KIND.items()
        for path, node in fields(schema_of(crd), kind)
        if not node.get("description")
    ]
    # metadata is the standard ObjectMeta: the API server allows no description on it.
    assert undescribed == [f"{kind}.metadata" for kind in BY_KIND]


def test_typed_fields_are_in_the_schema() -> None:
    spec = schema_of(BY_KIND["TritonModel"])["properties"]["spec"]
    assert spec["required"] == ["source", "config"]
    config = spec["properties"]["config"]["properties"]
    assert config["maxBatchSize"]["minimum"] == 0
    assert "TYPE_FP32" in config["inputs"]["items"]["properties"]["dataType"]["enum"]
    serving = spec["properties"]["serving"]["properties"]
    assert serving["gpuResource"]["default"] == "nvidia.com/gpu"
    assert serving["shmSize"]["x-kubernetes-int-or-string"] is True
    assert serving["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    assert serving["resources"]["properties"]["limits"]["additionalProperties"][
        "x-kubernetes-int-or-string"
    ]
    assert serving["replicas"]["properties"]["min"]["default"] == 1
    autoscaling = serving["autoscaling"]["properties"]
    assert autoscaling["queueTimeTargetMs"]["exclusiveMinimum"] is True
    assert autoscaling["queueTimeTargetMs"]["minimum"] == 0


# --- files and drift check ---------------------------------------------------


def test_plain_files_hold_exactly_the_generated_crds() -> None:
    files = crd_files()
    assert len(files) == 2 * len(CRDS)
    plain = [yaml.safe_load(t) for p, t in files.items() if p.startswith(f"{CRD_DIR}/")]
    assert plain == CRDS
    for path, text in files.items():
        assert text.startswith("# Generated by `tritonfleet crds`"), path


def test_crds_check_passes_on_the_repo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--root", str(ROOT)]) == 0
    assert "match" in capsys.readouterr().out


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for directory in (CRD_DIR, CHART_CRD_DIR):
        shutil.copytree(ROOT / directory, tmp_path / directory)
    return tmp_path


@pytest.mark.parametrize("relative", sorted(crd_files()))
def test_crds_check_fails_when_a_file_is_edited(
    checkout: Path, relative: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--check", "--root", str(checkout)]) == 0
    path = checkout / relative
    path.write_text(path.read_text().replace("description:", "description: edited", 1))
    capsys.readouterr()
    assert main(["crds", "--check", "--root", str(checkout)]) != 0
    err = capsys.readouterr().err
    assert relative in err
    assert "tritonfleet crds" in err
    assert path.read_text() != crd_files()[relative], "--check must not rewrite files"


def test_crds_check_fails_when_a_file_is_missing(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relative = f"{CRD_DIR}/tritonfleet.io_tritonmodels.yaml"
    (checkout / relative).unlink()
    assert main(["crds", "--check", "--root", str(checkout)]) != 0
    assert relative in capsys.readouterr().err


def test_crds_regenerates_drifted_files(checkout: Path) -> None:
    relative = f"{CHART_CRD_DIR}/modelensembles.yaml"
    (checkout / relative).write_text("edited by hand\n")
    (checkout / CRD_DIR / "tritonfleet.io_tritonmodels.yaml").unlink()
    assert main(["crds", "--root", str(checkout)]) == 0
    assert (checkout / relative).read_text() == crd_files()[relative]
    assert main(["crds", "--check", "--root", str(checkout)]) == 0


def test_crds_stdout_prints_the_plain_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--stdout"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert docs == CRDS


# --- chart copy ---------------------------------------------------------------


def render_chart_template(text: str, values: dict[str, bool]) -> str:
    """Enough of Helm for the CRD templates: ``{{- if .Values.crds.X }}`` blocks
    (whole lines) and ``{{ .Release.Service }}``."""
    out: list[str] = []
    stack: list[bool] = []
    for line in text.splitlines():
        directive = re.fullmatch(r"\s*\{\{-?\s*(.*?)\s*-?\}\}\s*", line)
        if directive:
            action = directive.group(1)
            if action.startswith("if "):
                key = action.removeprefix("if ").strip()
                match = re.fullmatch(r"\.Values\.crds\.(\w+)", key)
                assert match, f"unexpected condition {key!r}"
                stack.append(values[match.group(1)])
            elif action == "end":
                stack.pop()
            else:
                raise AssertionError(f"unexpected template action {action!r}")
            continue
        if all(stack):
            out.append(line.replace("{{ .Release.Service }}", "Helm"))
    assert not stack, "unbalanced if/end"
    assert "{{" not in "\n".join(out)
    return "\n".join(out) + "\n"


CHART_FILES = {p: t for p, t in crd_files().items() if p.startswith(f"{CHART_CRD_DIR}/")}


@pytest.mark.parametrize("relative", sorted(CHART_FILES))
def test_chart_copy_is_gated_by_crds_enabled(relative: str) -> None:
    assert not yaml.safe_load(
        render_chart_template(CHART_FILES[relative], {"enabled": False, "keep": True})
    )


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("relative", sorted(CHART_FILES))
def test_chart_copy_is_the_crd_with_keep_annotation_under_crds_keep(
    relative: str, keep: bool
) -> None:
    rendered = yaml.safe_load(
        render_chart_template(CHART_FILES[relative], {"enabled": True, "keep": keep})
    )
    plural = Path(relative).stem
    (crd,) = [c for c in CRDS if c["spec"]["names"]["plural"] == plural]
    assert rendered["spec"] == crd["spec"]
    assert rendered["apiVersion"] == crd["apiVersion"]
    assert rendered["kind"] == crd["kind"]
    assert rendered["metadata"]["name"] == crd["metadata"]["name"]
    assert rendered["metadata"]["labels"] == {
        **crd["metadata"]["labels"],
        "app.kubernetes.io/managed-by": "Helm",
    }
    annotations = rendered["metadata"].get("annotations") or {}
    if keep:
        assert annotations == {"helm.sh/resource-policy": "keep"}
    else:
        assert "helm.sh/resource-policy" not in annotations


def test_chart_files_on_disk_are_the_generated_ones() -> None:
    for relative, text in CHART_FILES.items():
        assert (ROOT / relative).read_text() == text
