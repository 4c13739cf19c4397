"""Routes from TritonModel/ModelEnsemble objects (desired/gateway/cluster.py): every pod
serving the model (whatever revision a rollout has it at), a canary's split, mapping by
annotation or convention, failover from spec.failover with the key in a Secret,
problems reported per object."""

from __future__ import annotations

from typing import Any

from tests.support.builders import ensemble_doc, model_doc, tensor
from tritonfleet.api.ensemble import ModelEnsemble
from tritonfleet.api.model import TritonModel
from tritonfleet.desired.gateway.cluster import (
    MAPPING_ANNOTATION,
    OPENAI_NAME_ANNOTATION,
    routes_from_cluster,
)
from tritonfleet.desired.gateway.routes import ApiKeyRef
from tritonfleet.desired.gateway.routes_file import load_routes


def status(revision: str, pods: list[tuple[str, str | None, str, str]]) -> dict[str, Any]:
    return {
        "revision": revision,
        "pods": [{"name": n, "ip": ip, "revision": rev, "state": s} for n, ip, rev, s in pods],
    }


def llm_model(name: str = "chat", ns: str = "team-a", **extra: Any) -> TritonModel:
    doc = model_doc(
        name,
        ns,
        config={
            "backend": "python",
            "maxBatchSize": 8,
            "decoupled": True,
            "inputs": [tensor("text_input", "TYPE_STRING"), tensor("max_tokens", "TYPE_INT32")],
            "outputs": [
                tensor("text_output", "TYPE_STRING"),
                tensor("completion_tokens", "TYPE_INT32"),
            ],
        },
        failover={
            "provider": {
                "baseUrl": "https://api.deepseek.com/v1",
                "model": "deepseek-chat",
                "apiKeySecret": {"name": "deepseek", "key": "api-key"},
            },
            "triggers": {"queueTimeAboveMs": 100},
        },
    )
    doc.update(extra)
    return TritonModel.from_object(doc)


def test_cluster_routes_every_pod_serving_the_model_whatever_its_revision() -> None:
    m = llm_model(
        status=status(
            "r1",
            [
                ("p1", "10.0.0.1", "r2", "Ready"),  # a rollout's new pod, loaded
                ("p2", "10.0.0.2", "r1", "Ready"),  # the old revision answers meanwhile
                ("p3", "10.0.0.3", "r2", "Loading"),
                ("p4", None, "r2", "Ready"),  # no IP yet
                ("p5", "fd00::5", "r2", "Ready"),
                ("p6", "10.0.0.6", "r1", "Terminating"),  # removed: draining
            ],
        )
    )
    out = routes_from_cluster([m])
    assert out.problems == ()
    r = out.table.routes["chat"]
    assert [(e.name, e.revision) for e in r.endpoints] == [
        ("p1", "r2"),
        ("p2", "r1"),
        ("p5", "r2"),
    ]
    assert r.split == ()  # no canary: every endpoint takes requests
    assert r.endpoints[0].url == "http://10.0.0.1:8000"
    assert r.endpoints[2].metrics_url == "http://[fd00::5]:8002/metrics"
    assert r.generate is not None and r.generate.decoupled
    # conventions: inputs and outputs the model has
    assert dict(r.generate.inputs) == {"max_tokens": "max_tokens"}
    assert r.generate.prompt_tokens_output is None
    assert r.generate.completion_tokens_output == "completion_tokens"
    assert r.hosted is not None and r.hosted.api_key is not None
    assert r.hosted.api_key.describe() == "secret team-a/deepseek[api-key]"
    assert r.failover is not None and r.failover.queue_time_above_ms == 100
    assert r.origin == "TritonModel team-a/chat"


def test_a_canary_split_comes_from_the_rollout_weights() -> None:
    canary = status("r1", [("p1", "10.0.0.1", "r1", "Ready"), ("p2", "10.0.0.2", "r2", "Ready")])
    canary["rollout"] = {
        "targetRevision": "r2",
        "phase": "Analyzing",
        "weights": {"r1": 90, "r2": 10},
    }
    r = routes_from_cluster([llm_model(status=canary)]).table.routes["chat"]
    assert r.split == (("r1", 90), ("r2", 10))
    canary["rollout"] = {"targetRevision": "r2", "phase": "Promoting", "weights": {}}
    assert routes_from_cluster([llm_model(status=canary)]).table.routes["chat"].split == ()


def test_cluster_no_status_means_no_endpoints() -> None:
    assert routes_from_cluster([llm_model()]).table.routes["chat"].endpoints == ()


def test_cluster_annotations_name_and_mapping() -> None:
    m = llm_model()
    meta = {
        "name": "chat",
        "namespace": "team-a",
        "annotations": {
            OPENAI_NAME_ANNOTATION: "team-a/chat-v2",
            MAPPING_ANNOTATION: "kind: generate\nchatTemplate: llama3\ninputs: {stop: stop_words}",
        },
    }
    m = TritonModel.from_object({**m.model_dump(by_alias=True), "metadata": meta})
    r = routes_from_cluster([m]).table.routes["team-a/chat-v2"]
    assert r.triton_model == "chat" and r.generate is not None
    assert r.generate.inputs["stop"] == "stop_words"


def test_cluster_problems_are_reported_not_raised() -> None:
    bad = llm_model(name="bad")
    bad = TritonModel.from_object(
        {
            **bad.model_dump(by_alias=True),
            "metadata": {"name": "bad", "annotations": {MAPPING_ANNOTATION: "kind: [oops"}},
        }
    )
    odd = TritonModel.from_object(
        model_doc(
            "odd",
            config={
                "backend": "python",
                "inputs": [tensor("A"), tensor("B")],
                "outputs": [tensor("C")],
            },
        )
    )
    dup1, dup2 = llm_model(ns="a"), llm_model(ns="b")
    out = routes_from_cluster([bad, odd, dup2, dup1])
    text = "\n".join(out.problems)
    assert "bad" in text and MAPPING_ANNOTATION in text
    assert "odd: cannot tell how to call it" in text
    # duplicates resolve by namespace order, the same on every replica
    assert out.table.routes["chat"].origin == "TritonModel a/chat"
    assert "TritonModel b/chat: model name 'chat' already served by TritonModel a/chat" in text


def test_cluster_embedding_by_convention_and_ensembles() -> None:
    emb = TritonModel.from_object(
        model_doc(
            "embed",
            config={
                "backend": "python",
                "maxBatchSize": 16,
                "inputs": [tensor("text", "TYPE_STRING")],
                "outputs": [tensor("embedding", "TYPE_FP32", [64])],
            },
        )
    )
    ens = ModelEnsemble.from_object(
        ensemble_doc(
            "rag",
            inputs=[tensor("text_input", "TYPE_STRING")],
            outputs=[tensor("text_output", "TYPE_STRING")],
        )
    )
    table = routes_from_cluster([emb], [ens]).table
    e = table.routes["embed"].embedding
    assert e is not None and (e.input, e.output, e.batched) == ("text", "embedding", True)
    rag = table.routes["rag"]
    assert rag.kind == "generate" and rag.origin == "ModelEnsemble default/rag"


def test_failover_reads_the_same_from_the_routes_file_and_from_the_cluster() -> None:
    failover = {
        "provider": {"baseUrl": "https://api.deepseek.com/v1/", "model": "deepseek-chat"},
        "triggers": {"unavailable": False, "queueTimeAboveMs": 100},
        "mode": "auto",
    }
    doc = model_doc(
        "chat", config={"backend": "python", "inputs": [tensor("text_input", "TYPE_STRING")]}
    )
    doc["spec"]["failover"] = failover
    model = TritonModel.from_object(doc)
    cluster = routes_from_cluster([model]).table.routes["chat"].failover
    file_doc = {"models": [{"name": "chat", "endpoints": [{"url": "http://p:8000"}]}]}
    file_doc["models"][0]["failover"] = {
        **failover,
        "provider": {**failover["provider"], "apiKeyEnv": "KEY"},
    }
    from_file = load_routes(file_doc).routes["chat"].failover
    assert cluster is not None and from_file is not None
    assert cluster.hosted is not None and from_file.hosted is not None
    assert cluster.hosted.api_key is None and from_file.hosted.api_key == ApiKeyRef(env="KEY")
    assert cluster.hosted.base_url == from_file.hosted.base_url == "https://api.deepseek.com/v1"
    assert (
        (cluster.mode, cluster.on_unavailable, cluster.queue_time_above_ms)
        == (
            from_file.mode,
            from_file.on_unavailable,
            from_file.queue_time_above_ms,
        )
        == ("auto", False, 100)
    )
