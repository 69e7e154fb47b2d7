"""A small Python API for analytics consumers.

Two sources of the same truth (and the raw events):

- :func:`iter_records` iterates decoded ``InferenceRecord`` (or ``FailureSignal``) dicts from Kafka, by time
  range, optionally following new records, filtered by namespace / isvc / status / join key;
- :func:`iter_cloudevents` iterates the raw events of ``inferlog.events`` as CloudEvents SDK objects;
- :func:`read_archive` reads the Parquet archive on object storage into a ``pyarrow.Table`` with Hive
  partition discovery (``namespace=…/isvc=…/date=…/hour=…``), ready for DuckDB or pandas.

Revisions: a one-sided record whose partner arrived after the pair timeout is superseded by a ``complete`` record
of the same identity (``join_key`` + ``ordinal``) with ``revision`` 2. Topics and the archive keep both;
:func:`read_archive` and :func:`iter_records` with ``latest=True`` give the latest revision of each record
(:func:`latest_revisions`, :func:`latest_records`), which is what every count should be made of.

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
    latest: bool = False,
) -> Iterator[dict[str, Any]]:
    """Decoded records of ``inferlog.records`` (or ``inferlog.failures``), ticks skipped. Each dict also
    carries ``_partition`` and ``_offset``. ``latest`` (records, not following): only the latest revision of each
    record, the ``status`` filter applied to it (a request_only record corrected later is not one)."""
    if latest and not failures:
        if follow:
            raise ValueError("latest=True needs a bounded read (follow=False): a later revision may still come")
        everything = iter_records(
            cfg, since=since, until=until, idle_exit_s=idle_exit_s, namespace=namespace, isvc=isvc, keys=keys
        )
        yield from (r for r in latest_records(everything) if not status or r.get("status") == status)
        return
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


def record_identity(rec: dict[str, Any]) -> tuple[str, int]:
    """(join key, ordinal): what a revision supersedes (records written before ``ordinal`` existed: 1)."""
    return rec["join_key"], int(rec.get("ordinal") or 1)


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest revision of each record of ``records``, in the order in which those revisions came."""
    best: dict[tuple[str, int], tuple[int, int, dict[str, Any]]] = {}
    for n, rec in enumerate(records):
        ident, revision = record_identity(rec), int(rec.get("revision") or 1)
        if ident not in best or revision > best[ident][0]:
            best[ident] = (revision, n, rec)
    return [rec for _, _, rec in sorted(best.values(), key=lambda b: b[1])]


def latest_revisions(table: Any) -> Any:
    """The rows of an archive table (``pyarrow.Table``) that are the latest revision of their record; a table
    without the ``join_key`` or ``revision`` column is returned as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    if "join_key" not in names or "revision" not in names or table.num_rows == 0:
        return table
    n = table.num_rows
    ordinal = pc.fill_null(table["ordinal"], 1) if "ordinal" in names else pa.array([1] * n, pa.int32())
    index = pa.table(
        {"k": table["join_key"], "o": ordinal, "r": pc.fill_null(table["revision"], 1), "i": pa.array(range(n))}
    )
    best = index.group_by(["k", "o"]).aggregate([("r", "max")])
    top = index.join(best, keys=["k", "o", "r"], right_keys=["k", "o", "r_max"], join_type="inner")
    keep = top.group_by(["k", "o"]).aggregate([("i", "min")])["i_min"]
    return table.take(pc.take(keep, pc.sort_indices(keep)))


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
    latest: bool = True,
) -> Any:
    """The Parquet archive under ``s3://<bucket>/<prefix>/`` as a ``pyarrow.Table`` (Hive partitions become
    columns ``namespace``, ``isvc``, ``date``, ``hour``). ``prefix`` defaults to the object-storage sink's
    table of records, ``<s3_prefix>/<records topic>`` (``<s3_prefix>/<failures topic>`` holds the failure
    signals), ``s3_prefix`` being ``cfg``'s when it is the sink's settings, else ``INFERLOG_S3_PREFIX``.
    ``latest`` (default): only the latest revision of each record (:func:`latest_revisions`); ``False`` gives
    every row as archived."""
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
    if not latest:
        return dataset.to_table(columns=columns, filter=expr)
    extra = [] if columns is None else [c for c in ("join_key", "ordinal", "revision") if c not in columns]
    extra = [c for c in extra if c in dataset.schema.names]
    table = latest_revisions(dataset.to_table(columns=None if columns is None else [*columns, *extra], filter=expr))
    return table.drop_columns(extra) if extra else table
