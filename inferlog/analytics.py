"""A small Python API for analytics consumers.

Two sources of the same truth (and the raw events):

- :func:`iter_records` iterates decoded ``InferenceRecord`` (or ``FailureSignal``) dicts from Kafka, by time
  range, optionally following new records, filtered by namespace / isvc / status / join key;
- :func:`iter_cloudevents` iterates the raw events of ``inferlog.events`` as CloudEvents SDK objects;
- :func:`read_archive` reads the Parquet archive on object storage into a ``pyarrow.Table`` with Hive
  partition discovery (``namespace=…/isvc=…/date=…/hour=…``), ready for DuckDB or pandas.

Example (see ``examples/analytics_duckdb.py`` for a whole script)::

    from inferlog.analytics import iter_records, read_archive
    for rec in iter_records(since="1h", status="request_only"):
        print(rec["join_key"], rec["model_name"])
    table = read_archive(namespace="default")
    import duckdb
    duckdb.sql("select isvc, quantile_cont(latency_ms, 0.99) from table group by isvc").show()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from core.config import CommonConfig, load
from inferlog.scan import ScanRange, parse_time_ms, scan
from schemas import AvroSerde
from schemas.wire import tick_time_us
from sinks.s3 import S3SinkConfig, archive_dataset, archive_prefix


def _config(cfg: CommonConfig | None) -> CommonConfig:
    return cfg if cfg is not None else load(CommonConfig)


def iter_records(
    cfg: CommonConfig | None = None,
    *,
    failures: bool = False,
    since: str | None = None,
    until: str | None = None,
    follow: bool = False,
    idle_exit_s: float | None = None,
    namespace: str | None = None,
    isvc: str | None = None,
    status: str | None = None,
    keys: Iterable[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Decoded records of ``inferlog.records`` (or ``inferlog.failures``), ticks skipped. Each dict also
    carries ``_partition`` and ``_offset``."""
    cfg = _config(cfg)
    topic = cfg.topic_failures if failures else cfg.topic_records
    schema = "failure_signal" if failures else "inference_record"
    serde = AvroSerde.for_topic(cfg.registry_url, topic, schema, registry_auth=cfg.registry_auth)
    rng = ScanRange(start_ms=parse_time_ms(since) if since else None, end_ms=parse_time_ms(until) if until else None)
    wanted = set(keys) if keys is not None else None
    for msg in scan(cfg, topic, rng, follow=follow, idle_exit_s=idle_exit_s):
        if tick_time_us(msg.headers) is not None or not msg.value:
            continue
        rec = serde.decode(msg.value)
        if namespace and rec.get("namespace") != namespace:
            continue
        if isvc and rec.get("isvc") != isvc:
            continue
        if status and rec.get("status", rec.get("kind")) != status:
            continue
        if wanted is not None and rec.get("join_key") not in wanted:
            continue
        rec["_partition"], rec["_offset"] = msg.partition, msg.offset
        yield rec


def _as_sent(data: Any) -> Any:
    return data


def iter_cloudevents(
    cfg: CommonConfig | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
    follow: bool = False,
    idle_exit_s: float | None = None,
) -> Iterator[Any]:
    """The raw events of ``inferlog.events`` as CloudEvents SDK objects (``cloudevents.v1.http.CloudEvent``,
    converted with ``cloudevents.v1.kafka.from_binary``): attributes by name (``ev["id"]``, ``ev["namespace"]``),
    ``ev.data`` the body bytes as sent (or empty, with ``ev["dataref"]`` pointing at the claim-checked body).
    ``partitionkey`` is the Kafka key (the join key)."""
    from cloudevents.v1.kafka import KafkaMessage, from_binary

    cfg = _config(cfg)
    rng = ScanRange(start_ms=parse_time_ms(since) if since else None, end_ms=parse_time_ms(until) if until else None)
    for msg in scan(cfg, cfg.topic_events, rng, follow=follow, idle_exit_s=idle_exit_s):
        headers = {name: value for name, value in msg.headers if value is not None}
        if "ce_specversion" not in headers:  # not an event (e.g. a marker record)
            continue
        key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
        yield from_binary(KafkaMessage(headers, key, msg.value or b""), data_unmarshaller=_as_sent)


def read_archive(
    cfg: CommonConfig | None = None,
    *,
    prefix: str | None = None,
    namespace: str | None = None,
    isvc: str | None = None,
    date: str | None = None,
    columns: list[str] | None = None,
) -> Any:
    """The Parquet archive under ``s3://<bucket>/<prefix>/`` as a ``pyarrow.Table`` (Hive partitions become
    columns ``namespace``, ``isvc``, ``date``, ``hour``). ``prefix`` defaults to the object-storage sink's
    table of records, ``<s3_prefix>/<records topic>`` (``<s3_prefix>/<failures topic>`` holds the failure
    signals), ``s3_prefix`` being ``cfg``'s when it is the sink's settings, else ``INFERLOG_S3_PREFIX``."""
    import pyarrow.dataset as ds

    cfg = _config(cfg)
    if prefix is None:
        sink_cfg = cfg if isinstance(cfg, S3SinkConfig) else load(S3SinkConfig)
        prefix = archive_prefix(sink_cfg, cfg.topic_records)
    dataset = archive_dataset(cfg, prefix)
    expr = None
    for col, value in (("namespace", namespace), ("isvc", isvc), ("date", date)):
        if value is not None:
            term = ds.field(col) == value
            expr = term if expr is None else expr & term
    return dataset.to_table(columns=columns, filter=expr)
