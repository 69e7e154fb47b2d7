"""Contract tests against the real Kafka and S3: every KSERVE-LOGGER.md example, posted to the ingest, becomes
a record of the events topic whose key, headers, value and partition are as contracted; large bodies are
claim-checked into the real object store."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp.test_utils import TestClient, TestServer
from botocore.config import Config

from core.config import CommonConfig
from core.events import from_kafka
from core.kafka import base_config
from core.keys import partition_for
from core.topics import TopicSpec, ensure_topics
from ingest.app import build_app
from ingest.config import IngestConfig
from tests.support import ingest_examples as examples
from tests.support.kafka_wait import read_to_end

pytestmark = pytest.mark.integration
PARTITIONS = 3


def ingest_config(stack: CommonConfig, unique: str, tmp_path: Path, **overrides: Any) -> IngestConfig:
    base = {f.name: getattr(stack, f.name) for f in dataclasses.fields(CommonConfig)}
    cfg = IngestConfig(
        **base,
        spool_dir=str(tmp_path / "spool"),
        produce_timeout_s=2.0,
    )
    cfg = dataclasses.replace(
        cfg, topic_events=f"t.ingest.{unique}", topic_deadletter=f"t.ingest.dl.{unique}", partitions=PARTITIONS
    )
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    ensure_topics(cfg, [TopicSpec(cfg.topic_events, PARTITIONS), TopicSpec(cfg.topic_deadletter, PARTITIONS)])
    return cfg


def consume(cfg: CommonConfig, topic: str) -> list[Any]:
    """All records of ``topic``. Exact without waiting: the ingest answered 202 only after Kafka acknowledged
    each record, so the topic's high watermarks now cover every record it will ever get from these posts."""
    return read_to_end(base_config(cfg), topic)


@pytest.fixture
async def client(
    stack: CommonConfig, unique: str, tmp_path: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], IngestConfig]]:
    bucket = f"ingest-{unique}"
    cfg = ingest_config(stack, unique, tmp_path, s3_bucket=bucket, claimcheck_threshold_bytes=4096)
    s3 = boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key,
        aws_secret_access_key=cfg.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.create_bucket(Bucket=bucket)
    c = TestClient(TestServer(build_app(cfg)))
    await c.start_server()
    try:
        yield c, cfg
    finally:
        await c.close()


async def test_every_example_round_trips_through_kafka(client: tuple[TestClient[Any, Any], IngestConfig]) -> None:
    c, cfg = client
    want = []
    for ex in examples.ALL:
        resp = await c.post("/", data=ex.body, headers=ex.headers, skip_auto_headers=["Content-Type"])
        assert resp.status == 202, (ex.name, await resp.text())
        want += ex.expected
    got = consume(cfg, cfg.topic_events)
    records = {(m.key().decode(), dict(m.headers() or []).get("ce_type", b"").decode()): m for m in got}
    assert len(got) == len(want)
    for exp in want:
        msg = records[(exp.key, exp.headers["ce_type"])]
        assert {k: v.decode() for k, v in msg.headers()} == exp.headers
        assert (msg.value() or b"") == exp.value
        assert msg.partition() == partition_for(exp.key.encode(), PARTITIONS)  # Java-compatible partitioner
        assert from_kafka(msg.headers(), msg.value()).join_key == exp.key


async def test_large_body_is_claim_checked_in_s3(client: tuple[TestClient[Any, Any], IngestConfig]) -> None:
    c, cfg = client
    body = b'{"instances": [' + b"0.5," * 5000 + b"1]}"
    resp = await c.post("/", data=body, headers=examples.B_REQUEST.headers)
    assert resp.status == 202
    (msg,) = consume(cfg, cfg.topic_events)
    ev = from_kafka(msg.headers(), msg.value())
    assert ev.data == b"" and ev.datasize == len(body) and ev.datasha256 == hashlib.sha256(body).hexdigest()
    assert ev.dataref and ev.dataref.startswith(f"s3://{cfg.s3_bucket}/")
    bucket, _, key = ev.dataref.removeprefix("s3://").partition("/")
    s3 = boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key,
        aws_secret_access_key=cfg.s3_secret_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
