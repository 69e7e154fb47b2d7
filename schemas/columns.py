"""The flat columns of a record, derived from its Avro schema: the one place that turns the ``.avsc`` into the
tabular shape that the archive (Parquet, Iceberg), the search index and analytics share.

Rules, applied field by field in schema order:

- a primitive field is one column of the same name (``null`` unions make it nullable); ``timestamp-micros`` and
  ``timestamp-millis`` longs are timestamps (UTC, microseconds);
- a nested record (``request``/``response``: ``Payload``) is spread into columns ``<field>_<subfield>``, all
  nullable (the nested record itself may be null);
- a ``bytes`` field becomes two columns: ``<name>`` as text (UTF-8, or base64 when it is not UTF-8) and
  ``<name>_encoding`` (``utf8`` | ``base64``); the search index adds ``<name>_truncated``;
- maps stay maps: ``map<string>`` and ``map<array<string>>``;
- three columns say where the row came from: ``kafka_topic``, ``kafka_partition``, ``kafka_offset``.

Two attributes of the schema (Avro keeps attributes it does not define as metadata) steer the layout:
``"inferlog.column"`` on a field renames its column (``partition`` → ``source_partition``: the source event's
coordinates, not the row's), ``"inferlog.text": true`` marks free text (searched as analysed text, not as a
keyword), and ``"inferlog.key"`` on the record names its key field, the one column that is never null.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pyarrow as pa

from schemas.serde import load_schema

__all__ = ["KAFKA_COLUMNS", "Column", "ColumnKind", "arrow_schema", "arrow_type", "columns", "columns_of"]

ColumnKind = Literal[
    "string", "int", "long", "float", "double", "boolean", "timestamp", "body", "encoding", "str_map", "list_map"
]


@dataclass(frozen=True)
class Column:
    """One flat column.

    :param name: the column name (Parquet, Iceberg, OpenSearch field).
    :param path: the Avro field names from the record root to the value (empty for the Kafka coordinates).
    :param kind: the logical type; ``body`` is the text of a ``bytes`` field, ``encoding`` says how it was written.
    :param nullable: False only for the record's key and the Kafka coordinates.
    :param text: free text (an analysed search field) rather than an identifier or an enum.
    :param doc: the Avro field's ``doc``.
    """

    name: str
    path: tuple[str, ...]
    kind: ColumnKind
    nullable: bool = True
    text: bool = False
    doc: str = ""


KAFKA_COLUMNS = (
    Column("kafka_topic", (), "string", nullable=False, doc="topic the row was read from"),
    Column("kafka_partition", (), "int", nullable=False, doc="partition the row was read from"),
    Column("kafka_offset", (), "long", nullable=False, doc="offset the row was read from"),
)

_PRIMITIVE: dict[str, ColumnKind] = {
    "string": "string",
    "int": "int",
    "long": "long",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
}

_ARROW: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "body": pa.string(),
    "encoding": pa.string(),
    "str_map": pa.map_(pa.string(), pa.string()),
    "list_map": pa.map_(pa.string(), pa.list_(pa.string())),
}


def arrow_type(kind: ColumnKind) -> pa.DataType:
    return _ARROW[kind]


def _unwrap(t: Any) -> tuple[Any, bool]:
    """``(type, nullable)`` of a field type: ``["null", T]`` is a nullable ``T``."""
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        if len(rest) != 1:
            raise ValueError(f"unions other than [null, T] have no column layout: {t}")
        return rest[0], len(rest) < len(t)
    return t, False


def _kind(t: Any, where: str) -> ColumnKind:
    if isinstance(t, str):
        if t in _PRIMITIVE:
            return _PRIMITIVE[t]
        raise ValueError(f"{where}: Avro type {t!r} has no column layout")
    if t.get("logicalType") in ("timestamp-micros", "timestamp-millis"):
        return "timestamp"
    if t["type"] == "map":
        values = t["values"]
        if values == "string":
            return "str_map"
        if isinstance(values, dict) and values.get("type") == "array" and values.get("items") == "string":
            return "list_map"
        raise ValueError(f"{where}: maps of {values!r} have no column layout")
    if t["type"] in _PRIMITIVE:
        return _PRIMITIVE[t["type"]]
    raise ValueError(f"{where}: Avro type {t!r} has no column layout")


def _walk(
    fields: list[dict[str, Any]], prefix: str, path: tuple[str, ...], key: str | None, named: dict[str, Any]
) -> Iterator[Column]:
    for f in fields:
        t, _ = _unwrap(f["type"])  # every column but the key is nullable (see the module doc)
        if isinstance(t, str) and t in named:  # a reference to a record defined earlier ("Payload")
            t = named[t]
        name = prefix + f.get("inferlog.column", f["name"])
        fpath = (*path, f["name"])
        doc = f.get("doc", "")
        if isinstance(t, dict) and t["type"] == "record":
            named[t["name"]] = named[f"{t.get('namespace', '')}.{t['name']}".lstrip(".")] = t
            yield from _walk(t["fields"], f"{name}_", fpath, None, named)
            continue
        nullable = prefix != "" or f["name"] != key
        if t == "bytes" or (isinstance(t, dict) and t.get("type") == "bytes"):
            yield Column(name, fpath, "body", nullable, True, doc)
            yield Column(
                f"{name}_encoding", fpath, "encoding", nullable, False, f"how {name} is written: utf8 | base64"
            )
            continue
        yield Column(name, fpath, _kind(t, name), nullable, bool(f.get("inferlog.text")), doc)


def columns_of(schema: Mapping[str, Any]) -> tuple[Column, ...]:
    """The columns of a parsed ``.avsc`` (a dict), Kafka coordinates last."""
    if schema.get("type") != "record":
        raise ValueError("a record schema is needed")
    named: dict[str, Any] = {}
    cols = (*_walk(list(schema["fields"]), "", (), schema.get("inferlog.key"), named), *KAFKA_COLUMNS)
    seen: set[str] = set()
    for c in cols:
        if c.name in seen:
            raise ValueError(f'column {c.name!r} is made twice: rename one with "inferlog.column"')
        seen.add(c.name)
    return cols


@cache
def columns(schema_name: str) -> tuple[Column, ...]:
    """The columns of one of the project's schemas (``inference_record``, ``failure_signal``)."""
    return columns_of(json.loads(load_schema(schema_name)))


def arrow_schema_of(cols: tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.kind), nullable=c.nullable) for c in cols])


@cache
def arrow_schema(schema_name: str) -> pa.Schema:
    """The Arrow schema of the flat rows of ``schema_name``: every Parquet file and Iceberg table of it has it."""
    return arrow_schema_of(columns(schema_name))
