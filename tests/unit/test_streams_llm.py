"""LLM fields of openai-protocol records (streams/llm.py, called from streams/enrich.py's sniff)."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest

from schemas.serde import load_schema
from streams import llm
from streams.enrich import Side, build, sniff
from tests.support.streams_harness import BASE_US, event

ROOT = Path(__file__).resolve().parents[2]
LLM_FIELDS = (
    "llm_prompt",
    "llm_completion",
    "llm_finish_reason",
    "llm_choices",
    "llm_prompt_tokens",
    "llm_completion_tokens",
    "llm_total_tokens",
)

CHAT_REQUEST = {
    "model": "llama-3-8b",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
    ],
    "stream": False,
}
CHAT_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "llama-3-8b",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "A cat."}, "logprobs": None, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 3, "total_tokens": 34},
}
COMPLETION_RESPONSE = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "gpt2",
    "choices": [
        {"index": 1, "text": " second", "logprobs": None, "finish_reason": "length"},
        {"index": 0, "text": " first", "logprobs": None, "finish_reason": "stop"},
    ],
    "usage": {"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18},
}
TOOL_CALL_RESPONSE = {
    "object": "chat.completion",
    "model": "llama-3-8b",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "finish_reason": "tool_calls",
        }
    ],
}


def sse(*chunks: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + (c if isinstance(c, bytes) else orjson.dumps(c)) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chat_chunk(content: str | None, finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-2",
        "object": "chat.completion.chunk",
        "model": "llama-3-8b",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE_CHUNK = {
    "id": "chatcmpl-2",
    "object": "chat.completion.chunk",
    "model": "llama-3-8b",
    "choices": [],
    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
}


def info(kind: str, body: bytes) -> llm.LlmInfo | None:
    got = sniff(event("a", kind, BASE_US, body))
    return got.llm


def test_chat_request_prompt_text_form() -> None:
    assert info("request", orjson.dumps(CHAT_REQUEST)) == llm.LlmInfo(
        prompt="system: You are terse.\n"
        "user: What is this?\n[image_url]\n"
        'assistant:  [tool_call lookup({"q": "cat"})]\n'
        "tool: a cat"
    )


@pytest.mark.parametrize(
    ("prompt", "text"),
    [("Say hi", "Say hi"), (["one", "two"], "one\ntwo"), ([[1, 2, 3]], None), ([15496, 11], None), (None, None)],
)
def test_completions_request_prompt(prompt: Any, text: str | None) -> None:
    got = info("request", orjson.dumps({"model": "gpt2", "prompt": prompt, "max_tokens": 16}))
    assert got == llm.LlmInfo(prompt=text)


def test_chat_response() -> None:
    assert info("response", orjson.dumps(CHAT_RESPONSE)) == llm.LlmInfo(None, "A cat.", "stop", 1, 31, 3, 34)


def test_completions_response_takes_the_choice_with_index_0_and_counts_all() -> None:
    assert info("response", orjson.dumps(COMPLETION_RESPONSE)) == llm.LlmInfo(None, " first", "stop", 2, 2, 16, 18)


def test_tool_call_response_has_no_completion_text_and_no_usage() -> None:
    assert info("response", orjson.dumps(TOOL_CALL_RESPONSE)) == llm.LlmInfo(None, None, "tool_calls", 1)


def test_stream_with_usage() -> None:
    body = sse(
        chat_chunk(None) | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        chat_chunk("Hel"),
        chat_chunk("lo"),
        chat_chunk("!"),
        chat_chunk(None, "stop"),
        USAGE_CHUNK,
    )
    assert info("response", body) == llm.LlmInfo(None, "Hello!", "stop", 1, 9, 4, 13)


def test_stream_without_usage() -> None:
    body = sse(chat_chunk("Hi"), chat_chunk(" there", "length"))
    assert info("response", body) == llm.LlmInfo(None, "Hi there", "length", 1)


def test_stream_last_usage_and_last_finish_reason_win() -> None:
    early = {**USAGE_CHUNK, "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}
    body = sse(chat_chunk("a", usage=early["usage"]), chat_chunk(None, "stop"), chat_chunk(None), USAGE_CHUNK)
    assert info("response", body) == llm.LlmInfo(None, "a", "stop", 1, 9, 4, 13)


def test_stream_of_several_choices_assembles_choice_0() -> None:
    body = sse(
        chat_chunk("A", index=0),
        chat_chunk("X", index=1),
        chat_chunk("B", index=0),
        chat_chunk("Y", "length", index=1),
        chat_chunk(None, "stop", index=0),
    )
    assert info("response", body) == llm.LlmInfo(None, "AB", "stop", 2)


def test_completions_stream() -> None:
    chunks: list[dict[str, Any]] = [
        {"object": "text_completion", "model": "gpt2", "choices": [{"index": 0, "text": t}]} for t in "abc"
    ]
    chunks[-1]["choices"][0]["finish_reason"] = "length"
    assert info("response", sse(*chunks)) == llm.LlmInfo(None, "abc", "length", 1)


def test_stream_of_tool_calls_has_no_completion_text() -> None:
    call = {"index": 0, "id": "c3", "type": "function", "function": {"name": "f", "arguments": ""}}
    first = chat_chunk(None) | {"choices": [{"index": 0, "delta": {"content": None, "tool_calls": [call]}}]}
    body = sse(first, chat_chunk(None, "tool_calls"))
    assert info("response", body) == llm.LlmInfo(None, None, "tool_calls", 1)


def test_stream_with_raw_line_separators_in_the_text_and_crlf_lines() -> None:
    """U+2028/U+2029/U+0085 may stand raw in JSON strings: they do not end an SSE line (only CR/LF do)."""
    body = sse(chat_chunk("a\u2028b\u2029c\x85d"), chat_chunk("!", "stop")).replace(b"\n", b"\r\n")
    assert info("response", body) == llm.LlmInfo(None, "a\u2028b\u2029c\x85d!", "stop", 1)


def test_truncated_stream_keeps_what_arrived() -> None:
    """Cut between chunks (no finish, no [DONE]): the text so far, nothing invented."""
    body = sse(chat_chunk("Once"), chat_chunk(" upon"), done=False)
    assert info("response", body) == llm.LlmInfo(None, "Once upon", None, 1)


def test_stream_cut_inside_a_chunk_is_unparseable_and_has_no_llm_fields() -> None:
    body = sse(chat_chunk("Once"), done=False) + b'data: {"choices": [{"index": 0, "delta": {"content": " up'
    got = sniff(event("a", "response", BASE_US, body))
    assert got.protocol == "openai" and got.unparseable and got.llm is None


def test_non_json_chunk_is_unparseable_and_has_no_llm_fields() -> None:
    got = sniff(event("a", "response", BASE_US, sse(chat_chunk("x"), b"not json")))
    assert got.protocol == "openai" and got.unparseable == "SSE chunk is not JSON: 'not json'" and got.llm is None


def test_chunks_that_are_not_objects_are_ignored() -> None:
    body = sse([1, 2], "text", chat_chunk("ok", "stop"), 7)
    assert info("response", body) == llm.LlmInfo(None, "ok", "stop", 1)
    assert info("response", sse([1], None)) == llm.EMPTY


@pytest.mark.parametrize("body", [b"[1, 2]", b'"just a string"', b"42", b"null", b"not json", b"{trunc"])
def test_bodies_that_are_not_objects_stay_unknown(body: bytes) -> None:
    got = sniff(event("a", "response", BASE_US, body))
    assert got.protocol == "unknown" and got.llm is None


def test_odd_values_give_nulls_not_exceptions() -> None:
    odd = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": "not an object", "finish_reason": 3}, "junk"],
        "usage": {"prompt_tokens": "9", "completion_tokens": True, "total_tokens": 5},
    }
    assert info("response", orjson.dumps(odd)) == llm.LlmInfo(None, None, None, 2, None, None, 5)
    assert info("response", orjson.dumps({"choices": "x", "usage": [1]})) == llm.EMPTY
    msgs = {"messages": [{"content": "no role"}, "skipped", {"role": "user", "content": {"weird": 1}}]}
    assert info("request", orjson.dumps(msgs)) == llm.LlmInfo(prompt='?: no role\nuser: {"weird": 1}')


def test_texts_are_capped() -> None:
    long = "x" * (llm.MAX_TEXT + 10)
    assert info("request", orjson.dumps({"prompt": long})) == llm.LlmInfo(prompt="x" * llm.MAX_TEXT)
    body = sse(*(chat_chunk("y" * 1000) for _ in range(20)))
    got = info("response", body)
    assert got is not None and got.completion == "y" * llm.MAX_TEXT


def _record(req_body: bytes | None, resp_body: bytes | None) -> dict[str, Any]:
    req = Side(event("c1", "request", BASE_US, req_body), 0, 1, BASE_US) if req_body is not None else None
    t = BASE_US + 900_000
    resp = Side(event("c1", "response", t, resp_body), 0, 2, t) if resp_body is not None else None
    return build(req, resp, detected_us=t).record


def test_build_sets_the_llm_fields_of_a_streamed_chat() -> None:
    req = orjson.dumps({**CHAT_REQUEST, "stream": True, "stream_options": {"include_usage": True}})
    r = _record(req, sse(chat_chunk("Hel"), chat_chunk("lo", "stop"), USAGE_CHUNK))
    assert r["protocol"] == "openai" and r["model_name"] == "llama-3-8b" and r["error"] is None
    assert {k: r[k] for k in LLM_FIELDS} == {
        "llm_prompt": llm.prompt_text(CHAT_REQUEST),
        "llm_completion": "Hello",
        "llm_finish_reason": "stop",
        "llm_choices": 1,
        "llm_prompt_tokens": 9,
        "llm_completion_tokens": 4,
        "llm_total_tokens": 13,
    }
    names = list(r)
    assert names[names.index(LLM_FIELDS[0]) :][: len(LLM_FIELDS)] == list(LLM_FIELDS)
    assert r == _record(req, sse(chat_chunk("Hel"), chat_chunk("lo", "stop"), USAGE_CHUNK))  # pure


def test_build_one_sided_and_non_llm_records() -> None:
    req_only = _record(orjson.dumps({"prompt": "Say hi"}), None)
    assert req_only["llm_prompt"] == "Say hi" and all(req_only[k] is None for k in LLM_FIELDS[1:])
    resp_only = _record(None, orjson.dumps(CHAT_RESPONSE))
    assert resp_only["llm_prompt"] is None and resp_only["llm_total_tokens"] == 34
    v1 = _record(b'{"instances": [[1]]}', b'{"predictions": [1]}')
    assert v1["protocol"] == "v1" and all(v1[k] is None for k in LLM_FIELDS)
    garbage = _record(b"not json", sse(b"not json"))
    assert garbage["protocol"] == "openai" and garbage["error"] and all(garbage[k] is None for k in LLM_FIELDS)
    unknown = _record(b"not json", b"\x00\x01")
    assert unknown["protocol"] == "unknown" and all(unknown[k] is None for k in LLM_FIELDS)
    assert unknown["request"]["body"] == b"not json"  # nothing lost


def _schema_before_the_llm_fields() -> dict[str, Any] | None:
    """The newest committed version of the record schema without the llm_* fields (git HEAD's before they are
    committed, the one before after)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)

    for commit in git("log", "--format=%H", "--", "schemas/inference_record.avsc").stdout.split():
        shown = git("show", f"{commit}:schemas/inference_record.avsc")
        if shown.returncode == 0:
            schema: dict[str, Any] = json.loads(shown.stdout)
            if not any(f["name"].startswith("llm_") for f in schema["fields"]):
                return schema
    return None


def test_records_written_with_the_previous_schema_decode_with_the_new_one() -> None:
    """BACKWARD evolution: a record written with the schema before the llm_* fields decodes with today's; the
    new fields take their null defaults."""
    old = _schema_before_the_llm_fields()
    if old is None:
        pytest.skip("no git history of the schema here")
    new = json.loads(load_schema("inference_record"))
    names = [f["name"] for f in new["fields"]]
    assert names[names.index(LLM_FIELDS[0]) :][: len(LLM_FIELDS)] == list(LLM_FIELDS)
    assert all(f["type"][0] == "null" and f["default"] is None for f in new["fields"] if f["name"] in LLM_FIELDS)
    record = _record(b'{"instances": [[1]]}', b'{"predictions": [1]}')
    old_record = {f["name"]: record[f["name"]] for f in old["fields"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), old_record)
    buf.seek(0)
    decoded = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    assert isinstance(decoded, dict)
    assert list(decoded) == [f["name"] for f in new["fields"]]
    assert {k: decoded[k] for k in LLM_FIELDS} == dict.fromkeys(LLM_FIELDS)
    assert (decoded["join_key"], decoded["status"], decoded["protocol"]) == (
        "default/sklearn-iris/predictor/c1",
        "complete",
        "v1",
    )
    assert decoded["response"]["body"] == b'{"predictions": [1]}'
