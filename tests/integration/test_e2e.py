"""End to end on the local real stack: `inferlog run` (ingest, streams, every sink) with demo traffic; every
record reaches Parquet and OpenSearch and the reconciliation balances; replaying the time range into the
pipeline changes nothing (same objects, same document ids)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from inferlog_stack.run_cli import DEMO_ENV

from core.config import CommonConfig
from inferlog.stats import Reconciliation, reconcile, sink_configs
from tests.support.kafka_wait import wait_for_group_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (the metrics ports of streams and of every sink)."""
    for _ in range(100):
        base = _free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclasses.dataclass
class Pipeline:
    cfg: CommonConfig
    url: str
    index_prefix: str
    archive_prefix: str
    env: dict[str, str]
    log: Path
    pipeline_id: str

    @property
    def streams_group(self) -> str:
        return f"{self.pipeline_id}-streams"  # the Faust app id (inferlog run --pipeline-id)

    @property
    def sink_groups(self) -> list[str]:
        """The consumer group (``--sink-group <pipeline id>-sink-<name>``) of every sink ``inferlog run`` started:
        each printed "sink-<name> ready" before "pipeline running"."""
        names = re.findall(r"^\s*sink-(\S+)\s+ready$", self.log.read_text(errors="replace"), re.MULTILINE)
        assert {"s3", "opensearch"} <= set(names), self.log_tail()
        return [f"{self.pipeline_id}-sink-{name}" for name in names]

    def reconcile(self, since_ms: int) -> Reconciliation:
        return reconcile(self.cfg, since_ms=since_ms, sinks=sink_configs(self.env))  # as inferlog run's sinks

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def pipeline(stack: CommonConfig, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    cfg = dataclasses.replace(
        stack,
        topic_events=f"e2e.{unique}.events",
        topic_records=f"e2e.{unique}.records",
        topic_failures=f"e2e.{unique}.failures",
        topic_metadata=f"e2e.{unique}.metadata",
        topic_deadletter=f"e2e.{unique}.deadletter",
        partitions=4,
    )
    index_prefix = f"e2e{unique}"
    mport = _free_ports(8)  # streams, then one per sink
    port = _free_port()
    while mport <= port < mport + 8:
        port = _free_port()
    env = dict(os.environ)
    env.update(DEMO_ENV)
    env.update(
        {
            "INFERLOG_TOPIC_EVENTS": cfg.topic_events,
            "INFERLOG_TOPIC_RECORDS": cfg.topic_records,
            "INFERLOG_TOPIC_FAILURES": cfg.topic_failures,
            "INFERLOG_TOPIC_METADATA": cfg.topic_metadata,
            "INFERLOG_TOPIC_DEADLETTER": cfg.topic_deadletter,
            "INFERLOG_PARTITIONS": "4",
            "INFERLOG_INDEX_PREFIX": index_prefix,
            "INFERLOG_INDEX_REPLICAS": "0",
            "INFERLOG_STACK_DIR": os.environ.get("INFERLOG_STACK_DIR", "/var/tmp/inferlog-stack"),
            "INFERLOG_ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path / 'iceberg-catalog.db'}",
            "INFERLOG_ICEBERG_WAREHOUSE": f"s3://{stack.s3_bucket}/iceberg/e2e-{unique}",
        }
    )
    log = tmp_path / "run.log"
    pipeline_id = f"e2e-{unique}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferlog.cli", "run", "--no-stack", "--ingest-port", str(port),
             "--metrics-port-base", str(mport), "--pipeline-id", pipeline_id],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "pipeline running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "pipeline not ready:\n" + log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)  # poll interval of a condition with a deadline
        # `inferlog run` restarts a worker whose start-up stalled, as a supervisor would; here that is a failure
        # to report, not to hide.
        assert "start-up stalled" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        archive_prefix = f"archive/{cfg.topic_records}"
        yield Pipeline(cfg, f"http://127.0.0.1:{port}/", index_prefix, archive_prefix, env, log, pipeline_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_caught_up(p: Pipeline, timeout_s: float) -> dict[str, float]:
    """Wait in pipeline order until every stage has committed all its input produced so far: the streams app
    on the events (and its expiry markers), then each sink on the records and failures, which the streams app
    produced before it committed. Each stage commits only after its outputs are durable (Faust flushes its
    producer first; a sink commits after the write), so then the stores hold everything. Returns the seconds
    each group took."""
    bootstrap, cfg = p.cfg.kafka_bootstrap, p.cfg
    took = {
        p.streams_group: wait_for_group_caught_up(
            bootstrap, p.streams_group, [cfg.topic_events, f"{p.streams_group}-expiry"], timeout_s
        )
    }
    for group in p.sink_groups:
        took[group] = wait_for_group_caught_up(bootstrap, group, [cfg.topic_records, cfg.topic_failures], timeout_s)
    # What the OpenSearch sink wrote and committed is searchable only after a refresh: ask for one instead of
    # waiting for the periodic one.
    req = urllib.request.Request(f"{cfg.opensearch_url}/{p.index_prefix}-*/_refresh", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    return took


def _wait_processed(p: Pipeline, since_ms: int, events: int, timeout_s: float = 150) -> Reconciliation:
    """Wait until every one of the ``events`` sent has its record (joined, or expired into a request-only
    record: nothing pending, which is false until the streams app has produced them), then until every stage
    has caught up; return the reconciliation read after that (not retried: it must balance)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rec = p.reconcile(since_ms)
        seen = sum(c.events for c in rec.models.values())
        pending = sum(c.pending for c in rec.models.values())
        if seen == events and pending == 0:
            break
        assert time.monotonic() < deadline, json.dumps(rec.as_json(), indent=1) + p.log_tail()
        time.sleep(1)  # poll interval of a condition with a deadline
    took = _wait_caught_up(p, max(10.0, deadline - time.monotonic()))
    print(f"caught up: { {g: round(s, 1) for g, s in took.items()} }")
    return p.reconcile(since_ms)


def _objects(cfg: CommonConfig, prefix: str) -> dict[str, str]:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3", endpoint_url=cfg.s3_endpoint, region_name=cfg.s3_region, aws_access_key_id=cfg.s3_access_key,
        aws_secret_access_key=cfg.s3_secret_key, config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["ETag"]
    return out


def _iceberg_coordinates(p: Pipeline) -> list[tuple[int, int]]:
    from core import config
    from sinks.iceberg import IcebergSinkConfig, load_table

    rows = load_table(config.load(IcebergSinkConfig, env=p.env), p.cfg.topic_records).scan().to_arrow()
    return sorted(zip(rows.column("kafka_partition").to_pylist(), rows.column("kafka_offset").to_pylist(), strict=True))


def _doc_ids(cfg: CommonConfig, index_prefix: str) -> set[str]:
    body = json.dumps({"size": 10000, "_source": False, "query": {"match_all": {}}}).encode()
    req = urllib.request.Request(
        f"{cfg.opensearch_url}/{index_prefix}-records-*/_search", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return {hit["_id"] for hit in json.loads(resp.read())["hits"]["hits"]}


def test_demo_traffic_reaches_parquet_and_opensearch_and_replay_changes_nothing(pipeline: Pipeline) -> None:
    from ingest.demo import send_demo

    since_ms = int(time.time() * 1000) - 1000
    # 4 slow streamed LLM calls answered after 10 s: 2 annotated with a 2m pair timeout (complete at once), 2 under
    # DEMO_ENV's 5 s LLM timeout (request_only first, then corrected by the response)
    summary = asyncio.run(send_demo(pipeline.url, 300, 600.0, progress=False, seed=7, slow=4, slow_latency_s=10))
    assert summary.accepted == summary.events and summary.failed == 0

    rec = _wait_processed(pipeline, since_ms, summary.events)
    assert rec.balanced, json.dumps(rec.as_json(), indent=1)
    totals = {k: sum(c.as_dict()[k] for c in rec.models.values()) for k in ("events", "paired", "request_only")}
    assert totals["events"] == summary.events
    assert summary.retried > 0  # calls retried with the same Ce-Id after a failed attempt: two records each
    assert totals["paired"] + totals["request_only"] == 304 + summary.retried
    # the failed-request signal: one per missing response, and one per failed attempt of a retried call
    assert totals["request_only"] == summary.missing_responses + summary.retried
    llama, mistral = rec.model("demo", "chat-llama"), rec.model("demo", "chat-mistral")
    assert (llama.paired, llama.corrected, llama.failures) == (2, 0, 0)
    assert (mistral.paired, mistral.corrected, mistral.failures) == (2, 2, 0)  # signalled, then retracted
    assert mistral.prompt_tokens > 0 and mistral.completion_tokens == 2 * 8

    # The archive is readable with partition discovery, and holds each record once.
    from inferlog.analytics import read_archive

    table = read_archive(pipeline.cfg, prefix=pipeline.archive_prefix)  # the latest revision of each record
    keys = table.column("join_key").to_pylist()
    assert len(keys) == 304 + summary.retried and len(set(keys)) == 304
    every_row = read_archive(pipeline.cfg, prefix=pipeline.archive_prefix, latest=False)
    assert every_row.num_rows == len(keys) + 2  # the archive keeps the two superseded request_only rows
    retried = {k for k, n in Counter(keys).items() if n == 2}
    assert len(retried) == summary.retried

    # One document per record: a retried call's second record is indexed as <join key>#2, not over the first.
    objects = _objects(pipeline.cfg, pipeline.archive_prefix)
    ids = _doc_ids(pipeline.cfg, pipeline.index_prefix)
    assert ids == set(keys) | {f"{k}#2" for k in retried}

    # The Iceberg table holds each record once too (by its Kafka coordinates).
    tabled = _iceberg_coordinates(pipeline)
    assert len(tabled) == len(keys) + 2 and max(Counter(tabled).values()) == 1  # both revisions of a correction

    # Replay the whole range of events into the pipeline's own events topic.
    from inferlog.cli import main

    before_events = sum(c.events for c in rec.models.values())
    assert main(["replay", "--kafka-bootstrap", pipeline.cfg.kafka_bootstrap, "--topic-events",
                 pipeline.cfg.topic_events, "--since", str(since_ms), "--to-topic", pipeline.cfg.topic_events,
                 "--no-progress"]) == 0  # fmt: skip
    # The replay has been acknowledged by Kafka: wait until the streams app has committed the replayed copies and
    # the sinks everything it produced from them; only then can "nothing changed" be asserted.
    took = _wait_caught_up(pipeline, 120)
    print(f"replay caught up: { {g: round(s, 1) for g, s in took.items()} }")
    after = pipeline.reconcile(since_ms)
    assert sum(c.duplicates for c in after.models.values()) == before_events  # every replayed copy was read
    assert after.balanced, json.dumps(after.as_json(), indent=1)  # no new record, object or document
    assert {m: c.records for m, c in after.models.items()} == {m: c.records for m, c in rec.models.items()}
    assert _objects(pipeline.cfg, pipeline.archive_prefix) == objects  # same objects, same bytes (ETags)
    assert _doc_ids(pipeline.cfg, pipeline.index_prefix) == ids
    assert _iceberg_coordinates(pipeline) == tabled  # no row appended
