"""The search sink against real Kafka, registry and OpenSearch (outages through a local TCP proxy)."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import urllib3

from core.config import CommonConfig
from core.retry import wait_until
from sinks.framework import SinkRunner, run_until
from sinks.opensearch import OpenSearchSink, OpenSearchSinkConfig
from tests.sinks_support import (
    T0_US,
    TcpProxy,
    create_topics,
    group_caught_up,
    kill_loop,
    make_failure,
    make_record,
    produce,
    read_all,
    sink_config,
)

pytestmark = pytest.mark.integration

http = urllib3.PoolManager()


def os_call(cfg: OpenSearchSinkConfig, method: str, path: str, body: Any = None) -> Any:
    import orjson

    resp = http.request(
        method,
        cfg.opensearch_url + path,
        body=None if body is None else orjson.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status < 300, resp.data[:500]
    return orjson.loads(resp.data)


def count(cfg: OpenSearchSinkConfig, dataset: str = "records") -> int:
    os_call(cfg, "POST", f"/{cfg.index_prefix}-{dataset}-*/_refresh")
    return int(os_call(cfg, "GET", f"/{cfg.index_prefix}-{dataset}-*/_count")["count"])


def all_ids(cfg: OpenSearchSinkConfig) -> list[str]:
    # Indexed is not yet searchable: make every acknowledged write visible before counting.
    os_call(cfg, "POST", f"/{cfg.index_prefix}-*/_refresh?ignore_unavailable=true&allow_no_indices=true")
    ids: list[str] = []
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {"size": 5000, "_source": False, "sort": [{"join_key": "asc"}]}
        if after:
            body["search_after"] = after
        hits = os_call(cfg, "POST", f"/{cfg.index_prefix}-records-*/_search", body)["hits"]["hits"]
        if not hits:
            return ids
        ids += [h["_id"] for h in hits]
        after = hits[-1]["sort"]


@pytest.fixture
def cfg(stack: CommonConfig, unique: str) -> Iterator[OpenSearchSinkConfig]:
    cfg = sink_config(stack, unique, OpenSearchSinkConfig, flush_records=500)
    create_topics(cfg)
    yield cfg
    http.request("DELETE", f"{cfg.opensearch_url}/{cfg.index_prefix}-*")
    for dataset in ("records", "failures"):
        http.request("DELETE", f"{cfg.opensearch_url}/_index_template/{cfg.index_prefix}-{dataset}")


def start(cfg: OpenSearchSinkConfig) -> tuple[SinkRunner, threading.Event, threading.Thread, list[BaseException]]:
    runner = SinkRunner(cfg, OpenSearchSink(cfg))
    stop = threading.Event()
    errors: list[BaseException] = []
    thread = run_until(runner, stop, errors.append)
    return runner, stop, thread, errors


def test_mapping_rejection_goes_to_dead_letter_and_failures_are_searchable(cfg: OpenSearchSinkConfig) -> None:
    good = [make_record(i, isvc=("iris", "wine")[i % 2]) for i in range(200)]
    # a trace id longer than Lucene's 32766-byte term limit: valid Avro, valid Kafka, refused by the mapping
    bad = make_record(999, trace_id="t" * 40_000)
    produce(cfg, cfg.topic_records, "inference_record", [*good[:100], bad, *good[100:]])
    failures = [make_failure(i, isvc=("iris", "wine")[i % 2]) for i in range(0, 40, 3)]
    produce(cfg, cfg.topic_failures, "failure_signal", failures)

    runner, stop, thread, errors = start(cfg)
    try:
        wait_until(
            lambda: bool(errors) or group_caught_up(cfg, runner.group, cfg.topics()), timeout_s=60, what="caught up"
        )
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert count(cfg) == 200 and count(cfg, "failures") == len(failures)
    assert runner.stats.dead_lettered == 1 and runner.stats.written == 200 + len(failures)

    (dead,) = read_all(cfg, cfg.topic_deadletter, 1)
    headers = dict(dead.headers())
    assert dead.key() == bad["join_key"].encode()
    assert headers["error.stage"] == b"sink.opensearch" and headers["error.kind"] == b"rejected"
    assert b"immense term" in headers["error.reason"] and b"HTTP 400" in headers["error.reason"]

    # "which requests of model wine failed in the last hour (of record time)?"
    res = os_call(
        cfg,
        "POST",
        f"/{cfg.index_prefix}-failures-*/_search",
        {
            "size": 100,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"model_name": "wine"}},
                        {"range": {"event_time": {"gte": "2024-05-01T07:30:00Z", "lt": "2024-05-01T08:30:00Z"}}},
                    ]
                }
            },
        },
    )
    got = sorted(h["_source"]["join_key"] for h in res["hits"]["hits"])
    assert got == sorted(f["join_key"] for f in failures if f["isvc"] == "wine")
    mapping = os_call(cfg, "GET", f"/{cfg.index_prefix}-records-*/_mapping")
    props = next(iter(mapping.values()))["mappings"]["properties"]
    assert props["model_name"]["type"] == "keyword" and props["event_time"]["type"] == "date"


def test_outage_pauses_the_sink_then_it_catches_up_with_nothing_lost(cfg: OpenSearchSinkConfig) -> None:
    target = urlparse(cfg.opensearch_url)
    proxy = TcpProxy((target.hostname or "127.0.0.1", target.port or 9200))
    proxy.start()
    cfg = dataclasses.replace(cfg, opensearch_url=proxy.url, sink_retry_max_s=1.0, sink_topics=cfg.topic_records)
    direct = dataclasses.replace(cfg, opensearch_url=target.geturl())
    produce(cfg, cfg.topic_records, "inference_record", [make_record(i) for i in range(2000)])
    runner, stop, thread, errors = start(cfg)
    try:
        wait_until(lambda: runner.stats.written == 2000, timeout_s=60, what="first 2000 indexed")
        proxy.stop()  # OpenSearch "goes away"
        produce(cfg, cfg.topic_records, "inference_record", [make_record(i) for i in range(2000, 5000)])
        wait_until(lambda: runner.stats.pauses >= 1 and runner.stats.retried > 0, timeout_s=60, what="paused")
        assert runner.stats.written == 2000
        assert not group_caught_up(cfg, runner.group, [cfg.topic_records])  # nothing committed meanwhile
        proxy.start()
        wait_until(
            lambda: bool(errors) or group_caught_up(cfg, runner.group, [cfg.topic_records]),
            timeout_s=90,
            what="caught up after the outage",
        )
    finally:
        stop.set()
        thread.join(30)
        proxy.stop()
    assert not errors
    assert runner.stats.written >= 5000 and not runner._paused()
    assert count(direct) == 5000


def test_kill9_during_flow_leaves_every_key_indexed_exactly_once(
    cfg: OpenSearchSinkConfig,
    procs: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    cfg = dataclasses.replace(cfg, sink_instance_id="w1", sink_topics=cfg.topic_records)
    kill_loop(cfg, procs, tmp_path / "sink.log", ["sink", "opensearch"])
    ids = all_ids(cfg)
    assert len(ids) == len(set(ids)) == 20_000
    assert set(ids) == {make_record(i)["join_key"] for i in range(20_000)}
    assert T0_US  # records all fall on one day: one index
    indices = os_call(cfg, "GET", f"/_cat/indices/{cfg.index_prefix}-*?format=json")
    assert [i["index"] for i in indices] == [f"{cfg.index_prefix}-records-team-a-2024.05.01"]
