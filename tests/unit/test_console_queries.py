"""The console's query builders, time ranges and body rendering (no OpenSearch: the queries are plain dicts)."""

from __future__ import annotations

import pytest

from inferlog.console import queries
from inferlog.console.app import replay_commands
from inferlog.console.bodies import body


def test_time_ranges_are_a_fixed_set_with_an_interval_each() -> None:
    assert queries.time_range(None) == ("1h", 3600, "1m")
    assert queries.time_range("7d") == ("7d", 7 * 86400, "3h")
    for name, (seconds, interval) in queries.RANGES.items():
        unit = {"s": 1, "m": 60, "h": 3600}[interval[-1]]
        assert 20 <= seconds / (int(interval[:-1]) * unit) <= 60, name  # a readable number of chart buckets
    with pytest.raises(queries.QueryError):
        queries.time_range("99y")


def test_every_query_is_bounded_in_time_and_scoped_to_the_callers_namespaces() -> None:
    q = queries.overview("15m", ["team-a"])
    filters = q["query"]["bool"]["filter"]
    assert {"range": {"@timestamp": {"gte": "now-900s", "lte": "now"}}} in filters
    assert {"terms": {"namespace": ["team-a"]}} in filters
    assert not any("terms" in f for f in queries.overview("15m")["query"]["bool"]["filter"])  # all namespaces
    assert q["aggs"]["models"]["aggs"]["over_time"]["date_histogram"]["fixed_interval"] == "30s"
    m = queries.model("ns", "iris", "6h")["query"]["bool"]["filter"]
    assert {"term": {"namespace": "ns"}} in m and {"term": {"isvc": "iris"}} in m


def test_record_filters_are_validated_and_become_filters_paging_and_free_text() -> None:
    flt = queries.RecordFilter.parse({"status": "request_only", "protocol": "openai", "q": " timeout ", "page": "2"})
    assert flt == queries.RecordFilter("request_only", "openai", "timeout", 2)
    q = queries.records("ns", "iris", "1h", flt)
    filters = q["query"]["bool"]["filter"]
    assert {"term": {"status": "request_only"}} in filters and {"term": {"protocol": "openai"}} in filters
    should = q["query"]["bool"]["must"][0]["bool"]["should"]
    assert should[0]["simple_query_string"]["query"] == "timeout" and {"term": {"ce_id": "timeout"}} in should
    assert (q["from"], q["size"]) == (2 * queries.PAGE_SIZE, queries.PAGE_SIZE)
    assert q["sort"][0] == {"@timestamp": "desc"}
    assert "must" not in queries.records("ns", "iris", "1h", queries.RecordFilter())["query"]["bool"]
    for bad in ({"status": "failed"}, {"protocol": "grpc"}, {"page": "-1"}, {"page": "x"}, {"q": "x" * 201}):
        with pytest.raises(queries.QueryError):
            queries.RecordFilter.parse(bad)
    with pytest.raises(queries.QueryError):
        queries.RecordFilter.parse({"page": str(queries.MAX_PAGE + 1)})


def test_bodies_are_pretty_json_sse_events_base64_or_claim_checked() -> None:
    doc = {
        "request_body": '{"instances":[[1,2]]}',
        "request_body_encoding": "utf8",
        "response_body": 'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n',
        "response_body_encoding": "utf8",
    }
    assert body(doc, "request").kind == "json" and body(doc, "request").text.startswith("{\n")
    sse = body(doc, "response")
    assert sse.kind == "sse" and len(sse.events) == 2 and sse.events[1] == "[DONE]"
    assert body({"request_body": "AAEC", "request_body_encoding": "base64"}, "request").kind == "base64"
    truncated = body({"request_body": '{"a": [1, 2', "request_body_truncated": True}, "request")
    assert truncated.kind == "text" and truncated.truncated
    ref = body({"request_dataref": "s3://b/k", "request_size": 900000}, "request")
    assert (ref.kind, ref.dataref, ref.size) == ("claim-checked", "s3://b/k", 900000)
    assert body({}, "response").kind == "none"
    assert body({"request_body": "<script>x</script>"}, "request").text == "<script>x</script>"  # escaped later


def test_the_replay_command_covers_both_events_of_the_record() -> None:
    doc = {
        "join_key": "ns/iris/predictor/id 1",
        "request_source_partition": 3,
        "request_source_offset": 60,
        "response_source_partition": 3,
        "response_source_offset": 58,
    }
    (_, to_topic), (_, to_http) = replay_commands(doc, "inferlog.events")
    assert to_topic == (
        "inferlog replay --partition 3 --from-offsets 3:58 --to-offsets 3:61 --id 'ns/iris/predictor/id 1' "
        "--to-topic inferlog.events"
    )
    assert to_http.endswith("--to-http http://MODEL_URL")
    assert replay_commands({"join_key": "k"}, "t") == []
