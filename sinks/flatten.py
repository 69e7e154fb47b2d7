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
from collections.abc import Callable, Sequence
from functools import cache, lru_cache
from operator import itemgetter
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


def _pick(keys: list[str], dicts: list[dict[str, Any]]) -> list[Sequence[Any]]:
    """The values of ``keys`` in each of ``dicts``, one sequence per key. Transposed in C (``itemgetter`` of
    all keys, then ``zip``); a dict without some key (a hand-made record) gives ``None`` for it, as ``get``."""
    if not dicts:
        return [() for _ in keys]
    try:
        rows: Any = list(map(itemgetter(*keys), dicts))
    except KeyError:
        rows = [tuple(d.get(k) for k in keys) for d in dicts]
    else:
        if len(keys) == 1:
            return [rows]
    return list(zip(*rows, strict=True))


def _arrow(c: Column, values: Sequence[Any]) -> pa.Array:
    if c.kind in ("str_map", "list_map") and None in values:
        values = [{} if v is None else v for v in values]  # an absent map is an empty one
    return pa.array(values, type=arrow_type(c.kind))


def _body_arrays(values: Sequence[bytes | None]) -> tuple[pa.Array, pa.Array]:
    text, encoding = _bodies(list(values))
    if not isinstance(text, pa.Array):
        return pa.array(text, type=pa.string()), pa.array(encoding, type=pa.string())
    return text, pc.if_else(text.is_null(), pa.scalar(None, pa.string()), pa.scalar("utf8"))


def columns_of_records(cols: tuple[Column, ...], recs: list[dict[str, Any]]) -> dict[str, pa.Array]:
    """``{column: Arrow array}`` of ``recs`` for every column with an Avro path. The values are taken for all
    columns of one level at once (:func:`_pick`); the columns of a nested record are built from the records
    that have it and spread over the rows with ``take`` (null where it is null)."""
    out: dict[str, pa.Array] = {}
    groups: dict[str, list[Column]] = {}
    for c in cols:
        if c.path and c.kind != "encoding":
            groups.setdefault(c.path[0] if len(c.path) > 1 else "", []).append(c)
    top = groups.pop("", [])
    picked = _pick([c.path[0] for c in top] + list(groups), recs)
    for c, values in zip(top, picked, strict=False):
        _put(out, c, values)
    for group, values in zip(groups.values(), picked[len(top) :], strict=True):
        present = [p for p in values if p is not None]
        where = None
        if len(present) < len(values):
            it = iter(range(len(present)))
            where = pa.array([None if p is None else next(it) for p in values], type=pa.int64())
        for c, sub in zip(group, _pick([c.path[1] for c in group], present), strict=True):
            _put(out, c, sub, where)
    return out


def _put(out: dict[str, pa.Array], c: Column, values: Sequence[Any], where: pa.Array | None = None) -> None:
    arrays = [*_body_arrays(values)] if c.kind == "body" else [_arrow(c, values)]
    names = [c.name, f"{c.name}_encoding"] if c.kind == "body" else [c.name]
    for name, arr in zip(names, arrays, strict=True):
        out[name] = arr if where is None else arr.take(where)


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
