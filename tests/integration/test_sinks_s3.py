"""The object-storage sink against real Kafka, registry and SeaweedFS."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import CommonConfig
from sinks.framework import SinkRunner, run_until
from sinks.s3 import S3Sink, S3SinkConfig, make_client
from tests.sinks_support import (
    T0_US,
    create_topics,
    kill_loop,
    make_failure,
    make_record,
    produce,
    produce_ticks,
    read_all,
    run_caught_up,
    sink_config,
)

pytestmark = pytest.mark.integration

INFERLOG = str(Path(sys.executable).parent / "inferlog")
HOUR_US = 3600 * 10**6


@pytest.fixture
def cfg(stack: CommonConfig, unique: str) -> Iterator[S3SinkConfig]:
    cfg = sink_config(stack, unique, S3SinkConfig)
    create_topics(cfg)
    s3 = make_client(cfg)
    s3.create_bucket(Bucket=cfg.s3_bucket)
    yield cfg
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=cfg.s3_bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=cfg.s3_bucket)


def run_in_thread(cfg: S3SinkConfig, *, timeout_s: float = 60) -> SinkRunner:
    return run_caught_up(cfg, S3Sink(cfg), timeout_s=timeout_s, join_s=30)


def objects(cfg: S3SinkConfig, prefix: str) -> dict[str, str]:
    """``{key relative to prefix: ETag}``."""
    s3 = make_client(cfg)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) + 1 :]] = obj["ETag"]
    return out


def arrow_fs(cfg: S3SinkConfig) -> Any:
    from pyarrow import fs

    return fs.S3FileSystem(
        access_key=cfg.s3_access_key,
        secret_key=cfg.s3_secret_key,
        endpoint_override=cfg.s3_endpoint,
        region=cfg.s3_region,
        scheme="http",
    )


def read_table(cfg: S3SinkConfig, prefix: str, topic: str) -> Any:
    import pyarrow.dataset as ds

    return ds.dataset(
        f"{cfg.s3_bucket}/{prefix}/{topic}", filesystem=arrow_fs(cfg), format="parquet", partitioning="hive"
    ).to_table()


def test_parquet_archive_is_queryable_and_a_replay_writes_identical_objects(cfg: S3SinkConfig, tmp_path: Path) -> None:
    cfg = dataclasses.replace(cfg, flush_records=400, flush_span_s=1800, s3_prefix="first")
    recs = [
        make_record(i, ns=("team-a", "team-b")[i % 2], isvc=("iris", "wine")[i % 3 == 0], t_us=T0_US + i * 2_000_000)
        for i in range(3000)  # 3000 records, 2 s apart: 100 minutes, so two hours
    ]
    produce(cfg, cfg.topic_records, "inference_record", recs, raw=[b"\x00\x00\x00\x00\x07garbage"])
    produce(cfg, cfg.topic_failures, "failure_signal", [make_failure(i) for i in range(20)])
    end = T0_US + 3 * HOUR_US
    produce_ticks(cfg, cfg.topic_records, end)
    produce_ticks(cfg, cfg.topic_failures, end)

    first = run_in_thread(cfg)
    assert first.stats.written == 3020 and first.stats.dead_lettered == 1

    # pyarrow straight from S3 with Hive partition discovery
    table = read_table(cfg, "first", cfg.topic_records)
    assert table.num_rows == 3000
    assert sorted(set(table.column("join_key").to_pylist())) == sorted(r["join_key"] for r in recs)
    assert set(table.column("hour").to_pylist()) == {8, 9}
    assert set(table.column("date").to_pylist()) == {"2024-05-01"}
    failures = read_table(cfg, "first", cfg.topic_failures)
    assert failures.num_rows == 20 and set(failures.column("kind").to_pylist()) == {"response_missing"}

    # DuckDB over a local copy of the same keys, hive_partitioning=true
    import duckdb

    s3 = make_client(cfg)
    for key in objects(cfg, "first"):
        dest = tmp_path / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(cfg.s3_bucket, f"first/{key}", str(dest))
    relation = duckdb.sql(
        f"select namespace, isvc, hour, count(*), count(distinct join_key), min(request_body) "
        f"from read_parquet('{tmp_path}/{cfg.topic_records}/**/*.parquet', hive_partitioning=true) "
        f"group by all order by all"
    )
    assert relation is not None  # a select always has a result
    rows = relation.fetchall()
    assert sum(r[3] for r in rows) == 3000 and all(r[3] == r[4] for r in rows)
    assert {(r[0], r[1]) for r in rows} == {
        ("team-a", "iris"),
        ("team-a", "wine"),
        ("team-b", "iris"),
        ("team-b", "wine"),
    }
    assert rows[0][5] == '{"instances": [[1.0, 2.0, 3.0, 4.0]]}'
    shutil.rmtree(tmp_path / cfg.topic_records)

    # the undecodable message is in the dead-letter topic with its reason
    (dead,) = read_all(cfg, cfg.topic_deadletter, 1)
    headers = dict(dead.headers())
    assert dead.value() == b"\x00\x00\x00\x00\x07garbage" and headers["error.kind"] == b"undecodable"
    assert headers["error.stage"] == b"sink.s3" and headers["error.topic"] == cfg.topic_records.encode()

    # a new group from offset 0 cuts the same files: same names, same bytes
    replay = dataclasses.replace(cfg, s3_prefix="replay", sink_group=cfg.sink_group + "-replay")
    run_in_thread(replay)
    assert objects(cfg, "replay") == objects(cfg, "first")
    assert len(objects(cfg, "first")) > 10


def test_big_objects_are_uploaded_in_parts(cfg: S3SinkConfig) -> None:
    import os

    cfg = dataclasses.replace(
        cfg, flush_records=1000, flush_bytes=64 << 20, s3_multipart_bytes=5 << 20, s3_prefix="big"
    )
    import base64

    noise = [base64.b64encode(os.urandom(150 * 1024)) for _ in range(60)]  # 12 MB that compress to ~9 MB
    recs = [
        make_record(i, request={**make_record(i)["request"], "body": noise[i], "size": len(noise[i])}, t_us=T0_US)
        for i in range(60)
    ]
    # one key, so one partition, so one object of ~9 MB
    produce(cfg, cfg.topic_records, "inference_record", [{**r, "join_key": "k"} for r in recs])
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    run_in_thread(dataclasses.replace(cfg, sink_topics=cfg.topic_records))
    s3 = make_client(cfg)
    big = [
        k
        for k in objects(cfg, "big")
        if s3.head_object(Bucket=cfg.s3_bucket, Key=f"big/{k}")["ContentLength"] > 5 << 20
    ]
    assert big, objects(cfg, "big")
    head = s3.head_object(Bucket=cfg.s3_bucket, Key=f"big/{big[0]}")
    assert "-" in head["ETag"]  # a multipart upload
    table = read_table(cfg, "big", cfg.topic_records)
    assert table.num_rows == 60


def test_kill9_during_flow_leaves_every_key_exactly_once(
    cfg: S3SinkConfig, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    cfg = dataclasses.replace(cfg, flush_records=300, flush_span_s=3600, sink_instance_id="w1", s3_prefix="kill")
    log_path = tmp_path / "sink.log"
    kill_loop(cfg, procs, log_path, ["sink", "s3"])
    table = read_table(cfg, "kill", cfg.topic_records)
    counts = Counter(table.column("join_key").to_pylist())
    assert len(counts) == 20_000 and max(counts.values()) == 1
    offsets = Counter(
        zip(table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(), strict=True)
    )
    assert max(offsets.values()) == 1


class _Crash(BaseException):
    """Stands for kill -9 right after an upload, before the commit."""


class CrashAfterUpload(S3Sink):
    def write(self, batch: Any) -> Any:
        super().write(batch)
        raise _Crash


def test_crash_between_upload_and_commit_rewrites_the_same_object(cfg: S3SinkConfig) -> None:
    cfg = dataclasses.replace(cfg, flush_records=200, s3_prefix="crash", sink_topics=cfg.topic_records)
    produce(cfg, cfg.topic_records, "inference_record", [make_record(i) for i in range(1000)])
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    runner = SinkRunner(cfg, CrashAfterUpload(cfg))
    stop = threading.Event()
    errors: list[BaseException] = []
    run_until(runner, stop, errors.append).join(60)
    assert len(errors) == 1 and isinstance(errors[0], _Crash)
    uploaded_uncommitted = objects(cfg, "crash")
    # one object per write in flight when it crashed (up to max_in_flight), none committed
    assert 1 <= len(uploaded_uncommitted) <= runner.max_in_flight and runner.stats.commits == 0

    run_in_thread(cfg)  # the restart: same group, resumes before the uncommitted object
    after = objects(cfg, "crash")
    assert set(uploaded_uncommitted) <= set(after)
    table = read_table(cfg, "crash", cfg.topic_records)
    counts = Counter(table.column("join_key").to_pylist())
    assert len(counts) == 1000 and max(counts.values()) == 1
