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
import pyarrow.compute as pc

from schemas.columns import Column, arrow_schema, arrow_type, columns

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


@lru_cache(maxsize=64)
def _record_type(cols: tuple[Column, ...]) -> pa.StructType:
    """The Arrow struct of a decoded record as far as ``cols`` read it: a field per top-level Avro field with a
    column, a struct per nested record (``bytes`` as binary: checked for UTF-8 afterwards)."""
    top: dict[str, Any] = {}
    for c in cols:
        if not c.path or c.kind == "encoding":
            continue
        t = pa.binary() if c.kind == "body" else arrow_type(c.kind)
        if len(c.path) == 1:
            top[c.path[0]] = t
        else:
            top.setdefault(c.path[0], {})[c.path[1]] = t
    return pa.struct([pa.field(k, pa.struct(list(v.items())) if isinstance(v, dict) else v) for k, v in top.items()])


def _no_null_maps(arr: pa.Array, valid: pa.Array | None) -> pa.Array:
    """A map column with every null as an empty map (an absent map is an empty one), null only where the record
    that holds it is (``valid``: the nested record's validity, ``None`` at the top level)."""
    if arr.null_count == 0 and valid is None:
        return arr
    # a null slot of a freshly converted map array has no entries: the same offsets without the validity bitmap
    # make it an empty map
    mask = None if valid is None else pc.invert(valid)
    return pa.MapArray.from_arrays(arr.offsets, arr.keys, arr.items, type=arr.type, mask=mask)


def _body_arrays(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``*_body`` and ``*_body_encoding`` of a binary column: validated and cast to UTF-8 strings by Arrow in
    one go; record by record (base64 for non-UTF-8) only when some body is not UTF-8."""
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:
        pairs = [_body(b) for b in raw.to_pylist()]
        return pa.array([b[0] for b in pairs], type=pa.string()), pa.array([b[1] for b in pairs], type=pa.string())
    return text, pc.if_else(text.is_null(), pa.scalar(None, pa.string()), pa.scalar("utf8"))


def columns_of_records(cols: tuple[Column, ...], recs: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """``{column: Arrow array}`` of ``recs`` for every column with an Avro path. Arrow reads the dicts in one
    call (``pa.array`` of the record struct, :func:`_record_type`: a field absent from a dict is null, as
    ``get``), then each column is a child of that struct; a nested record's columns are null where it is."""
    st = _record_type(cols)
    arr = pa.array(recs, type=st) if recs else pa.array([], type=st)
    children: dict[tuple[str, ...], tuple[pa.Array, pa.Array | None]] = {}
    for i, f in enumerate(st):
        child = arr.field(i)
        if pa.types.is_struct(f.type):
            valid = child.is_valid() if child.null_count else None
            for j, sub in enumerate(child.flatten()):  # flatten(): null where the nested record is null
                children[(f.name, f.type.field(j).name)] = (sub, valid)
        else:
            children[(f.name,)] = (child, None)
    out: dict[str, pa.Array] = {}
    for c in cols:
        if not c.path or c.kind == "encoding":
            continue
        values, valid = children[c.path]
        if c.kind == "body":
            out[c.name], out[f"{c.name}_encoding"] = _body_arrays(values)
        elif c.kind in ("str_map", "list_map"):
            out[c.name] = _no_null_maps(values, valid)
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
    return pa.Table.from_arrays([values[f.name] for f in schema], schema=schema)


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
