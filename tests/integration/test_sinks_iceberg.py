"""The lakehouse sink against real Kafka, the registry, SeaweedFS and pyiceberg's SQL catalog on SQLite; every
table read back with pyiceberg (DuckDB's iceberg extension is downloaded from its own site, not reachable here)."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from core.config import CommonConfig
from core.s3 import client as s3_client
from schemas.columns import arrow_schema
from sinks.framework import SinkRunner, run_until
from sinks.iceberg import (
    IcebergSink,
    IcebergSinkConfig,
    _Append,
    ensure_table,
    load_catalog,
    load_table,
    table_offsets,
)
from tests.sinks_support import (
    HOUR_US,
    T0_US,
    create_topics,
    kill_loop,
    make_failure,
    make_record,
    produce,
    produce_ticks,
    run_caught_up,
    sink_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg(stack: CommonConfig, unique: str, tmp_path: Path) -> Iterator[IcebergSinkConfig]:
    cfg = sink_config(
        stack,
        unique,
        IcebergSinkConfig,
        iceberg_catalog_uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        iceberg_warehouse=f"s3://sinks-{unique}/warehouse",
        flush_records=400,
        flush_span_s=3600,
    )
    create_topics(cfg)
    s3 = s3_client(cfg, attempts=2)  # as sinks.s3.make_client, which takes the S3 sink's settings only
    s3.create_bucket(Bucket=cfg.s3_bucket)
    yield cfg
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cfg.s3_bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=cfg.s3_bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=cfg.s3_bucket)


def run_in_thread(cfg: IcebergSinkConfig, sink: IcebergSink | None = None, *, timeout_s: float = 90) -> SinkRunner:
    return run_caught_up(cfg, sink or IcebergSink(cfg), timeout_s=timeout_s)


def rows(cfg: IcebergSinkConfig, topic: str, **scan: Any) -> pa.Table:
    return load_table(cfg, topic).scan(**scan).to_arrow()


def exactly_once(table: pa.Table) -> Counter[tuple[int, int]]:
    at = Counter(
        zip(table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(), strict=True)
    )
    assert max(at.values(), default=1) == 1, [k for k, n in at.items() if n > 1][:10]
    return at


def test_records_and_failures_land_in_partitioned_tables_exactly_once(cfg: IcebergSinkConfig) -> None:
    recs = [make_record(i, isvc="iris" if i % 3 else "churn", t_us=T0_US + i * 10**6) for i in range(1500)]
    fails = [make_failure(i) for i in range(120)]
    produce(cfg, cfg.topic_records, "inference_record", recs)
    produce(cfg, cfg.topic_failures, "failure_signal", fails)
    for topic in cfg.topics():
        produce_ticks(cfg, topic, T0_US + 3 * HOUR_US)  # time passes: the last batches are cut
    runner = run_in_thread(cfg)
    assert runner.stats.written == 1620 and runner.stats.dead_lettered == 0

    table = rows(cfg, cfg.topic_records)
    exactly_once(table)
    assert table.num_rows == 1500 and len(set(table.column("join_key").to_pylist())) == 1500
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    metadata = table.schema.field("metadata").type  # pyiceberg reads strings and lists as their large forms
    assert pa.types.is_map(metadata) and pa.types.is_large_list(metadata.item_type)
    iris = rows(cfg, cfg.topic_records, row_filter="isvc == 'iris'")
    assert iris.num_rows == 1000 and set(iris.column("isvc").to_pylist()) == {"iris"}
    spec = load_table(cfg, cfg.topic_records).spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [
        ("namespace", "identity"),
        ("isvc", "identity"),
        ("event_day", "day"),
    ]
    failures = rows(cfg, cfg.topic_failures)
    exactly_once(failures)
    assert failures.num_rows == 120 and set(failures.column("kind").to_pylist()) == {"response_missing"}
    # the offsets of every partition are in the newest snapshot of the group
    held = table_offsets(load_table(cfg, cfg.topic_records), runner.group)
    assert sum(held.values()) == 1500 + cfg.partitions  # each partition: its records and its tick

    # a second run of the same group over the same topics adds nothing
    run_in_thread(cfg)
    assert rows(cfg, cfg.topic_records).num_rows == 1500


class _Crash(BaseException):
    """Stands for kill -9 right after the Iceberg commit, before Kafka's."""


class CrashAfterCommit(IcebergSink):
    def write(self, batch: Any) -> Any:
        super().write(batch)
        raise _Crash


def test_a_crash_between_the_table_commit_and_the_kafka_commit_resumes_from_the_table(
    cfg: IcebergSinkConfig,
) -> None:
    cfg = dataclasses.replace(cfg, sink_topics=cfg.topic_records, flush_records=250)
    produce(cfg, cfg.topic_records, "inference_record", [make_record(i) for i in range(1000)])
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    runner = SinkRunner(cfg, CrashAfterCommit(cfg))
    stop = threading.Event()
    errors: list[BaseException] = []
    run_until(runner, stop, errors.append).join(90)
    assert len(errors) == 1 and isinstance(errors[0], _Crash)
    assert runner.stats.commits == 0  # Kafka knows of nothing
    committed_to_table = rows(cfg, cfg.topic_records).num_rows
    assert committed_to_table > 0

    restarted = run_in_thread(cfg)  # same group: Kafka would start it from offset 0
    table = rows(cfg, cfg.topic_records)
    exactly_once(table)
    assert table.num_rows == 1000
    assert restarted.stats.written == 1000 - committed_to_table  # what the table held was skipped, not rewritten


def written_batches(cfg: IcebergSinkConfig) -> tuple[IcebergSinkConfig, IcebergSink, list[Any]]:
    """300 records on the records topic alone, sunk until caught up in large batches (one per partition); the
    config, the sink and the batches it wrote, in the order their writes succeeded."""
    cfg = dataclasses.replace(cfg, sink_topics=cfg.topic_records, flush_records=10_000)
    produce(cfg, cfg.topic_records, "inference_record", [make_record(i) for i in range(300)])
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    batches: list[Any] = []

    class Recording(IcebergSink):
        def write(self, batch: Any) -> Any:
            out = super().write(batch)
            batches.append(batch)
            return out

    sink = Recording(cfg)
    run_in_thread(cfg, sink)
    return cfg, sink, batches


def test_a_write_retried_after_its_commit_landed_appends_nothing(cfg: IcebergSinkConfig) -> None:
    """The check in write(): a batch the table already holds (the answer to its commit was lost) is a no-op,
    and one that overlaps appends only the records after the table's offset."""
    cfg, sink, batches = written_batches(cfg)
    assert rows(cfg, cfg.topic_records).num_rows == 300
    sink.setup()
    for batch in list(batches):  # the same batches again
        assert sink.write(batch) == []
    assert rows(cfg, cfg.topic_records).num_rows == 300


def test_the_batches_of_several_partitions_waiting_at_once_land_in_one_commit(
    cfg: IcebergSinkConfig, tmp_path: Path
) -> None:
    """The group commit (sinks.groups): one snapshot holds the rows of every partition's batch and all their
    offsets, and sending the same group again appends nothing."""
    cfg, _, batches = written_batches(cfg)
    assert len({b.partition for b in batches}) == cfg.partitions  # one batch per partition to group
    # the same batches into a fresh catalog's table, as one group
    fresh = dataclasses.replace(
        cfg, iceberg_catalog_uri=f"sqlite:///{tmp_path / 'fresh.db'}", iceberg_warehouse=f"s3://{cfg.s3_bucket}/fresh"
    )
    sink = IcebergSink(fresh)
    sink.setup()
    jobs = [_Append(b) for b in batches]
    sink._append(jobs)
    assert [j.error for j in jobs] == [None] * len(jobs)
    table = load_table(fresh, fresh.topic_records)
    assert len(table.snapshots()) == 1
    expected = {(b.topic, b.partition): b.end_offset + 1 for b in batches}
    assert table_offsets(table, sink.group) == expected
    assert sum(exactly_once(rows(fresh, fresh.topic_records)).values()) == 300
    sink._append([_Append(b) for b in batches])  # a retry of the whole group after its commit landed
    assert len(load_table(fresh, fresh.topic_records).snapshots()) == 1


def test_a_new_schema_field_becomes_a_new_nullable_column(cfg: IcebergSinkConfig) -> None:
    full = arrow_schema("inference_record")
    older = pa.schema([f for f in full if f.name != "error"])
    catalog = load_catalog(cfg)
    ensure_table(catalog, cfg.table_name(cfg.topic_records), older)
    assert "error" not in load_table(cfg, cfg.topic_records).schema().column_names
    sink = IcebergSink(cfg)
    sink.setup()  # evolves the table
    assert "error" in load_table(cfg, cfg.topic_records).schema().column_names
    produce(cfg, cfg.topic_records, "inference_record", [make_record(i, error="boom") for i in range(20)])
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    run_in_thread(dataclasses.replace(cfg, sink_topics=cfg.topic_records))
    assert rows(cfg, cfg.topic_records).column("error").to_pylist() == ["boom"] * 20


@pytest.mark.slow
def test_kill9_during_flow_leaves_every_record_exactly_once(
    cfg: IcebergSinkConfig, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    cfg = dataclasses.replace(cfg, flush_records=300, sink_instance_id="w1", sink_topics=cfg.topic_records)
    log_path = tmp_path / "sink.log"
    seen = [0]

    def wrote_more() -> bool:  # a commit since the last kill: the next kill may fall between it and Kafka's
        snapshots = len(load_table(cfg, cfg.topic_records).snapshots())  # (no table yet: wait_until tries again)
        if snapshots > seen[0]:
            seen[0] = snapshots
            return True
        return False

    kill_loop(cfg, procs, log_path, ["sink", "iceberg"], wrote_more)
    table = rows(cfg, cfg.topic_records)
    at = exactly_once(table)
    counts = Counter(table.column("join_key").to_pylist())
    assert len(counts) == 20_000 and max(counts.values()) == 1 and len(at) == 20_000
    assigned = [line for line in log_path.read_text().splitlines() if '"msg": "assigned"' in line]
    resumed = [line for line in assigned if '"resume_from_store": {}' not in line]
    assert resumed, "no restart found its offsets in the table:\n" + "\n".join(assigned)
