"""OpenAI ↔ Triton mapping (desired/gateway/openai_mapping.py): chat templates, request
translation and refusals, response parsing, streaming assembly with stop
sequences, embeddings."""

from __future__ import annotations

import base64
import itertools
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tritonfleet.desired.gateway.openai_mapping import (
    BUILTIN_TEMPLATES,
    EmbeddingMapping,
    GenerateMapping,
    RequestError,
    StreamAssembler,
    build_embedding_request,
    build_generate_request,
    chunk_body,
    completion_body,
    embedding_batches,
    embeddings_body,
    estimate_tokens,
    infer_body,
    message_pairs,
    parse_generate_response,
    parse_infer_embeddings,
    template_from,
    usage_chunk,
)

MAPPING = GenerateMapping(chat_template=BUILTIN_TEMPLATES["plain"])


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi there"}], **kw}


# --- chat templates -----------------------------------------------------------


def test_chatml_renders_roles_and_generation_prompt() -> None:
    text = BUILTIN_TEMPLATES["chatml"].render([("system", "be brief"), ("user", "hi")])
    assert text == (
        "<|im_start|>system\nbe brief<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_template_and_role_renames() -> None:
    text = BUILTIN_TEMPLATES["llama3"].render([("developer", "rules"), ("user", "q")])
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nrules")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_content_with_placeholders_is_not_substituted() -> None:
    text = BUILTIN_TEMPLATES["plain"].render([("user", "say {role} and {content}")])
    assert text == "user: say {role} and {content}\nassistant:"


def test_custom_template_and_unknown_name() -> None:
    t = template_from({"message": "[{role}] {content}|", "begin": "<s>", "generationPrompt": ">"})
    assert t.render([("user", "a"), ("assistant", "b")]) == "<s>[user] a|[assistant] b|>"
    with pytest.raises(ValueError, match="unknown chat template"):
        template_from("nope")
    with pytest.raises(ValueError, match="content"):
        template_from({"message": "{role} only"})


def test_message_validation() -> None:
    assert message_pairs([{"role": "user", "content": [{"type": "text", "text": "a"}]}]) == [
        ("user", "a")
    ]
    assert message_pairs([{"role": "assistant", "content": None}]) == [("assistant", "")]
    for bad, param in [
        ([], "messages"),
        ("x", "messages"),
        ([{"role": "robot", "content": "x"}], "messages[0].role"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content[0]"),
        ([{"role": "assistant", "tool_calls": [{}]}], "messages[0].tool_calls"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
    ]:
        with pytest.raises(RequestError) as err:
            message_pairs(bad)
        assert err.value.param == param


# --- requests -------------------------------------------------------------------


def test_chat_request_maps_fields_to_inputs() -> None:
    req = build_generate_request(
        chat(max_tokens=5, temperature=0.5, top_p=0.9, stream=True, user="u1"), MAPPING, chat=True
    )
    assert req.body == {
        "text_input": "user: hi there\nassistant:",
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
    }
    assert req.stream and not req.include_usage and req.max_tokens == 5 and req.chat


def test_max_completion_tokens_and_include_usage() -> None:
    req = build_generate_request(
        chat(max_completion_tokens=7, stream=True, stream_options={"include_usage": True}),
        MAPPING,
        chat=True,
    )
    assert req.body["max_tokens"] == 7 and req.include_usage


def test_completion_prompt_forms() -> None:
    assert build_generate_request({"prompt": "x"}, MAPPING, chat=False).prompt == "x"
    assert build_generate_request({"prompt": ["y"]}, MAPPING, chat=False).prompt == "y"
    with pytest.raises(RequestError, match="batched"):
        build_generate_request({"prompt": ["a", "b"]}, MAPPING, chat=False)
    with pytest.raises(RequestError):
        build_generate_request({"prompt": [1, 2]}, MAPPING, chat=False)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("n", 2, "unsupported_parameter"),
        ("logprobs", True, "unsupported_parameter"),
        ("presence_penalty", 0.5, "unsupported_parameter"),
        ("tools", [{"type": "function"}], "unsupported_parameter"),
        ("response_format", {"type": "json_object"}, "unsupported_parameter"),
        ("bogus", 1, "unsupported_parameter"),
        ("max_tokens", 0, "invalid_request_error"),
        ("max_tokens", "many", "invalid_request_error"),
        ("temperature", 3, "invalid_request_error"),
        ("top_p", -0.1, "invalid_request_error"),
        ("stop", ["a", "b", "c", "d", "e"], "invalid_request_error"),
    ],
)
def test_refusals_name_the_parameter(field: str, value: Any, code: str) -> None:
    with pytest.raises(RequestError) as err:
        build_generate_request(chat(**{field: value}), MAPPING, chat=True)
    assert err.value.param == field or (field == "max_tokens" and err.value.param == "max_tokens")
    assert err.value.code == code
    assert err.value.status == 400


def test_neutral_and_ignored_values_are_accepted_unmapped() -> None:
    mapping = GenerateMapping(inputs={"max_tokens": "max_tokens"}, ignore=frozenset({"seed"}))
    req = build_generate_request(
        chat(top_p=1, presence_penalty=0, n=1, logprobs=False, seed=42, tools=[]),
        mapping,
        chat=True,
    )
    assert set(req.body) == {"text_input"}


def test_custom_inputs_extra_inputs_and_mapped_stop() -> None:
    mapping = GenerateMapping(
        prompt_input="prompt",
        inputs={"stop": "stop_words", "token_delay_ms": "token_delay_ms", "seed": "random_seed"},
        extra_inputs={"stream": False, "beam_width": 1},
    )
    req = build_generate_request(chat(stop="END", token_delay_ms=5, seed=3), mapping, chat=True)
    assert req.body["stop_words"] == ["END"]
    assert req.body["token_delay_ms"] == 5 and req.body["random_seed"] == 3
    assert req.body["beam_width"] == 1 and req.stops == ()


def test_unmapped_stop_is_applied_by_the_gateway() -> None:
    req = build_generate_request(chat(stop=["\n\n", "END"]), MAPPING, chat=True)
    assert req.stops == ("\n\n", "END") and "stop" not in req.body


# --- responses -------------------------------------------------------------------


def _req(**kw: Any) -> Any:
    return build_generate_request(chat(**kw), MAPPING, chat=True)


def test_parse_response_uses_model_counts() -> None:
    resp = {
        "text_output": "fox brown",
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "finish_reason": "length",
    }
    gen = parse_generate_response(resp, MAPPING, _req(max_tokens=2))
    assert (gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens) == (
        "fox brown",
        "length",
        4,
        2,
    )
    assert not gen.estimated


def test_parse_response_batched_lists_and_estimates() -> None:
    mapping = GenerateMapping(prompt_tokens_output=None, finish_reason_output=None)
    gen = parse_generate_response(
        {"text_output": [["hello world"]], "completion_tokens": [[3]]}, mapping, _req(max_tokens=3)
    )
    assert gen.text == "hello world" and gen.completion_tokens == 3
    assert gen.estimated and gen.prompt_tokens == estimate_tokens(_req().prompt)
    assert gen.finish_reason == "length"  # completion hit max_tokens


def test_parse_response_cuts_at_gateway_stop() -> None:
    gen = parse_generate_response(
        {"text_output": "one two END three", "prompt_tokens": 1, "completion_tokens": 4},
        MAPPING,
        _req(stop="END"),
    )
    assert gen.text == "one two " and gen.finish_reason == "stop" and gen.estimated


@pytest.mark.parametrize(
    ("raw", "count", "max_tokens", "want"),
    [("eos", 1, None, "stop"), ("", 5, 5, "length"), (None, 2, 5, "stop"), ("weird", 1, 1, "stop")],
)
def test_finish_reasons(raw: Any, count: int, max_tokens: int | None, want: str) -> None:
    resp = {
        "text_output": "x",
        "prompt_tokens": 1,
        "completion_tokens": count,
        "finish_reason": raw,
    }
    assert parse_generate_response(resp, MAPPING, _req(max_tokens=max_tokens)).finish_reason == want


def test_openai_bodies() -> None:
    gen = parse_generate_response(
        {"text_output": "a", "prompt_tokens": 2, "completion_tokens": 1}, MAPPING, _req()
    )
    body = completion_body("id1", 7, "m", gen, chat=True)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "a"}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
    text = completion_body("id2", 7, "m", gen, chat=False)
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "a"
    first = chunk_body("id1", 7, "m", chat=True, text="x", first=True)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "x"}
    last = chunk_body("id1", 7, "m", chat=True, text=None, finish_reason="stop")
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    usage = usage_chunk("id1", 7, "m", gen, chat=True)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 3


# --- streaming -------------------------------------------------------------------


def _events(pieces: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "text_output": p,
            "prompt_tokens": 3,
            "completion_tokens": i + 1,
            "finish_reason": "length" if i == len(pieces) - 1 else "",
        }
        for i, p in enumerate(pieces)
    ]


def test_stream_assembler_deltas_and_counts() -> None:
    asm = StreamAssembler(MAPPING, _req(max_tokens=3))
    out = [asm.feed(e) for e in _events(["fox", " brown", " quick"])]
    assert out == ["fox", " brown", " quick"] and asm.flush() == ""
    gen = asm.result()
    assert (gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens) == (
        "fox brown quick",
        "length",
        3,
        3,
    )
    assert not gen.estimated


def test_stream_assembler_cumulative_output() -> None:
    mapping = GenerateMapping(stream_output="cumulative")
    asm = StreamAssembler(mapping, _req())
    assert [asm.feed({"text_output": t}) for t in ["a", "a b", "a b c"]] == ["a", " b", " c"]


def test_stream_stop_split_across_events() -> None:
    asm = StreamAssembler(MAPPING, _req(stop="STOP"))
    released = [asm.feed({"text_output": p}) for p in ["one ST", "O", "P two"]]
    assert "".join(released) == "one " and asm.done and asm.result().finish_reason == "stop"


def test_the_stop_completed_first_cuts_streamed_and_whole_alike() -> None:
    """Generation stops when a stop sequence is complete: "a" completes before "XaX" in "XXaX"
    (found by the property test below, when the cut was chosen by where a stop began)."""
    req = _req(stop=["a", "XaX"])
    assert parse_generate_response({"text_output": "XXaX"}, MAPPING, req).text == "XX"
    asm = StreamAssembler(MAPPING, req)
    assert asm.feed({"text_output": "XXa"}) + asm.feed({"text_output": "X"}) == "XX"


def test_stream_held_text_released_when_no_stop_follows() -> None:
    asm = StreamAssembler(MAPPING, _req(stop="STOP"))
    assert asm.feed({"text_output": "abc ST"}) == "abc "
    assert asm.feed({"text_output": "ART"}) == "START"
    assert asm.feed({"text_output": " S"}) == " "
    assert asm.flush() == "S"
    assert asm.result().text == "abc START S"


@given(
    text=st.text(alphabet="abXY \n", max_size=40),
    stops=st.lists(st.text(alphabet="abXY\n", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=8),
)
def test_stream_stop_matches_whole_text_cut(text: str, stops: list[str], cuts: list[int]) -> None:
    """However the text is split into events, the client gets the text up to
    the first stop sequence — exactly what the non-streamed answer gives."""
    req = _req(stop=stops[:4])
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    asm = StreamAssembler(MAPPING, req)
    sent = "".join(asm.feed({"text_output": p}) for p in pieces) + asm.flush()
    whole = parse_generate_response({"text_output": text}, MAPPING, req).text
    assert sent == whole


# --- embeddings ------------------------------------------------------------------


def test_embedding_request_and_refusals() -> None:
    assert build_embedding_request({"model": "e", "input": "x"}).texts == ["x"]
    req = build_embedding_request({"model": "e", "input": ["a", "b"], "encoding_format": "base64"})
    assert req.texts == ["a", "b"] and req.base64
    for bad in [{"input": [1, 2]}, {"input": []}, {"input": "x", "dimensions": 8}, {"input": 3}]:
        with pytest.raises(RequestError):
            build_embedding_request({"model": "e", **bad})


def test_infer_body_shapes_and_batches() -> None:
    m = EmbeddingMapping(max_batch_size=2)
    assert infer_body(["a", "b"], m)["inputs"][0]["shape"] == [2, 1]
    assert infer_body(["a"], EmbeddingMapping(batched=False))["inputs"][0]["shape"] == [1]
    assert embedding_batches(["a", "b", "c"], m) == [["a", "b"], ["c"]]
    assert embedding_batches(["a", "b", "c"], EmbeddingMapping()) == [["a", "b", "c"]]


def test_parse_infer_and_body() -> None:
    resp = {"outputs": [{"name": "embedding", "shape": [2, 2], "data": [1, 0, 0.5, 0.5]}]}
    vectors = parse_infer_embeddings(resp, EmbeddingMapping(), 2)
    assert vectors == [[1.0, 0.0], [0.5, 0.5]]
    with pytest.raises(ValueError):
        parse_infer_embeddings(resp, EmbeddingMapping(), 3)
    with pytest.raises(ValueError):
        parse_infer_embeddings({"outputs": []}, EmbeddingMapping(), 1)
    body = embeddings_body("e", vectors, ["a b", "c"], b64=True)
    packed = base64.b64decode(body["data"][1]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, 0.5)
    assert body["usage"]["tritonfleet_estimated"] is True
