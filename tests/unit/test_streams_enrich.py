"""Enrichment: protocol sniffing, failure detection, trace ids, record building (pure functions)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.serde import AvroSerde, RegistryClient, load_schema
from streams.enrich import Side, build, parse_time_us, sniff, trace_ids
from tests.support.streams_harness import BASE_US, event, pair


def test_time_parsing_nanoseconds_offsets_and_garbage() -> None:
    assert parse_time_us("2026-01-01T00:00:00Z") == BASE_US
    assert parse_time_us("2026-01-01T00:00:00.81234567Z") == BASE_US + 812345
    assert parse_time_us("2026-01-01T01:00:00.5+01:00") == BASE_US + 500000
    assert parse_time_us("yesterday") is None and parse_time_us(None) is None


@pytest.mark.parametrize(
    ("kind", "body", "protocol", "model", "count"),
    [
        ("request", b'{"instances": [[1, 2], [3, 4]]}', "v1", None, 2),
        ("response", b'{"predictions": [1, 1]}', "v1", None, 2),
        ("request", b'{"inputs":[{"name":"i","shape":[3,4],"datatype":"FP32","data":[]}]}', "v2", None, 3),
        ("response", b'{"id":"x","model_name":"iris","model_version":"2","outputs":[]}', "v2", "iris", None),
        ("request", b'{"model":"llama","messages":[{"role":"user","content":"hi"}]}', "openai", "llama", 1),
        ("response", b'{"object":"chat.completion","model":"llama","choices":[]}', "openai", "llama", None),
        (
            "response",
            b'data: {"model":"llama","choices":[]}\n\ndata: {"choices":[]}\n\ndata: [DONE]\n\n',
            "openai",
            "llama",
            None,
        ),
        ("request", b"", "unknown", None, None),
    ],
)
def test_protocol_detection(kind: str, body: bytes, protocol: str, model: str | None, count: int | None) -> None:
    info = sniff(event("a", kind, BASE_US, body))
    assert (info.protocol, info.model_name, info.instance_count) == (protocol, model, count)
    assert info.error is None and info.unparseable is None


def test_error_object_and_unparseable_and_binary() -> None:
    assert sniff(event("a", "response", BASE_US, b'{"error": "boom"}')).error == "boom"
    sse_err = b'data: {"error": {"message": "overloaded"}}\n\n'
    assert sniff(event("a", "response", BASE_US, sse_err)).error == "overloaded"
    assert sniff(event("a", "request", BASE_US, b"not json at all")).unparseable
    v2bin = b'{"inputs":[{"name":"i","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":3}}]}\x00\x01\x02'
    assert sniff(event("a", "request", BASE_US, v2bin)).protocol == "v2"


def test_trace_ids_from_metadata() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_ids({"Traceparent": [tp], "X-Request-Id": ["r-42"]}, {}) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "r-42",
    )
    assert trace_ids({"X-B3-Traceid": ["abc"], "X-B3-Spanid": ["def"]}, {})[:2] == ("abc", "def")
    assert trace_ids({}, {"traceparent": tp})[0] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_build_complete_record_encodes_with_the_schema() -> None:
    req, resp = pair("a", BASE_US, metadata='{"X-Request-Id":["r-1"]}', annotations='{"team":"fraud"}')
    built = build(Side(req, 3, 10, BASE_US), Side(resp, 3, 11, BASE_US + 20_000), detected_us=BASE_US + 20_000)
    r = built.record
    assert (r["status"], r["protocol"], r["latency_ms"], r["instance_count"]) == ("complete", "v1", 20.0, 1)
    assert r["request_id"] == "r-1" and r["annotations"] == {"team": "fraud"}
    assert r["request"]["offset"] == 10 and r["response"]["partition"] == 3
    assert built.failures == []
    serde = AvroSerde(RegistryClient("http://unused"), "s", load_schema("inference_record"))
    serde.schema_id = 1
    assert serde.encode(r) == serde.encode(dict(r))  # deterministic bytes


def test_build_one_sided_and_error_failures() -> None:
    req = event("a", "request", BASE_US, b'{"instances": [1]}')
    b = build(Side(req, 0, 1, BASE_US), None, detected_us=BASE_US + 30_000_000)
    assert b.record["status"] == "request_only"
    assert [(f["kind"], f["detected_time"]) for f in b.failures] == [("response_missing", BASE_US + 30_000_000)]
    resp = event("a", "response", BASE_US, b'{"error": "bad input"}')
    b = build(Side(req, 0, 1, BASE_US), Side(resp, 0, 2, BASE_US), detected_us=BASE_US)
    assert [f["kind"] for f in b.failures] == ["error_response"] and "bad input" in b.record["error"]
    junk = event("a", "response", BASE_US, b"\xff\xfe garbage")
    b = build(None, Side(junk, 0, 2, BASE_US), detected_us=BASE_US)
    assert [f["kind"] for f in b.failures] == ["request_missing", "unparseable_body"]


def test_a_correction_is_revision_2_and_retracts_only_the_early_sides_signal() -> None:
    req = event("a", "request", BASE_US, b"\xff not json")  # its unparseable_body went out with request_only
    resp = event("a", "response", BASE_US + 50_000_000, b'{"error": "too slow"}')
    early, late = Side(req, 0, 1, BASE_US), Side(resp, 0, 9, BASE_US + 50_000_000)
    first = build(early, None, detected_us=BASE_US + 30_000_000, ordinal=3)
    assert [f["kind"] for f in first.failures] == ["response_missing", "unparseable_body"]
    b = build(early, late, detected_us=BASE_US + 50_000_000, ordinal=3, retracts="response_missing")
    assert (b.record["status"], b.record["ordinal"], b.record["revision"]) == ("complete", 3, 2)
    assert [(f["kind"], f["retracts"], f["ordinal"], f["offset"]) for f in b.failures] == [
        ("retraction", "response_missing", 3, 9),
        ("error_response", None, 3, 9),
    ]
    serde = AvroSerde(RegistryClient("http://unused"), "s", load_schema("failure_signal"))
    serde.schema_id = 1
    assert all(serde.encode(f) for f in b.failures)


@settings(max_examples=400, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.sampled_from(["T", "t", " "]),
    st.integers(0, 9),
    st.sampled_from(["", "Z", "z", "+00:00", "-05:30", "+0130", "+14:00", "-12:00"]),
    st.integers(0, 999_999_999),
)
def test_parse_time_us_fast_path_equals_the_reference(dt: datetime, sep: str, digits: int, tz: str, frac: int) -> None:
    from streams.enrich import _parse_time_us_slow

    fraction = f".{frac:09d}"[: digits + 1] if digits else ""
    text = f"{dt:%Y-%m-%d}{sep}{dt:%H:%M:%S}{fraction}{tz}"
    assert parse_time_us(text) == _parse_time_us_slow(text), text


def test_parse_time_us_odd_but_valid_inputs_keep_their_meaning() -> None:
    from streams.enrich import _parse_time_us_slow

    for text in ["2026-01-01T23:59:60Z", "2024-02-30T00:00:00Z", "0000-01-01T00:00:00Z", "2026-01-01t00:00:00z"]:
        assert parse_time_us(text) == _parse_time_us_slow(text), text
    for text in ["20260101T000000Z", "2026-01-01T00:00Z", "2026-01-01", "2026-01-01T00:00:00.Z"]:
        assert parse_time_us(text) is None, text  # ISO 8601 forms that RFC 3339 does not allow
