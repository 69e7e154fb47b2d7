"""Slow models in the ``inferlog streams`` worker against the real stack: the per-model pair timeout
(streams/timeouts.py), and the correction of a one-sided record by a partner that came after it (streams/join.py)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from core.config import CommonConfig
from core.keys import partition_for
from schemas import AvroSerde
from streams.config import StreamsConfig
from tests.support import streams_harness as T

pytestmark = pytest.mark.integration

S = 1_000_000
FAST = {
    "pair_timeout_s": 5.0,  # the global timeout: every slow pair below answers after 40 s
    "done_retention_s": 10.0,
    "tick_interval_s": 10.0,
    "idle_timeout_s": 3.0,
    "idle_check_interval_s": 0.5,
    "commit_interval_s": 1.0,
    "session_timeout_s": 6.0,
    "standby_replicas": 0,
}
ANNOTATED = orjson.dumps({"inferlog.io/pair-timeout": "2m", "team": "llm"}).decode()
CHAT_REQ = b'{"model":"llama","messages":[{"role":"user","content":"write a long story"}],"stream":true}'
SSE_RESP = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":'
    b'{"content":"Once"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)
V1_REQ, V1_RESP = b'{"instances": [[1, 2]]}', b'{"predictions": [1]}'
SLOW = {"slow-annotated", "slow-response-first", "slow-metadata", "slow-llm"}


def fillers(cfg: StreamsConfig, at_us: int, tag: str) -> list[Any]:
    """One fast pair at ``at_us`` in every partition: moves each partition's watermark (event time) there."""
    out: list[Any] = []
    seen: set[int] = set()
    i = 0
    while len(seen) < cfg.partitions:
        ce_id = f"fill-{tag}-{i}"
        p = partition_for(f"default/sklearn-iris/predictor/{ce_id}".encode(), cfg.partitions)
        if p not in seen:
            seen.add(p)
            out += T.pair(ce_id, at_us)
        i += 1
    return out


def slow_events(cfg: StreamsConfig) -> list[Any]:
    t = T.BASE_US
    late = t + 40 * S  # later than the global 5 s, within the annotated / metadata / LLM timeouts
    evs: list[Any] = [
        T.event("slow-annotated", "request", t, V1_REQ, annotations=ANNOTATED),
        T.event("slow-plain", "request", t, V1_REQ),
        # response first (in arrival order): it carries the same Ce-Annotations and decides the deadline
        T.event("slow-response-first", "response", t + 1 * S, V1_RESP, annotations=ANNOTATED),
        T.event("slow-metadata", "request", t, V1_REQ, isvc="meta-model"),
        T.event("slow-llm", "request", t, CHAT_REQ, isvc="llm"),
    ]
    for k in (10, 20, 30):
        evs += fillers(cfg, t + k * S, str(k))
    evs += [
        T.event("slow-annotated", "response", late, V1_RESP, annotations=ANNOTATED),
        T.event("slow-plain", "response", late, V1_RESP),
        T.event("slow-response-first", "request", t, V1_REQ, annotations=ANNOTATED),
        T.event("slow-metadata", "response", late, V1_RESP, isvc="meta-model"),
        T.event("slow-llm", "response", late, SSE_RESP, isvc="llm"),
    ]
    return evs + fillers(cfg, t + 3600 * S, "end")  # every partition far past every deadline


def decoded(cfg: StreamsConfig, topic: str, schema: str, recs: list[T.Rec]) -> list[dict[str, Any]]:
    serde = AvroSerde.for_topic(cfg.registry_url, topic, schema)
    return [serde.decode(r.value) for r in recs if r.key is not None]


def run_worker(cfg: StreamsConfig, name: str) -> tuple[list[T.Rec], list[T.Rec]]:
    with T.running_worker(cfg, name):
        T.wait_caught_up(cfg, timeout_s=90)  # every event processed and committed: all outputs are in the topics
        return T.read_to_end(cfg, cfg.topic_records), T.read_to_end(cfg, cfg.topic_failures)


def replay_in_a_fresh_app(cfg: StreamsConfig, unique: str) -> tuple[list[T.Rec], list[T.Rec]]:
    """The events of ``cfg`` read again by a worker of a new app id, into output topics of its own."""
    return run_worker(T.replay_config(cfg, unique[:6]), "replay")


def test_slow_pairs_within_their_own_timeout_complete_and_replay_identically(stack: CommonConfig, unique: str) -> None:
    cfg = T.streams_config(stack, unique, **FAST)
    T.create_topics(cfg)
    exe = str(Path(sys.executable).with_name("inferlog"))
    subprocess.run(
        [exe, "metadata", "set", "default/meta-model", "pair_timeout=2m"],
        env=T.env_for(cfg),
        check=True,
        capture_output=True,
    )
    T.produce(cfg, slow_events(cfg))
    recs, fails = run_worker(cfg, "w")

    statuses: dict[str, list[str]] = defaultdict(list)
    for r in decoded(cfg, cfg.topic_records, "inference_record", recs):
        statuses[r["ce_id"]].append(r["status"])
    failure_kinds = Counter((f["ce_id"], f["kind"]) for f in decoded(cfg, cfg.topic_failures, "failure_signal", fails))
    for ce_id in SLOW:
        assert statuses[ce_id] == ["complete"], ce_id
        assert not [k for k in failure_kinds if k[0] == ce_id], ce_id
    # without an annotation, metadata or LLM body: the global timeout, as before
    assert sorted(statuses["slow-plain"]) == ["request_only", "response_only"]
    assert failure_kinds[("slow-plain", "response_missing")] == 1
    assert failure_kinds[("slow-plain", "request_missing")] == 1
    assert all(s == ["complete"] for k, s in statuses.items() if k.startswith("fill-"))

    # replay of the same range into a fresh app: byte-identical records and failures
    recs2, fails2 = replay_in_a_fresh_app(cfg, unique)

    def strip(rs: list[T.Rec]) -> Counter[tuple[int, bytes | None, bytes]]:
        return Counter((r.partition, r.key, r.value[5:]) for r in rs if r.key is not None)  # minus the schema id

    assert strip(recs2) == strip(recs)
    assert strip(fails2) == strip(fails)


def late_events(cfg: StreamsConfig) -> list[Any]:
    t = T.BASE_US
    evs: list[Any] = [
        T.event("late-plain", "request", t, V1_REQ),  # no annotation: expires after the global 5 s
        T.event("late-mirrored", "response", t + 1 * S, V1_RESP),  # the response is read first
        T.event("late-annotated", "request", t, CHAT_REQ, isvc="llm", annotations=ANNOTATED),
    ]
    for k in (10, 20, 30):
        evs += fillers(cfg, t + k * S, str(k))
    evs += [  # 40 s: past the global timeout, within the late window
        T.event("late-plain", "response", t + 40 * S, V1_RESP),
        T.event("late-mirrored", "request", t, V1_REQ),
        T.event("late-annotated", "response", t + 40 * S, SSE_RESP, isvc="llm", annotations=ANNOTATED),
    ]
    return evs + fillers(cfg, t + 3600 * S, "end")


def test_a_late_partner_corrects_the_one_sided_record_in_kafka_and_opensearch(stack: CommonConfig, unique: str) -> None:
    import urllib3

    from sinks.opensearch import OpenSearchSink, OpenSearchSinkConfig
    from tests.sinks_support import run_caught_up, sink_config

    cfg = T.streams_config(stack, unique, **{**FAST, "done_retention_s": 120.0, "late_window_s": 60.0})
    T.create_topics(cfg)
    T.produce(cfg, late_events(cfg))
    recs, fails = run_worker(cfg, "w")

    by_id: dict[str, list[tuple[str, int, int, bytes | None]]] = defaultdict(list)
    for rec, msg in zip(
        decoded(cfg, cfg.topic_records, "inference_record", recs), [r for r in recs if r.key], strict=True
    ):
        by_id[rec["ce_id"]].append(
            (rec["status"], rec["ordinal"], rec["revision"], msg.headers.get("inferlog_ordinal"))
        )
    signals = defaultdict(list)
    for f in decoded(cfg, cfg.topic_failures, "failure_signal", fails):
        signals[f["ce_id"]].append((f["kind"], f["retracts"], f["ordinal"]))
    # one identity each: the one-sided record, then the complete record that supersedes it; nothing else
    assert by_id["late-plain"] == [("request_only", 1, 1, None), ("complete", 1, 2, None)]
    assert signals["late-plain"] == [("response_missing", None, 1), ("retraction", "response_missing", 1)]
    assert by_id["late-mirrored"] == [("response_only", 1, 1, None), ("complete", 1, 2, None)]
    assert signals["late-mirrored"] == [("request_missing", None, 1), ("retraction", "request_missing", 1)]
    # within its annotated timeout: one record, no failure
    assert by_id["late-annotated"] == [("complete", 1, 1, None)] and "late-annotated" not in signals

    sink_cfg = sink_config(stack, unique, OpenSearchSinkConfig, flush_records=500)
    records_index = f"{sink_cfg.opensearch_url}/{sink_cfg.index_prefix}-records-*"
    http = urllib3.PoolManager()
    try:
        run_caught_up(sink_cfg, OpenSearchSink(sink_cfg), timeout_s=90)
        assert http.request("POST", f"{records_index}/_refresh").status == 200
        query = {"query": {"prefix": {"ce_id": "late-"}}, "size": 50}
        found = http.request("POST", f"{records_index}/_search", json=query).json()["hits"]["hits"]
        docs = sorted((h["_source"]["ce_id"], h["_source"]["status"], h["_source"]["revision"]) for h in found)
        assert docs == [
            ("late-annotated", "complete", 1),
            ("late-mirrored", "complete", 2),
            ("late-plain", "complete", 2),
        ]
    finally:
        http.request("DELETE", f"{sink_cfg.opensearch_url}/{sink_cfg.index_prefix}-*")
        for dataset in ("records", "failures"):
            http.request("DELETE", f"{sink_cfg.opensearch_url}/_index_template/{sink_cfg.index_prefix}-{dataset}")

    # replay of the same range into a fresh app: the corrections come out byte-identical too
    recs2, fails2 = replay_in_a_fresh_app(cfg, unique)

    def exact(rs: list[T.Rec]) -> list[tuple[int, int, bytes | None, bytes, dict[str, bytes]]]:
        return sorted((r.partition, r.offset, r.key, r.value[5:], r.headers) for r in rs)  # minus the schema id

    assert exact(recs2) == exact(recs) and exact(fails2) == exact(fails)
