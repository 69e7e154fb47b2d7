"""End to end on the local real stack: `inferlog run` (ingest, streams, both sinks) with demo traffic; every
record reaches Parquet and OpenSearch and the reconciliation balances; replaying the time range into the
pipeline changes nothing (same objects, same document ids)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
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
from inferlog.stats import Reconciliation, reconcile

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Pipeline:
    cfg: CommonConfig
    url: str
    index_prefix: str
    archive_prefix: str
    env: dict[str, str]
    log: Path

    def reconcile(self, since_ms: int) -> Reconciliation:
        return reconcile(
            self.cfg, since_ms=since_ms, archive_prefix=self.archive_prefix, index_prefix=self.index_prefix
        )


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
    port, mport = _free_port(), _free_port()
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
        }
    )
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferlog.cli", "run", "--no-stack", "--ingest-port", str(port),
             "--metrics-port-base", str(mport), "--pipeline-id", f"e2e-{unique}"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "pipeline running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "pipeline not ready:\n" + log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        yield Pipeline(cfg, f"http://127.0.0.1:{port}/", index_prefix, f"archive/{cfg.topic_records}", env, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_balanced(p: Pipeline, since_ms: int, timeout_s: float = 150) -> Reconciliation:
    deadline = time.monotonic() + timeout_s
    while True:
        rec = p.reconcile(since_ms)
        if rec.balanced and rec.models:
            return rec
        assert time.monotonic() < deadline, json.dumps(rec.as_json(), indent=1) + p.log.read_text()[-3000:]
        time.sleep(2)


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
    summary = asyncio.run(send_demo(pipeline.url, 300, 600.0, progress=False, seed=7))
    assert summary.accepted == summary.events and summary.failed == 0

    rec = _wait_balanced(pipeline, since_ms)
    totals = {k: sum(c.as_dict()[k] for c in rec.models.values()) for k in ("events", "paired", "request_only")}
    assert totals["events"] == summary.events
    assert summary.retried > 0  # calls retried with the same Ce-Id after a failed attempt: two records each
    assert totals["paired"] + totals["request_only"] == 300 + summary.retried
    # the failed-request signal: one per missing response, and one per failed attempt of a retried call
    assert totals["request_only"] == summary.missing_responses + summary.retried

    # The archive is readable with partition discovery, and holds each record once.
    from inferlog.analytics import read_archive

    table = read_archive(pipeline.cfg, prefix=pipeline.archive_prefix)
    keys = table.column("join_key").to_pylist()
    assert len(keys) == 300 + summary.retried and len(set(keys)) == 300
    retried = {k for k, n in Counter(keys).items() if n == 2}
    assert len(retried) == summary.retried

    # One document per record: a retried call's second record is indexed as <join key>#2, not over the first.
    objects = _objects(pipeline.cfg, pipeline.archive_prefix)
    ids = _doc_ids(pipeline.cfg, pipeline.index_prefix)
    assert ids == set(keys) | {f"{k}#2" for k in retried}

    # Replay the whole range of events into the pipeline's own events topic.
    from inferlog.cli import main

    before_events = rec.models and sum(c.events for c in rec.models.values())
    assert main(["replay", "--kafka-bootstrap", pipeline.cfg.kafka_bootstrap, "--topic-events",
                 pipeline.cfg.topic_events, "--since", str(since_ms), "--to-topic", pipeline.cfg.topic_events,
                 "--no-progress"]) == 0  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the streams app has consumed the replayed copies once its lag is 0
        after = pipeline.reconcile(since_ms)
        dups = sum(c.duplicates for c in after.models.values())
        if dups == before_events and after.balanced:
            break
        assert time.monotonic() < deadline, json.dumps(after.as_json(), indent=1)
        time.sleep(2)
    assert _objects(pipeline.cfg, pipeline.archive_prefix) == objects  # same objects, same bytes (ETags)
    assert _doc_ids(pipeline.cfg, pipeline.index_prefix) == ids
