"""A real tritonserver 2.51 (CPU, python backend) with the toy model repository.

Two servers on distinct loopback addresses share one repository directory, as the local pod
runner runs them (fixture ``triton_launcher`` in tests/support/fixtures.py).
"""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hack.devtools.testbed import wait_for
from hack.devtools.triton import TritonProcess, copy_model_repository

pytestmark = pytest.mark.integration

PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_model_repository(tmp_path_factory.mktemp("shared") / "models")


@pytest.fixture(scope="module")
def pair(
    triton_launcher: Path, repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TritonProcess, TritonProcess]]:
    """Two servers, 127.0.0.2 and 127.0.0.3, on one repository; A starts with toy_llm loaded."""
    logs = tmp_path_factory.mktemp("triton-logs")
    a = TritonProcess(triton_launcher, log_dir=logs)
    b = TritonProcess(triton_launcher, log_dir=logs)
    try:
        a.start(repo, host="127.0.0.2", load_models=["toy_llm"])
        b.start(repo, host="127.0.0.3")
        yield a, b
    finally:
        for t in (a, b):
            t.stop(timeout=20)


def _versions(t: TritonProcess, model: str) -> dict[str, str]:
    return t.model_states().get(model, {})


def test_servers_are_distinct_and_report_2_51(pair: tuple[TritonProcess, TritonProcess]) -> None:
    a, b = pair
    assert (a.host, b.host) == ("127.0.0.2", "127.0.0.3")
    for t in pair:
        status, meta = t.get("/v2")
        assert status == 200
        assert meta["version"] == "2.51.0"
        assert "model_repository" in meta["extensions"]
    # --load-model at start: READY on A only
    assert _versions(a, "toy_llm") == {"1": "READY"}
    assert _versions(b, "toy_llm") == {}  # listed by the index, never loaded: name only


def test_load_unload_index_per_server(pair: tuple[TritonProcess, TritonProcess]) -> None:
    a, b = pair
    status, body = b.load("toy_embed")
    assert (status, body) == (200, None)  # success: empty body
    assert _versions(b, "toy_embed") == {"1": "READY"}
    assert b.model_ready("toy_embed")
    assert not a.model_ready("toy_embed")
    assert {"name": "toy_embed", "version": "1", "state": "READY"} in b.index(ready=True)
    assert all(e["name"] != "toy_embed" for e in a.index(ready=True))

    status, body = b.unload("toy_embed")
    assert status == 200
    b.wait_unloaded("toy_embed")
    entry = next(e for e in b.index() if e["name"] == "toy_embed")
    assert entry == {
        "name": "toy_embed",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    status, body = b.generate("toy_embed", {"text": "x"})
    assert status == 404
    assert body == {"error": "Request for unknown model: 'toy_embed' has no available versions"}
    assert a.model_ready("toy_llm")  # A untouched


def test_infer_on_each_server(pair: tuple[TritonProcess, TritonProcess]) -> None:
    results = []
    for t in pair:
        assert t.load("toy_embed")[0] == 200
        status, body = t.post(
            "/v2/models/toy_embed/infer",
            {
                "inputs": [
                    {
                        "name": "text",
                        "shape": [2, 1],
                        "datatype": "BYTES",
                        "data": ["kubernetes schedules pods", "kubernetes schedules pods"],
                    }
                ]
            },
        )
        assert status == 200, body
        out = body["outputs"][0]
        assert (out["name"], out["datatype"], out["shape"]) == ("embedding", "FP32", [2, 64])
        results.append(out["data"])
    assert results[0] == results[1]  # deterministic across servers
    row = results[0][:64]
    assert abs(sum(x * x for x in row) - 1.0) < 1e-5  # unit vector


def test_generate(pair: tuple[TritonProcess, TritonProcess]) -> None:
    a, _ = pair
    status, body = a.generate("toy_llm", {"text_input": PROMPT, "max_tokens": 6})
    assert status == 200
    assert body == {
        "model_name": "toy_llm",
        "model_version": "1",
        "text_output": "fox brown quick the fox brown",
        "prompt_tokens": 4,
        "completion_tokens": 6,
        "finish_reason": "length",
    }
    # optional inputs may be left out; unknown keys become request parameters (ignored here)
    status, body = a.generate("toy_llm", {"text_input": "a b", "temperature": 0.1, "whatever": 1})
    assert status == 200 and body["completion_tokens"] == 16
    assert body["text_output"].split()[:2] == ["a", "b"]
    # the model's error comes back as {"error": ...} with 400
    status, body = a.generate("toy_llm", {"text_input": "x", "max_tokens": -1})
    assert status == 400
    assert body == {"error": "invalid max_tokens=-1 or temperature=0.0"}
    # a JSON value that does not fit the input's type is rejected by Triton itself
    status, body = a.generate("toy_llm", {"text_input": "x", "max_tokens": "many"})
    assert status >= 400 and "error" in body


def _raw_stream(t: TritonProcess, model: str, body: dict) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(t.host, t.http_port, timeout=60)
    try:
        conn.request(
            "POST",
            f"/v2/models/{model}/generate_stream",
            json.dumps(body),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def test_generate_stream(pair: tuple[TritonProcess, TritonProcess]) -> None:
    _, b = pair
    assert b.load("toy_llm_stream")[0] == 200
    assert b.load("toy_llm")[0] == 200
    status, ctype, raw = _raw_stream(b, "toy_llm_stream", {"text_input": PROMPT, "max_tokens": 3})
    assert status == 200
    assert ctype == "text/event-stream; charset=utf-8"
    # SSE framing: one "data: <json>\n\n" per response; no event/id lines, no [DONE] marker
    chunks = raw.split(b"\n\n")
    assert chunks[-1] == b""
    events = [json.loads(c.removeprefix(b"data: ")) for c in chunks[:-1]]
    assert all(c.startswith(b"data: {") for c in chunks[:-1])
    assert events == [
        {
            "model_name": "toy_llm_stream",
            "model_version": "1",
            "text_output": "fox",
            "prompt_tokens": 4,
            "completion_tokens": 1,
            "finish_reason": "",
        },
        {
            "model_name": "toy_llm_stream",
            "model_version": "1",
            "text_output": " brown",
            "prompt_tokens": 4,
            "completion_tokens": 2,
            "finish_reason": "",
        },
        {
            "model_name": "toy_llm_stream",
            "model_version": "1",
            "text_output": " quick",
            "prompt_tokens": 4,
            "completion_tokens": 3,
            "finish_reason": "length",
        },
    ]
    # the deltas add up to the non-streaming answer
    _, whole = b.generate("toy_llm", {"text_input": PROMPT, "max_tokens": 12})
    status, events = b.generate_stream("toy_llm_stream", {"text_input": PROMPT, "max_tokens": 12})
    assert status == 200 and len(events) == 12
    assert "".join(e["text_output"] for e in events) == whole["text_output"]
    # an error before the first token: HTTP 400, still framed as SSE
    status, ctype, raw = _raw_stream(b, "toy_llm_stream", {"text_input": "x", "max_tokens": -1})
    assert (status, ctype) == (400, "text/event-stream; charset=utf-8")
    assert raw == b'data: {"error":"invalid max_tokens=-1 or temperature=0.0"}\n\n'
    # /generate on a decoupled model works only when it sends exactly one response
    status, body = b.generate("toy_llm_stream", {"text_input": PROMPT, "max_tokens": 1})
    assert status == 200 and body["text_output"] == "fox"
    status, body = b.generate("toy_llm_stream", {"text_input": PROMPT, "max_tokens": 2})
    assert "generate expects model to produce exactly 1 response" in body["error"]


def test_ensemble_rag(pair: tuple[TritonProcess, TritonProcess]) -> None:
    a, _ = pair
    status, body = a.load("toy_rag")  # loads toy_embed, vector_search and toy_llm with it
    assert status == 200, body
    ready = {e["name"] for e in a.index(ready=True)}
    assert {"toy_rag", "toy_embed", "vector_search", "toy_llm"} <= ready
    status, body = a.generate("toy_rag", {"text_input": "how does the operator scale replicas"})
    assert status == 200, body
    assert body["doc_id"] == 2
    assert 0 < body["score"] <= 1
    words = body["text_output"].split()
    assert len(words) == 16 and "replicas" in words and "context:" in words


def _metric_reaches(t: TritonProcess, expected: float, name: str, **labels: str) -> None:
    """/metrics is refreshed on an interval (2 s by default), so a read right after requests
    can be stale: wait for the counter to reach the value, with a deadline."""
    wait_for(
        lambda: (t.metric(name, **labels) or 0) == expected or None,
        timeout=15,
        what=f"{name}{labels} == {expected} on {t.host} (now {t.metric(name, **labels)})",
        interval=0.2,
    )


def test_metrics_after_requests(pair: tuple[TritonProcess, TritonProcess], repo: Path) -> None:
    a, b = pair
    # A model of its own, loaded for this test only: its counters start at zero, so what
    # they show is exactly what this test sent (other tests reload toy_llm, and Triton's
    # counters outlive a reload while its statistics API restarts from zero).
    shutil.copytree(repo / "toy_llm", repo / "toy_llm_counted")
    assert a.load("toy_llm_counted")[0] == 200
    labels = {"model": "toy_llm_counted", "version": "1"}
    for i in range(5):
        assert a.generate("toy_llm_counted", {"text_input": f"hi {i}", "max_tokens": 2})[0] == 200
    _metric_reaches(a, 5, "nv_inference_request_success", **labels)
    assert (a.metric("nv_inference_queue_duration_us", **labels) or 0) > 0
    assert a.metric("nv_inference_pending_request_count", **labels) == 0
    assert a.metric("nv_inference_request_failure", **labels, reason="BACKEND") == 0
    assert (a.metric("nv_inference_count", **labels) or 0) >= 5
    # Each server counts only its own requests: B never served this model, whatever
    # the phase of its refresh, while A's next request shows on A.
    assert a.generate("toy_llm_counted", {"text_input": "one more"})[0] == 200
    _metric_reaches(a, 6, "nv_inference_request_success", **labels)
    assert not b.metric("nv_inference_request_success", **labels)
    assert a.unload("toy_llm_counted")[0] == 200


def test_invalid_config_fails_to_load(
    pair: tuple[TritonProcess, TritonProcess], repo: Path
) -> None:
    a, b = pair
    # semantically invalid config: HTTP 400 with Triton's reason; index shows UNAVAILABLE + reason
    shutil.copytree(repo / "toy_llm", repo / "bad_dims")
    cfg = repo / "bad_dims" / "config.pbtxt"
    cfg.write_text(
        cfg.read_text().replace(
            'name: "text_input" data_type: TYPE_STRING dims: [ 1 ]',
            'name: "text_input" data_type: TYPE_STRING dims: [ 0 ]',
        )
    )
    reason = (
        "Invalid argument: model input 'text_input' dimension must be integer >= 1, "
        "or -1 to indicate a variable-size dimension for bad_dims"
    )
    status, body = a.load("bad_dims")
    assert status == 400
    assert body == {
        "error": f"load failed for model 'bad_dims': version 1 is at UNAVAILABLE state: {reason};\n"
    }
    entry = next(e for e in a.index() if e["name"] == "bad_dims")
    assert entry == {"name": "bad_dims", "version": "1", "state": "UNAVAILABLE", "reason": reason}
    # a config.pbtxt that does not parse: HTTP 500, the parse error itself is only in the log
    (repo / "bad_syntax" / "1").mkdir(parents=True)
    (repo / "bad_syntax" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: [\n')
    status, body = b.load("bad_syntax")
    assert status == 500
    assert body == {"error": "failed to load 'bad_syntax', failed to poll from model repository"}
    assert "Error parsing text-format inference.ModelConfig" in b.log_path.read_text()
    # a model whose initialize() raises: 400 with the Python traceback text
    shutil.copytree(repo / "toy_llm", repo / "bad_init")
    model_py = repo / "bad_init" / "1" / "model.py"
    model_py.write_text(
        model_py.read_text().replace(
            "    def initialize(self, args):\n",
            "    def initialize(self, args):\n        raise RuntimeError('init exploded')\n",
        )
    )
    status, body = b.load("bad_init")
    assert status == 400
    assert body["error"].startswith(
        "load failed for model 'bad_init': version 1 is at UNAVAILABLE state: "
        "Internal: RuntimeError: init exploded"
    )
    # unknown model: same shape as the parse error
    assert a.load("no_such_model") == (
        500,
        {"error": "failed to load 'no_such_model', failed to poll from model repository"},
    )


def test_new_version_is_served_after_load(
    pair: tuple[TritonProcess, TritonProcess], repo: Path
) -> None:
    a, b = pair
    shutil.copytree(repo / "toy_llm", repo / "toy_llm_v")  # default policy: latest 1 version
    for t in pair:
        assert t.load("toy_llm_v")[0] == 200
        assert t.generate("toy_llm_v", {"text_input": PROMPT})[1]["model_version"] == "1"
    v2 = repo / "toy_llm_v" / "2"
    v2.mkdir()
    (v2 / "model.py").write_text(
        (repo / "toy_llm_v" / "1" / "model.py")
        .read_text()
        .replace("DEFAULT_MAX_TOKENS = 16", "DEFAULT_MAX_TOKENS = 2")
    )
    # only A reloads: A serves version 2, B still version 1 from the same directory
    assert a.load("toy_llm_v") == (200, None)
    status, body = a.generate("toy_llm_v", {"text_input": PROMPT})
    assert status == 200
    assert (body["model_version"], body["text_output"]) == ("2", "fox brown")
    a.wait_states("toy_llm_v", {"1": "UNAVAILABLE", "2": "READY"})  # v1 goes UNLOADING first
    assert a.get("/v2/models/toy_llm_v")[1]["versions"] == ["2"]
    assert b.generate("toy_llm_v", {"text_input": PROMPT})[1]["model_version"] == "1"
    status, body = a.generate("toy_llm_v/versions/1", {"text_input": PROMPT})
    assert status == 503  # an unloaded version asked for by number (no versions at all: 404)
    assert body == {
        "error": "Request for unknown model: 'toy_llm_v' version 1 is not at ready state"
    }


def test_kill_and_restart(
    triton_factory: Callable[..., TritonProcess], triton_model_repo: Path
) -> None:
    t = triton_factory(triton_model_repo, host="127.0.0.4", load_models=["toy_llm"])
    url = t.http_url
    assert t.generate("toy_llm", {"text_input": "a"})[0] == 200
    rss = t.rss_bytes()
    assert rss > 50 * 2**20  # server + one python stub
    t.kill()
    assert not t.running
    with pytest.raises(OSError):
        t.get("/v2/health/live", timeout=2)
    t.restart()
    assert t.http_url == url and t.running
    assert t.model_ready("toy_llm")  # --load-model applies again
    assert t.generate("toy_llm", {"text_input": "a b", "max_tokens": 2})[1]["text_output"] == "b a"
    assert t.stop() == 0
