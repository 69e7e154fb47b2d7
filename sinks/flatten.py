"""Avro records → flat rows: the columns people query (Parquet, JSON Lines, OpenSearch documents).

One row per record. Ids, model, protocol, times, latency, status and sizes become top-level columns;
``metadata``/``annotations``/``model_metadata`` stay maps; bodies become UTF-8 strings (base64 when they are
not UTF-8, said by ``*_body_encoding``) or, when claim-checked, a ``*_dataref`` pointer. ``kafka_topic``,
``kafka_partition`` and ``kafka_offset`` say where the row came from, so duplicates are measurable.
The column sets and types are fixed (:data:`RECORD_SCHEMA`, :data:`FAILURE_SCHEMA`) so that every file of a
table has the same schema, even a file whose values are all null.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import pyarrow as pa

__all__ = [
    "FAILURE_SCHEMA",
    "RECORD_SCHEMA",
    "flatten",
    "flatten_failure",
    "flatten_record",
    "hive_path",
    "hive_path_at",
    "record_time_us",
    "to_table",
]

_TS = pa.timestamp("us", tz="UTC")
_STR_MAP = pa.map_(pa.string(), pa.string())
_LIST_MAP = pa.map_(pa.string(), pa.list_(pa.string()))


def _payload_fields(side: str) -> list[pa.Field]:
    return [
        pa.field(f"{side}_ce_type", pa.string()),
        pa.field(f"{side}_time", _TS),
        pa.field(f"{side}_recorded_time", _TS),
        pa.field(f"{side}_content_type", pa.string()),
        pa.field(f"{side}_size", pa.int64()),
        pa.field(f"{side}_body", pa.string()),
        pa.field(f"{side}_body_encoding", pa.string()),
        pa.field(f"{side}_dataref", pa.string()),
        pa.field(f"{side}_sha256", pa.string()),
        pa.field(f"{side}_extensions", _STR_MAP),
        pa.field(f"{side}_source_partition", pa.int32()),
        pa.field(f"{side}_source_offset", pa.int64()),
    ]


_KAFKA = [
    pa.field("kafka_topic", pa.string(), nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]

RECORD_SCHEMA = pa.schema(
    [
        pa.field("join_key", pa.string(), nullable=False),
        pa.field("ce_id", pa.string()),
        pa.field("ce_source", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("isvc", pa.string()),
        pa.field("component", pa.string()),
        pa.field("endpoint", pa.string()),
        pa.field("status", pa.string()),
        pa.field("protocol", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("event_time", _TS),
        pa.field("latency_ms", pa.float64()),
        pa.field("instance_count", pa.int32()),
        *_payload_fields("request"),
        *_payload_fields("response"),
        pa.field("metadata", _LIST_MAP),
        pa.field("annotations", _STR_MAP),
        pa.field("trace_id", pa.string()),
        pa.field("span_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("model_metadata", _STR_MAP),
        pa.field("error", pa.string()),
        *_KAFKA,
    ]
)

FAILURE_SCHEMA = pa.schema(
    [
        pa.field("join_key", pa.string(), nullable=False),
        pa.field("ce_id", pa.string()),
        pa.field("namespace", pa.string()),
        pa.field("isvc", pa.string()),
        pa.field("component", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("protocol", pa.string()),
        pa.field("event_time", _TS),
        pa.field("detected_time", _TS),
        pa.field("trace_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("metadata", _LIST_MAP),
        pa.field("annotations", _STR_MAP),
        pa.field("source_partition", pa.int32()),
        pa.field("source_offset", pa.int64()),
        *_KAFKA,
    ]
)


def _body(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


_RECORD_TOP = (
    "join_key",
    "ce_id",
    "ce_source",
    "namespace",
    "isvc",
    "component",
    "endpoint",
    "status",
    "protocol",
    "model_name",
    "model_version",
    "event_time",
    "latency_ms",
    "instance_count",
)
_PAYLOAD_PLAIN = (
    ("ce_type", "ce_type"),
    ("time", "time"),
    ("recorded_time", "recorded_time"),
    ("content_type", "content_type"),
    ("size", "size"),
    ("dataref", "dataref"),
    ("sha256", "sha256"),
    ("source_partition", "partition"),
    ("source_offset", "offset"),
)
_FAILURE_TOP = (
    "join_key",
    "ce_id",
    "namespace",
    "isvc",
    "component",
    "kind",
    "reason",
    "model_name",
    "model_version",
    "protocol",
    "event_time",
    "detected_time",
    "trace_id",
    "request_id",
)


def _bodies(raw: list[bytes | None]) -> tuple[Any, Any]:
    """``*_body`` and ``*_body_encoding`` columns: validated and cast to UTF-8 strings by Arrow in one go;
    record by record (base64 for non-UTF-8) only when some body is not UTF-8."""
    arr = pa.array(raw, type=pa.binary())
    try:
        text = arr.cast(pa.string())
    except pa.ArrowInvalid:
        pairs = [_body(b) for b in raw]
        return [b[0] for b in pairs], [b[1] for b in pairs]
    return text, [None if b is None else "utf8" for b in raw]


def _record_columns(recs: list[dict[str, Any]]) -> dict[str, Any]:
    cols: dict[str, Any] = {name: [r.get(name) for r in recs] for name in _RECORD_TOP}
    for side in ("request", "response"):
        ps: list[dict[str, Any] | None] = [r.get(side) for r in recs]
        for col, key in _PAYLOAD_PLAIN:
            cols[f"{side}_{col}"] = [None if p is None else p.get(key) for p in ps]
        raw = [None if p is None else p.get("body") for p in ps]
        cols[f"{side}_body"], cols[f"{side}_body_encoding"] = _bodies(raw)
        cols[f"{side}_extensions"] = [None if p is None else (p.get("extensions") or {}) for p in ps]
    for name in ("metadata", "annotations", "model_metadata"):
        cols[name] = [r.get(name) or {} for r in recs]
    for name in ("trace_id", "span_id", "request_id", "error"):
        cols[name] = [r.get(name) for r in recs]
    return cols


def _failure_columns(recs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {name: [r.get(name) for r in recs] for name in _FAILURE_TOP}
    for name in ("metadata", "annotations"):
        cols[name] = [r.get(name) or {} for r in recs]
    cols["source_partition"] = [r.get("partition") for r in recs]
    cols["source_offset"] = [r.get("offset") for r in recs]
    return cols


def to_table(schema_name: str, recs: list[dict[str, Any]], topic: str, partition: int, offsets: list[int]) -> pa.Table:
    """The rows :func:`flatten` makes of ``recs``, as an Arrow table of :func:`arrow_schema`, built column by
    column (no row dicts): the same table as ``pa.Table.from_pylist`` of the flattened rows, several times
    cheaper."""
    schema = arrow_schema(schema_name)
    cols = _failure_columns(recs) if schema_name == "failure_signal" else _record_columns(recs)
    n = len(recs)
    arrays = [
        c if isinstance(c := cols[f.name], pa.Array) else pa.array(c, type=f.type)
        for f in schema
        if not f.name.startswith("kafka_")
    ]
    arrays.append(pa.array([topic] * n, type=pa.string()))
    arrays.append(pa.array([partition] * n, type=pa.int32()))
    arrays.append(pa.array(offsets, type=pa.int64()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _kafka(topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {"kafka_topic": topic, "kafka_partition": partition, "kafka_offset": offset}


_PAYLOAD_KEYS = {side: tuple(f.name for f in _payload_fields(side)) for side in ("request", "response")}
_NO_PAYLOAD = {side: dict.fromkeys(keys) for side, keys in _PAYLOAD_KEYS.items()}


def _same(value: Any) -> Any:
    return value


def _payload_into(row: dict[str, Any], side: str, p: dict[str, Any] | None, time: Callable[[Any], Any]) -> None:
    """Add the columns of one payload to ``row`` (in schema order)."""
    if p is None:
        row.update(_NO_PAYLOAD[side])
        return
    get = p.get
    body, encoding = _body(get("body"))
    k = _PAYLOAD_KEYS[side]
    row[k[0]] = get("ce_type")
    row[k[1]] = time(get("time"))
    row[k[2]] = time(get("recorded_time"))
    row[k[3]] = get("content_type")
    row[k[4]] = get("size")
    row[k[5]] = body
    row[k[6]] = encoding
    row[k[7]] = get("dataref")
    row[k[8]] = get("sha256")
    row[k[9]] = dict(get("extensions") or {})
    row[k[10]] = get("partition")
    row[k[11]] = get("offset")


def flatten_record(
    rec: dict[str, Any], topic: str, partition: int, offset: int, time: Callable[[Any], Any] = _same
) -> dict[str, Any]:
    """One decoded ``InferenceRecord`` → one row of :data:`RECORD_SCHEMA` (keys in schema order); ``time``
    converts each timestamp (the search sink writes int microseconds as ISO strings)."""
    get = rec.get
    row: dict[str, Any] = {name: get(name) for name in _RECORD_TOP}
    row["event_time"] = time(row["event_time"])
    _payload_into(row, "request", get("request"), time)
    _payload_into(row, "response", get("response"), time)
    row["metadata"] = {k: list(v) for k, v in (get("metadata") or {}).items()}
    row["annotations"] = dict(get("annotations") or {})
    row["trace_id"] = get("trace_id")
    row["span_id"] = get("span_id")
    row["request_id"] = get("request_id")
    row["model_metadata"] = dict(get("model_metadata") or {})
    row["error"] = get("error")
    row["kafka_topic"] = topic
    row["kafka_partition"] = partition
    row["kafka_offset"] = offset
    return row


def flatten_failure(
    rec: dict[str, Any], topic: str, partition: int, offset: int, time: Callable[[Any], Any] = _same
) -> dict[str, Any]:
    """One decoded ``FailureSignal`` → one row of :data:`FAILURE_SCHEMA` (``time`` as in :func:`flatten_record`)."""
    row: dict[str, Any] = {name: rec.get(name) for name in _FAILURE_TOP}
    row["event_time"] = time(row["event_time"])
    row["detected_time"] = time(row["detected_time"])
    row["metadata"] = {k: list(v) for k, v in (rec.get("metadata") or {}).items()}
    row["annotations"] = dict(rec.get("annotations") or {})
    row["source_partition"] = rec.get("partition")
    row["source_offset"] = rec.get("offset")
    row.update(_kafka(topic, partition, offset))
    return row


def flatten(schema_name: str, rec: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    if schema_name == "failure_signal":
        return flatten_failure(rec, topic, partition, offset)
    return flatten_record(rec, topic, partition, offset)


def arrow_schema(schema_name: str) -> pa.Schema:
    return FAILURE_SCHEMA if schema_name == "failure_signal" else RECORD_SCHEMA


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, int):
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=value)
    raise TypeError(f"not a timestamp: {value!r}")


def record_time_us(rec: dict[str, Any]) -> int:
    """Record time of a decoded record: its ``event_time`` in epoch microseconds."""
    t = rec["event_time"]
    if type(t) is int:  # decoded with timestamps as int
        return t
    t = _utc(t)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _segment(value: Any) -> str:
    # Hive partition values are URL-escaped like Hive does; k8s names never need it, but "/" must never
    # create an extra level.
    return quote(str(value or "_"), safe="-_.")


def hive_path(rec: dict[str, Any]) -> str:
    """``namespace=…/isvc=…/date=YYYY-MM-DD/hour=HH`` from the record's namespace, isvc and event time."""
    t = _utc(rec["event_time"])
    return f"namespace={_segment(rec.get('namespace'))}/isvc={_segment(rec.get('isvc'))}/date={t:%Y-%m-%d}/hour={t:%H}"


_HOUR_US = 3600 * 1_000_000


@lru_cache(maxsize=4096)
def _hive_hour(namespace: Any, isvc: Any, hour: int) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=hour)
    return f"namespace={_segment(namespace)}/isvc={_segment(isvc)}/date={t:%Y-%m-%d}/hour={t:%H}"


def hive_path_at(rec: dict[str, Any], t_us: int) -> str:
    """:func:`hive_path` of ``rec`` when its :func:`record_time_us` is already known as ``t_us`` (cached per
    namespace, isvc and hour)."""
    return _hive_hour(rec.get("namespace"), rec.get("isvc"), t_us // _HOUR_US)
