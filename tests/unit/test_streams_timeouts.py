"""The per-model pair timeout: strict durations, the resolution order, and the join using it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import orjson
import pytest

from streams.enrich import Side, build, event_time_us, sniff
from streams.join import Duplicate, Joiner, Orphan, Outcome, Paired, Tick
from streams.timeouts import INVALID, PairTimeouts, is_openai, parse_duration_us, resolve
from tests.support.streams_harness import BASE_US, event

S = 1_000_000
GLOBAL, LLM = 30 * S, 600 * S
CHAT_REQ = b'{"model":"llama","messages":[{"role":"user","content":"write a long story"}],"stream":true}'
SSE_RESP = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":'
    b'{"content":"Once"},"finish_reason":null}]}\n\ndata: {"id":"c1","object":"chat.completion.chunk",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)
V1_REQ, V1_RESP = b'{"instances": [[1, 2]]}', b'{"predictions": [1]}'


def annotated(value: str, **extra: str) -> str:
    return orjson.dumps({"inferlog.io/pair-timeout": value, **extra}).decode()


def ev(kind: str = "request", body: bytes = V1_REQ, t: int = BASE_US, ce_id: str = "a", **kw: object) -> object:
    return event(ce_id, kind, t, body, **kw)  # type: ignore[arg-type]


def res(e: object, meta: Mapping[str, str] | None = None) -> tuple[int, str]:
    seen: list[tuple[str, str]] = []
    r = resolve(e, meta or {}, default_us=GLOBAL, llm_default_us=LLM, on_invalid=lambda s, v: seen.append((s, v)))  # type: ignore[arg-type]
    return r.timeout_us, r.source


# -- durations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("90s", 90), ("1h30m", 5400), ("1h", 3600), ("2m5s", 125), ("24h", 86400), ("0h1s", 1)],
)
def test_valid_durations(text: str, seconds: int) -> None:
    assert parse_duration_us(text) == seconds * S


@pytest.mark.parametrize(
    "text",
    ["", "10", "600", "1.5h", "10 m", " 10m", "10m ", "10M", "30m1h", "1h1h", "0s", "0h0m", "25h", "86401s", "-5m",
     "10ms", "1d", "m", "h30m5", "\uff11\uff10m", "10m\n"],
)  # fmt: skip
def test_invalid_durations(text: str) -> None:
    assert parse_duration_us(text) is None


# -- resolution order ----------------------------------------------------------------------------------------
def test_annotation_beats_metadata_protocol_and_global() -> None:
    e = ev(body=CHAT_REQ, annotations=annotated("10m", team="fraud"))
    assert res(e, {"pair_timeout": "2m"}) == (600 * S, "annotation")
    assert res(ev(annotations=annotated("90s"))) == (90 * S, "annotation")


def test_metadata_beats_protocol_and_global() -> None:
    assert res(ev(body=CHAT_REQ), {"pair_timeout": "2m", "owner": "x"}) == (120 * S, "metadata")
    assert res(ev(), {"pair_timeout": "1h30m"}) == (5400 * S, "metadata")


def test_protocol_default_for_openai_then_global() -> None:
    assert res(ev(body=CHAT_REQ)) == (LLM, "protocol")
    assert res(ev(body=b'{"model":"m","prompt":"hi"}')) == (LLM, "protocol")
    assert res(ev()) == (GLOBAL, "global")
    assert res(ev(body=b"")) == (GLOBAL, "global")
    assert res(ev(annotations=orjson.dumps({"team": "fraud"}).decode())) == (GLOBAL, "global")


def test_invalid_annotation_falls_through_and_is_counted() -> None:
    before = INVALID.labels(source="annotation")._value.get()
    seen: list[tuple[str, str]] = []
    e = ev(body=CHAT_REQ, annotations=annotated("10 minutes"))
    r = resolve(e, {}, default_us=GLOBAL, llm_default_us=LLM, on_invalid=lambda s, v: seen.append((s, v)))  # type: ignore[arg-type]
    assert (r.timeout_us, r.source) == (LLM, "protocol") and seen == [("annotation", "10 minutes")]
    assert res(ev(annotations=annotated("10 minutes")), {"pair_timeout": "5m"}) == (300 * S, "metadata")
    assert res(ev(annotations=annotated("")), {"pair_timeout": "bogus"}) == (GLOBAL, "global")
    # not a JSON map, or a non-string value: no exception either
    assert res(ev(annotations="not json")) == (GLOBAL, "global")
    assert res(ev(annotations='{"inferlog.io/pair-timeout": 600}')) == (GLOBAL, "global")
    # through the app's resolver: counted in the metric
    timeouts = PairTimeouts(default_us=GLOBAL, llm_default_us=LLM)
    assert timeouts(Side(ev(annotations=annotated("forever")), 0, 0, BASE_US)) == GLOBAL  # type: ignore[arg-type]
    assert INVALID.labels(source="annotation")._value.get() == before + 1


def test_resolver_reads_the_metadata_table_of_the_events_model() -> None:
    table = {"default/llm": {"pair_timeout": "15m"}}
    timeouts = PairTimeouts(default_us=GLOBAL, llm_default_us=LLM, metadata=lambda ns, i: table.get(f"{ns}/{i}", {}))
    assert timeouts(Side(ev(isvc="llm"), 0, 0, BASE_US)) == 900 * S  # type: ignore[arg-type]
    assert timeouts(Side(ev(isvc="other"), 0, 0, BASE_US)) == GLOBAL  # type: ignore[arg-type]


def test_response_first_uses_the_responses_annotations_and_body() -> None:
    # KServe sends the same Ce-Annotations on both events; an OpenAI response body is detected as openai too
    assert res(ev("response", V1_RESP, annotations=annotated("10m"))) == (600 * S, "annotation")
    assert res(ev("response", SSE_RESP)) == (LLM, "protocol")
    assert res(ev("response", b'{"object":"chat.completion","choices":[]}')) == (LLM, "protocol")
    assert res(ev("response", V1_RESP)) == (GLOBAL, "global")


@pytest.mark.parametrize(
    "body",
    [CHAT_REQ, SSE_RESP, V1_REQ, V1_RESP, b"", b"not json", b"  \n data: [DONE]\n", b"\xc2\xa0data: [DONE]\n",
     b"\x1cdata: [DONE]\n", b'{"\\u006dessages": []}', b'{"object": "list"}', b'{"inputs": [1], "prompt": 1}',
     b'{"outputs": [], "model_name": "m"}', b"event: x\ndata: {}\n", b"\xff\xfe", b'{"instances": [], "messages": []}',
     b' {"inputs" : [], "prompt": "x"}', b'{"predictions": [1], "choices": []', b'\x1c{"instances": 1, "prompt": 2}',
     b'{"instances_x": 1, "prompt": "p"}', b'{"data": [1], "messages": []}'],
)  # fmt: skip
@pytest.mark.parametrize("kind", ["request", "response"])
def test_is_openai_agrees_with_sniff(body: bytes, kind: str) -> None:
    e = ev(kind, body)
    assert is_openai(e) == (sniff(e).protocol == "openai")  # type: ignore[arg-type]


# -- the join with per-side timeouts ---------------------------------------------------------------------------
def joiner(meta: Mapping[str, Mapping[str, str]] | None = None) -> Joiner:
    table = meta or {}
    return Joiner(
        {},
        pair_timeout_us=GLOBAL,
        done_retention_us=30 * S,
        tick_interval_us=60 * S,
        timeout_for=PairTimeouts(
            default_us=GLOBAL, llm_default_us=LLM, metadata=lambda ns, i: table.get(f"{ns}/{i}", {})
        ),
    )


def side(e: object, offset: int) -> Side:
    return Side(e, 0, offset, event_time_us(e, 0))  # type: ignore[arg-type]


def noticks(outs: list[Outcome]) -> list[Paired | Orphan | Duplicate]:
    return [o for o in outs if not isinstance(o, Tick)]


def built(outs: list[Outcome]) -> list[tuple[str, list[str]]]:
    out = []
    for o in noticks(outs):
        if isinstance(o, Paired):
            b = build(o.request, o.response, detected_us=o.detected_us)
        else:
            assert isinstance(o, Orphan)
            req, resp = (o.side, None) if o.side.is_request else (None, o.side)
            b = build(req, resp, detected_us=o.detected_us)
        out.append((b.record["status"], [f["kind"] for f in b.failures]))
    return out


def slow_pair(annotations: str | None, *, response_first: bool = False) -> list[tuple[str, list[str]]]:
    """A response 5 minutes after its request (past the 30 s global timeout), then traffic that moves W on."""
    j = joiner()
    req = ev("request", V1_REQ, BASE_US, "slow", annotations=annotations)
    resp = ev("response", V1_RESP, BASE_US + 300 * S, "slow", annotations=annotations)
    first, second = (resp, req) if response_first else (req, resp)
    outs = j.on_event(side(first, 0))
    # other traffic on the partition: W passes the global deadline long before the response
    for i in range(1, 10):
        outs += j.on_event(side(ev("request", V1_REQ, BASE_US + i * 30 * S, f"o{i}"), i))
        outs += j.on_event(side(ev("response", V1_RESP, BASE_US + i * 30 * S + 1, f"o{i}"), 100 + i))
    outs += j.on_event(side(second, 200))
    outs += j.on_event(side(ev("request", V1_REQ, BASE_US + 3600 * S, "late"), 201))  # W far past everything
    return [b for b, o in zip(built(outs), noticks(outs), strict=True) if o.key.endswith("/slow")]


def test_annotated_slow_pair_is_one_complete_record_without_failure() -> None:
    assert slow_pair(annotated("10m")) == [("complete", [])]


def test_annotated_slow_pair_response_first_is_one_complete_record() -> None:
    assert slow_pair(annotated("10m"), response_first=True) == [("complete", [])]


def test_without_annotation_the_slow_pair_expires_as_today() -> None:
    got = slow_pair(None)
    assert got[0] == ("request_only", ["response_missing"])
    # the late response is (until late correction exists) a response_only of its own
    assert got[1:] == [("response_only", ["request_missing"])]


def test_annotated_deadline_is_first_side_time_plus_annotated_timeout() -> None:
    j = joiner()
    req = ev("request", CHAT_REQ, BASE_US, "x", annotations=annotated("1h30m"))
    j.on_event(side(req, 0))
    assert noticks(j.on_event(side(ev("request", V1_REQ, BASE_US + 5400 * S - 1, "y"), 1))) == []
    outs = noticks(j.on_event(side(ev("request", V1_REQ, BASE_US + 5400 * S, "z"), 2)))
    assert [(type(o).__name__, o.detected_us) for o in outs] == [("Orphan", BASE_US + 5400 * S)]  # type: ignore[union-attr]


def test_openai_request_gets_the_llm_default_and_metadata_overrides_it() -> None:
    j = joiner({"default/sklearn-iris": {"pair_timeout": "2m"}})
    j.on_event(side(ev("request", CHAT_REQ, BASE_US, "m"), 0))
    outs = noticks(j.on_event(side(ev("request", V1_REQ, BASE_US + 120 * S, "n"), 1)))
    assert [o.detected_us for o in outs if isinstance(o, Orphan)] == [BASE_US + 120 * S]
    j = joiner()
    j.on_event(side(ev("request", CHAT_REQ, BASE_US, "m"), 0))
    assert noticks(j.on_event(side(ev("request", V1_REQ, BASE_US + LLM - 1, "n"), 1))) == []
    outs = noticks(j.on_event(side(ev("request", V1_REQ, BASE_US + LLM, "o"), 2)))
    assert [o.detected_us for o in outs if isinstance(o, Orphan)] == [BASE_US + LLM]


def test_deadline_survives_a_restart_from_the_store() -> None:
    store: dict[str, bytes] = {}
    j = joiner()
    j.store = store
    j.on_event(side(ev("request", V1_REQ, BASE_US, "r", annotations=annotated("10m")), 0))
    j2 = Joiner(store, pair_timeout_us=GLOBAL, done_retention_us=30 * S, tick_interval_us=60 * S)  # no resolver
    assert noticks(j2.on_event(side(ev("request", V1_REQ, BASE_US + 599 * S, "q"), 1))) == []
    resp = ev("response", V1_RESP, BASE_US + 599 * S, "r", annotations=annotated("10m"))
    assert [type(o).__name__ for o in noticks(j2.on_event(side(resp, 2)))] == ["Paired"]


def test_same_events_same_outcomes() -> None:
    def run() -> list[object]:
        j = joiner()
        outs: list[object] = []
        for i, e in enumerate(
            [
                ev("request", CHAT_REQ, BASE_US, "a"),
                ev("response", V1_RESP, BASE_US + 1, "b", annotations=annotated("1m")),
                ev("request", V1_REQ, BASE_US + 7200 * S, "c"),
            ]
        ):
            outs += [dataclasses.astuple(o) for o in j.on_event(side(e, i))]
        return outs

    assert run() == run()


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_llm_pair_timeout_setting_is_validated(value: float) -> None:
    from core.errors import ConfigError
    from streams.config import StreamsConfig

    assert StreamsConfig().llm_pair_timeout_s == 600.0
    with pytest.raises(ConfigError, match="INFERLOG_LLM_PAIR_TIMEOUT_S"):
        StreamsConfig(llm_pair_timeout_s=value).validate()
