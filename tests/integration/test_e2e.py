"""End to end on the local real stack: `inferlog run` (ingest, streams, every sink) with demo traffic; every
record reaches Parquet and OpenSearch and the reconciliation balances; replaying the time range into the
pipeline changes nothing (same objects, same document ids)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter

import pytest

from core.config import CommonConfig
from tests.support.pipeline import Pipeline, wait_caught_up, wait_processed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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

    rec = wait_processed(pipeline, since_ms, summary.events)
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
    took = wait_caught_up(pipeline, 120)
    print(f"replay caught up: { {g: round(s, 1) for g, s in took.items()} }")
    after = pipeline.reconcile(since_ms)
    assert sum(c.duplicates for c in after.models.values()) == before_events  # every replayed copy was read
    assert after.balanced, json.dumps(after.as_json(), indent=1)  # no new record, object or document
    assert {m: c.records for m, c in after.models.items()} == {m: c.records for m, c in rec.models.items()}
    assert _objects(pipeline.cfg, pipeline.archive_prefix) == objects  # same objects, same bytes (ETags)
    assert _doc_ids(pipeline.cfg, pipeline.index_prefix) == ids
    assert _iceberg_coordinates(pipeline) == tabled  # no row appended
