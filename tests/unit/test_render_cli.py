"""``tritonfleet render``: what a user sees when previewing manifests."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format

from tests.support.builders import (
    SAMPLE_FILES,
    ensemble_doc,
    model_doc,
    pool_doc,
    sample_docs,
    with_path,
)
from tritonfleet.cli import main
from tritonfleet.desired.triton.proto import mc
from tritonfleet.desired.triton.render import render_documents

HEADER = re.compile(
    r"^# --- (?P<kind>\w+) (?P<ns>[^/ ]+)/(?P<name>\S+): (?P<triton>\S+)/config\.pbtxt "
    r"\(revision (?P<revision>[0-9a-f]{10})\)$",
    re.MULTILINE,
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, docs: list[dict[str, Any]], name: str = "in.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def sections(out: str) -> dict[tuple[str, str, str], tuple[str, mc.ModelConfig]]:
    """(kind, namespace, name) → (revision, parsed config.pbtxt) from render's output."""
    headers = list(HEADER.finditer(out))
    result = {}
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(out)
        body = out[match.end() : end]
        config = text_format.Parse(body, mc.ModelConfig())
        assert config.name == match["triton"]
        result[(match["kind"], match["ns"], match["name"])] = (match["revision"], config)
    assert len(result) == len(headers)
    return result


def revisions(docs: list[dict[str, Any]]) -> dict[str, str]:
    rendered = render_documents(docs)
    assert all(r.ok for r in rendered), [r.problems for r in rendered]
    return {r.name: r.revision for r in rendered}


# --- samples ------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.stem)
def test_every_sample_renders(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-f", str(path))
    assert code == 0, err
    assert err == ""
    docs = [d for d in sample_docs(path.stem) if d["kind"] != "TritonServerPool"]
    found = sections(out)
    expected = {
        (d["kind"], d["metadata"].get("namespace", "default"), d["metadata"]["name"]) for d in docs
    }
    assert set(found) == expected
    assert list(found) == [
        (d["kind"], d["metadata"].get("namespace", "default"), d["metadata"]["name"]) for d in docs
    ], "document order is kept"
    for (kind, _, _), (_, config) in found.items():
        assert (config.platform == "ensemble") == (kind == "ModelEnsemble")


def test_all_samples_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    args = [arg for path in SAMPLE_FILES for arg in ("-f", str(path))]
    code, out, _ = run(capsys, *args)
    assert code == 0
    models = [
        d for p in SAMPLE_FILES for d in sample_docs(p.stem) if d["kind"] != "TritonServerPool"
    ]
    assert len(sections(out)) == len(models)


def test_a_pool_with_its_models_previews_their_placement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = [
        pool_doc("shared", gpuMemory="16Gi", replicas={"min": 2, "max": 2}),
        model_doc("small", serving={"pool": {"name": "shared", "memory": "4Gi"}}),
        model_doc("big", modelName="big", serving={"pool": {"name": "shared", "memory": "14Gi"}}),
        model_doc("elsewhere", modelName="elsewhere"),
    ]
    code, out, err = run(capsys, "-f", write(tmp_path, docs))
    assert code == 0, err
    assert len(sections(out)) == 3  # the pool has no config of its own
    preview = out[out.index("# --- TritonServerPool default/shared") :]
    assert "2 replica(s) x 16Gi of GPU memory (gpuMemory)" in preview
    # New models are placed largest first: big takes its room, small is refused.
    assert "#   replica 0: 14Gi used, 2Gi free: big" in preview
    assert "#   TritonModel small: DoesNotFit: needs 4Gi on 2 replicas; free: 2Gi, 2Gi" in preview
    assert "elsewhere" not in preview


def test_an_invalid_pool_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "-f", write(tmp_path, [pool_doc(gpuMemory="lots")]))
    assert code == 1
    assert "TritonServerPool default/shared is invalid" in err
    assert "spec.gpuMemory" in err


def test_members_and_ensemble_in_separate_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = sample_docs("rag-ensemble")
    members = write(tmp_path, docs[:-1], "members.yaml")
    ens = write(tmp_path, docs[-1:], "ensemble.yaml")
    code, out, err = run(capsys, "-f", members, "-f", ens)
    assert code == 0, err
    assert ("ModelEnsemble", "default", "rag") in sections(out)


def test_header_names_namespace_and_triton_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [model_doc("toy", namespace="ml", modelName="Toy_V1")])
    code, out, _ = run(capsys, "-f", path)
    assert code == 0
    (match,) = HEADER.finditer(out)
    assert (match["kind"], match["ns"], match["name"], match["triton"]) == (
        "TritonModel",
        "ml",
        "toy",
        "Toy_V1",
    )


# --- invalid input ------------------------------------------------------------


def test_invalid_documents_list_every_problem_and_print_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = model_doc("good")
    no_source = with_path(model_doc("no-source"), "spec.source", {})
    bad_config = with_path(
        with_path(model_doc("bad-config", namespace="ml"), "spec.config.outputs.0.optional", True),
        "spec.config.dynamicBatching",
        {"preferredBatchSize": [64]},
    )
    path = write(tmp_path, [good, no_source, bad_config])
    code, out, err = run(capsys, "-f", path)
    assert code == 1
    assert out == ""
    assert "TritonModel default/no-source is invalid" in err
    assert "spec.source" in err
    assert "TritonModel ml/bad-config is invalid" in err
    assert "spec.config.outputs[0].optional" in err
    assert "spec.config.dynamicBatching: preferredBatchSize 64 exceeds maxBatchSize 8" in err
    assert "good" not in err
    problem_lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert len(problem_lines) == 3


def test_every_problem_of_a_document_shows_in_one_run() -> None:
    """Two sources and a preferred batch size above maxBatchSize: both are reported. With a
    wrong data type, a number where Triton wants a string and a broken extra too: all five,
    each echoing the value the user wrote."""
    doc = model_doc("broken", source={"s3": {"uri": "s3://bucket/m"}, "pvc": {"claimName": "m"}})
    doc["spec"]["config"]["dynamicBatching"] = {"preferredBatchSize": [128]}
    (result,) = render_documents([doc])
    assert sorted(map(str, result.problems)) == [
        "spec.config.dynamicBatching: preferredBatchSize 128 exceeds maxBatchSize 8",
        "spec.source: set exactly one of s3, http, pvc, inline (found 2)",
    ]
    doc["spec"]["config"]["inputs"][0]["dataType"] = "TYPE_FLOAT"
    doc["spec"]["config"]["parameters"] = {"max_tokens": 128, "stream": True}
    doc["spec"]["config"]["extra"] = 'dynamic_batching { priority_queue_policy: "max" }'
    (result,) = render_documents([doc])
    by_path = {p.path: p.message for p in result.problems}
    assert by_path["spec.config.inputs[0].dataType"].endswith('got "TYPE_FLOAT"')
    assert by_path["spec.config.parameters.max_tokens"].endswith(
        'got 128: quote it to make it a string ("128")'
    )
    assert by_path["spec.config.parameters.stream"].endswith('("true")')
    assert by_path["spec.config.extra"].startswith("line 1, column 43")
    assert len(by_path) == 6


def test_huge_values_are_echoed_clipped(tmp_path: Path) -> None:
    doc = with_path(model_doc(), "spec.config.inputs.0.dataType", "TYPE_" + "X" * 5000)
    (result,) = render_documents([doc])
    (problem,) = result.problems
    assert "TYPE_XXXX" in problem.message
    assert len(problem.message) < 400


def test_partial_prints_the_valid_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = with_path(model_doc("bad"), "spec.config.platform", "ensemble")
    path = write(tmp_path, [model_doc("good"), bad])
    code, out, err = run(capsys, "-f", path, "--partial")
    assert code == 1
    assert set(sections(out)) == {("TritonModel", "default", "good")}
    assert "TritonModel default/bad is invalid" in err


def test_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {}}
    path = write(tmp_path, [model_doc(), cm])
    code, out, err = run(capsys, "-f", path)
    assert code == 1
    assert out == ""
    assert "ConfigMap default/cfg" in err
    assert "ConfigMap" in err
    assert "TritonModel" in err and "ModelEnsemble" in err  # what it expected


def test_document_without_name_is_identified_by_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = model_doc()
    del doc["metadata"]["name"]
    code, _, err = run(capsys, "-f", write(tmp_path, [model_doc("first"), doc]))
    assert code == 1
    assert "<document 1>" in err
    assert "metadata.name" in err


@pytest.mark.parametrize(
    "text",
    ["kind: TritonModel\nspec: [unclosed\n", "a: b: c\n", "key: 'unterminated\n"],
)
def test_yaml_syntax_error_exits_2(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "-f", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("error:")
    assert "line" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- just\n- a list\n", "mapping"), ("", "no TritonModel"), ("---\n---\n", "no TritonModel")],
)
def test_unusable_input_exits_2(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "-f", str(path))
    assert code == 2
    assert out == ""
    assert expected in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "-f", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in err


def test_called_in_process_it_leaves_the_host_s_sigpipe_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As a program it dies quietly on a closed pipe (`| head`); called in-process (tests,
    benchmarks) it must not: a host writing to a socket a client closed would be killed."""
    before = signal.getsignal(signal.SIGPIPE)
    assert main(["render", "-f", str(SAMPLE_FILES[0])]) == 0
    assert signal.getsignal(signal.SIGPIPE) == before
    capsys.readouterr()


def test_filename_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["render"])
    assert exited.value.code == 2
    assert "-f" in capsys.readouterr().err


def test_stdin() -> None:
    """`-` reads the documents from standard input, as in `cat x.yaml | tritonfleet render -f -`
    (here through `python -m tritonfleet`, the same command)."""
    text = (Path(SAMPLE_FILES[0])).read_text()
    proc = subprocess.run(
        [sys.executable, "-m", "tritonfleet", "render", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(sections(proc.stdout)) == len(sample_docs(SAMPLE_FILES[0].stem))


def test_kind_list_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = sample_docs("rag-ensemble")
    path = write(tmp_path, [{"apiVersion": "v1", "kind": "List", "items": docs}])
    code, out, err = run(capsys, "-f", path)
    assert code == 0, err
    assert len(sections(out)) == len(docs)


def test_empty_list_has_nothing_to_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        capsys, "-f", write(tmp_path, [{"apiVersion": "v1", "kind": "List", "items": []}])
    )
    assert code == 2


def test_ensemble_members_are_looked_up_in_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, [model_doc("toy", namespace="a"), ensemble_doc("pipe", namespace="b")])
    code, _, err = run(capsys, "-f", path)
    assert code == 1
    assert "ModelEnsemble b/pipe is invalid" in err
    assert "spec.steps[0].model" in err


def test_ensemble_with_an_invalid_member_is_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_member = with_path(model_doc("toy"), "spec.config.outputs.0.optional", True)
    code, _, err = run(capsys, "-f", write(tmp_path, [bad_member, ensemble_doc("pipe")]))
    assert code == 1
    assert "ModelEnsemble default/pipe is invalid" in err
    assert "toy" in err


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.config.maxBatchSize", 2**31),
        ("spec.config.inputs.0.dims", [2**63]),
        ("spec.config.instanceGroups", [{"kind": "KIND_GPU", "gpus": [2**31]}]),
    ],
)
def test_numbers_too_large_for_triton_are_refused_with_the_field_named(
    path: str, value: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API server accepts any int64 here; Triton's ModelConfig holds int32 (or
    int64 for dims). The renderer must report the field, not crash."""
    doc = with_path(model_doc("big"), path, value)
    field = path.split(".")[2]
    code, out, err = run(capsys, "-f", write(tmp_path, [doc]))
    assert code == 1, err
    assert out == ""
    assert "TritonModel default/big is invalid" in err
    assert field in err


# --- revisions ------------------------------------------------------------------


def test_revision_is_stable() -> None:
    docs = sample_docs("rag-ensemble")
    assert revisions(docs) == revisions(docs)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.config.maxBatchSize", 4),
        ("spec.config.inputs.0.dims", [2]),
        ("spec.config.parameters", {"k": "v"}),
        ("spec.config.extra", 'model_warmup { name: "w" batch_size: 1 }'),
        ("spec.source", {"pvc": {"claimName": "models"}}),
        ("spec.source.inline.files", {"1/model.py": "changed\n"}),
        ("spec.modelName", "Renamed"),
    ],
)
def test_revision_changes_with_what_triton_serves(path: str, value: Any) -> None:
    before = revisions([model_doc("toy")])["toy"]
    assert revisions([with_path(model_doc("toy"), path, value)])["toy"] != before


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.serving.replicas", {"min": 2, "max": 5}),
        ("spec.serving.gpus", 2),
        ("spec.serving.autoscaling", {"queueTimeTargetMs": 10}),
        ("spec.failover", {"provider": {"baseUrl": "https://api.example.com/v1", "model": "m"}}),
        ("metadata.labels", {"team": "search"}),
    ],
)
def test_revision_ignores_serving_fields(path: str, value: Any) -> None:
    before = revisions([model_doc("toy")])["toy"]
    assert revisions([with_path(model_doc("toy"), path, value)])["toy"] == before


def test_ensemble_revision_follows_its_members() -> None:
    base = revisions([model_doc("toy"), ensemble_doc("pipe")])
    source_changed = revisions(
        [
            with_path(model_doc("toy"), "spec.source.inline.files", {"1/model.py": "v2"}),
            ensemble_doc("pipe"),
        ]
    )
    assert source_changed["toy"] != base["toy"]
    assert source_changed["pipe"] != base["pipe"]
    scaled = revisions(
        [
            with_path(model_doc("toy"), "spec.serving.replicas", {"max": 9}),
            with_path(ensemble_doc("pipe"), "spec.serving.replicas", {"max": 9}),
        ]
    )
    assert scaled == base
    own_change = revisions([model_doc("toy"), ensemble_doc("pipe", maxBatchSize=4)])
    assert own_change["pipe"] != base["pipe"]
    assert own_change["toy"] == base["toy"]


def test_revision_in_header_matches_render_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = sample_docs("rag-ensemble")
    code, out, _ = run(capsys, "-f", write(tmp_path, docs))
    assert code == 0
    assert {key[2]: rev for key, (rev, _) in sections(out).items()} == revisions(docs)


def test_render_documents_reports_out_of_range_numbers_instead_of_raising() -> None:
    doc = with_path(model_doc("big"), "spec.config.maxBatchSize", 2**31)
    (result,) = render_documents([doc])
    assert not result.ok
    assert any("maxBatchSize" in p.path for p in result.problems)


def test_a_directory_renders_all_its_documents_together(capsys: pytest.CaptureFixture[str]) -> None:
    """The runnable ensemble's members live in other files of the same directory."""
    runnable = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "runnable"
    assert main(["render", "-f", str(runnable)]) == 0
    out = capsys.readouterr().out
    assert "ModelEnsemble default/toy-rag: toy_rag/config.pbtxt" in out
    assert out.count("# --- ") == 5


def test_the_pool_sample_renders_with_its_placement(capsys: pytest.CaptureFixture[str]) -> None:
    """The pool sample's directory: its models, the ensemble and the pool's placement."""
    pool = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "runnable" / "pool"
    assert main(["render", "-f", str(pool)]) == 0
    out = capsys.readouterr().out
    assert "TritonServerPool default/toy-pool: 2 replica(s) x 16Gi" in out
    assert out.count("used, 8Gi free: toy_embed, toy_llm, toy_rag, vector_search") == 2


def test_the_operator_process_loads_no_grpc_numpy_or_kubernetes_client() -> None:
    """About 30 MB of the operator's RSS budget: Triton's ModelConfig comes from the module
    generated at build time, not tritonclient, and kopf finds no official client to load.
    The probe imports what `tritonfleet operator` imports and composes the whole operator
    process (handlers, loader, collector, metrics API, scale to zero), without starting it."""
    probe = """
import sys
from tritonfleet.cli import build_parser
from tritonfleet.cli.operator import compose
build_parser()
from tritonfleet.adapters.kube import Endpoint
from tritonfleet.api.settings import OperatorSettings
operator = compose(OperatorSettings(), Endpoint(server="https://127.0.0.1:1"))
assert operator.scaling.views is operator.views, "one parsed view for every reader"
from tritonfleet.desired.triton.render import render_documents
doc = {"apiVersion": "tritonfleet.io/v1alpha1", "kind": "TritonModel",
       "metadata": {"name": "toy", "namespace": "ml"},
       "spec": {"source": {"inline": {"files": {"1/model.py": "pass"}}},
                "config": {"backend": "python", "maxBatchSize": 4,
                           "inputs": [{"name": "x", "dataType": "TYPE_FP32", "dims": [1]}],
                           "outputs": [{"name": "y", "dataType": "TYPE_FP32", "dims": [1]}]}}}
(rendered,) = render_documents([doc])
assert "max_batch_size" in rendered.pbtxt, "Triton's ModelConfig still renders"
heavy = [m for m in ("grpc", "numpy", "kubernetes") if sys.modules.get(m) is not None]
rss = [line for line in open("/proc/self/status") if line.startswith("VmRSS:")]
print(heavy, int(rss[0].split()[1]) // 1024)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    heavy, rss_mb = out.rsplit(" ", 1)
    assert heavy == "[]", f"the operator process imported {heavy}"
    assert int(rss_mb) < 80, f"{rss_mb.strip()} MB resident before the first object"


HEAD = "apiVersion: tritonfleet.io/v1alpha1\nkind: TritonModel\n"
SOURCE = 'source: {inline: {files: {"1/model.py": "x"}}}'
HOSTILE: dict[str, tuple[str, int, str]] = {
    "10,000-digit integer": (
        f"{HEAD}metadata: {{name: m}}\nspec:\n  {SOURCE}\n"
        f"  config: {{backend: python, maxBatchSize: {'9' * 10_000}}}\n",
        2,
        "an integer of more than 4300 digits",
    ),
    "2,000-deep flow nesting": ("a: " + "[" * 2000 + "]" * 2000 + "\n", 2, "nested too deeply"),
    "duplicate key": (
        f"{HEAD}metadata: {{name: m}}\nspec:\n  {SOURCE}\n"
        "  config: {backend: python, maxBatchSize: 4, maxBatchSize: 8}\n",
        2,
        "found the key 'maxBatchSize' twice",
    ),
    "10 MB name": (
        f'{HEAD}metadata: {{name: "{"n" * 10_000_000}"}}\nspec:\n  {SOURCE}\n'
        "  config: {backend: python}\n",
        1,
        "more characters",
    ),
    "10 MB field name in extra": (
        f"{HEAD}metadata: {{name: m}}\nspec:\n  {SOURCE}\n"
        f'  config: {{backend: python, extra: "{"f" * 10_000_000} 1"}}\n',
        1,
        "more characters",
    ),
    "billion laughs": (
        "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)),
        2,
        "aliases expand to more than",
    ),
    "non-UTF-8 bytes": ("\udcff\udcfe", 2, "cannot read"),
    "a List of scalars": ("kind: List\nitems: [1, 2]\n", 2, "items of a List must be mappings"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_is_refused_briefly_and_without_a_traceback(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, code, expected = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    got, out, err = run(capsys, "-f", str(path))
    assert (got, out) == (code, ""), err[:2000]
    assert expected in err
    assert "Traceback" not in err and len(err) < 4096, f"{len(err)} bytes on stderr"
