"""Avro records → flat rows: the columns people query (Parquet, JSON Lines, Iceberg, OpenSearch documents).

One row per record, with the columns of :mod:`schemas.columns` (derived from the ``.avsc``): ids, model,
protocol, times, latency, status and sizes as top-level columns, ``request``/``response`` spread into
``request_*``/``response_*``, maps kept as maps, bodies as UTF-8 text (base64 when not UTF-8, said by
``*_body_encoding``), and ``kafka_topic``/``kafka_partition``/``kafka_offset`` saying where the row came from,
so duplicates are measurable. Every file of a table has the same schema (:func:`arrow_schema`), even a file
whose values are all null.

Two builders, both made from the column list so that a field added to the schema appears in both:
:func:`to_table` column by column (the Parquet and Iceberg path: no row dicts), and :func:`flatten` one
row dict per record (JSON Lines, search documents). The row builder is generated Python source, compiled once
per schema: a generic loop over column descriptions cost about twice as much per record as straight-line
code; ``tests/unit/test_sinks_columns.py`` checks it against a plain reading of the rules.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any
from urllib.parse import quote

import pyarrow as pa

from schemas.columns import Column, arrow_schema, columns

__all__ = [
    "FAILURE_SCHEMA",
    "RECORD_SCHEMA",
    "arrow_schema",
    "flatten",
    "flatten_failure",
    "flatten_record",
    "hive_path",
    "hive_path_at",
    "record_time_us",
    "row_builder",
    "to_table",
]

RECORD_SCHEMA = arrow_schema("inference_record")
FAILURE_SCHEMA = arrow_schema("failure_signal")

Time = Callable[[Any], Any]
RowBuilder = Callable[[dict[str, Any], str, int, int, Time], dict[str, Any]]


def _body(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


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


def _same(value: Any) -> Any:
    return value


# -- the row builder: generated from the columns --------------------------------------------------------------


def _row_source(cols: tuple[Column, ...]) -> str:
    """Python source of ``build(rec, topic, partition, offset, time) -> row``: one statement per column, in column
    order; the columns of a nested record are filled from one lookup of it (all None when it is null)."""
    lines = ["def build(rec, topic, partition, offset, time):", "    get = rec.get", "    row = {}"]
    i = 0
    while i < len(cols):
        c = cols[i]
        if not c.path:  # Kafka coordinates
            source = {"kafka_topic": "topic", "kafka_partition": "partition", "kafka_offset": "offset"}[c.name]
            lines.append(f"    row[{c.name!r}] = {source}")
            i += 1
            continue
        if len(c.path) == 1:
            lines.extend("    " + s for s in _assign(c, "get"))
            i += 2 if c.kind == "body" else 1
            continue
        if len(c.path) > 2:
            raise ValueError(f"{c.name}: records nested more than one level have no row layout")
        parent = c.path[0]
        group = [x for x in cols[i:] if x.path[:1] == (parent,) and len(x.path) == 2]
        lines.append(f"    p = get({parent!r})")
        lines.append("    if p is None:")
        lines.extend(f"        row[{x.name!r}] = None" for x in group)
        lines.append("    else:")
        lines.append("        pget = p.get")
        j = 0
        while j < len(group):
            lines.extend("        " + s for s in _assign(group[j], "pget"))
            j += 2 if group[j].kind == "body" else 1
        i += len(group)
    lines.append("    return row")
    return "\n".join(lines) + "\n"


def _assign(c: Column, get: str) -> list[str]:
    key = c.path[-1]
    if c.kind == "body":
        return [f"row[{c.name!r}], row[{c.name + '_encoding'!r}] = _body({get}({key!r}))"]
    if c.kind == "timestamp":
        return [f"row[{c.name!r}] = time({get}({key!r}))"]
    if c.kind == "str_map":
        return [f"row[{c.name!r}] = dict({get}({key!r}) or {{}})"]
    if c.kind == "list_map":
        return [f"row[{c.name!r}] = {{k: list(v) for k, v in ({get}({key!r}) or {{}}).items()}}"]
    return [f"row[{c.name!r}] = {get}({key!r})"]


@cache
def row_builder(schema_name: str) -> RowBuilder:
    """The compiled row builder of ``schema_name`` (see :func:`flatten`)."""
    return compile_row_builder(columns(schema_name))


def compile_row_builder(cols: tuple[Column, ...]) -> RowBuilder:
    namespace: dict[str, Any] = {"_body": _body}
    exec(
        compile(_row_source(cols), "<inferlog row builder>", "exec"), namespace
    )  # the source is generated from our own schema
    build: RowBuilder = namespace["build"]
    return build


def flatten(
    schema_name: str, rec: dict[str, Any], topic: str, partition: int, offset: int, time: Time = _same
) -> dict[str, Any]:
    """One decoded record → one row of :func:`arrow_schema` (keys in column order). ``time`` converts each
    timestamp (the search sink writes int microseconds as ISO strings)."""
    return row_builder(schema_name)(rec, topic, partition, offset, time)


def flatten_record(rec: dict[str, Any], topic: str, partition: int, offset: int, time: Time = _same) -> dict[str, Any]:
    """:func:`flatten` of an ``InferenceRecord``."""
    return row_builder("inference_record")(rec, topic, partition, offset, time)


def flatten_failure(rec: dict[str, Any], topic: str, partition: int, offset: int, time: Time = _same) -> dict[str, Any]:
    """:func:`flatten` of a ``FailureSignal``."""
    return row_builder("failure_signal")(rec, topic, partition, offset, time)


# -- the column builder ---------------------------------------------------------------------------------------


def columns_of_records(cols: tuple[Column, ...], recs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{column: values}`` of ``recs`` for every column with an Avro path (lists, or Arrow arrays for bodies)."""
    out: dict[str, Any] = {}
    nested: dict[str, list[dict[str, Any] | None]] = {}
    for c in cols:
        if not c.path or c.kind == "encoding":
            continue
        if len(c.path) == 1:
            values: list[Any] = [r.get(c.path[0]) for r in recs]
            if c.kind in ("str_map", "list_map"):
                values = [v or {} for v in values]
        else:
            parents = nested.get(c.path[0])
            if parents is None:
                parents = nested[c.path[0]] = [r.get(c.path[0]) for r in recs]
            key = c.path[1]
            values = [None if p is None else p.get(key) for p in parents]
            if c.kind in ("str_map", "list_map"):
                values = [None if p is None else (v or {}) for p, v in zip(parents, values, strict=True)]
        if c.kind == "body":
            out[c.name], out[f"{c.name}_encoding"] = _bodies(values)
        else:
            out[c.name] = values
    return out


def to_table(schema_name: str, recs: list[dict[str, Any]], topic: str, partition: int, offsets: list[int]) -> pa.Table:
    """The rows :func:`flatten` makes of ``recs``, as an Arrow table of :func:`arrow_schema`, built column by
    column (no row dicts): the same table as ``pa.Table.from_pylist`` of the flattened rows, several times
    cheaper."""
    return table_of(columns(schema_name), arrow_schema(schema_name), recs, topic, partition, offsets)


def table_of(
    cols: tuple[Column, ...], schema: pa.Schema, recs: list[dict[str, Any]], topic: str, partition: int,
    offsets: list[int],
) -> pa.Table:  # fmt: skip
    values = columns_of_records(cols, recs)
    n = len(recs)
    values["kafka_topic"] = pa.array([topic] * n, type=pa.string())
    values["kafka_partition"] = pa.array([partition] * n, type=pa.int32())
    values["kafka_offset"] = pa.array(offsets, type=pa.int64())
    arrays = [v if isinstance(v := values[f.name], pa.Array) else pa.array(v, type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


# -- record time and Hive partitions --------------------------------------------------------------------------


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
