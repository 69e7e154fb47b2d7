"""The ``.avsc`` is the one source of the record shape: Arrow schema, row and column builders and the search
mapping all follow a field added to it."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from typing import Any

import pyarrow as pa
import pytest

from schemas.columns import Column, arrow_schema, arrow_schema_of, columns, columns_of
from schemas.serde import load_schema
from sinks.flatten import compile_row_builder, flatten, table_of, to_table
from sinks.opensearch import mapping, mapping_of

T0 = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC)


def record(i: int, **over: Any) -> dict[str, Any]:
    side = {
        "ce_type": "org.kubeflow.serving.inference.request",
        "time": T0,
        "recorded_time": None,
        "content_type": "application/json",
        "size": 3,
        "body": b"abc" if i % 2 else b"\xff\x01",
        "dataref": None,
        "sha256": None,
        "extensions": {"e": str(i)},
        "partition": 1,
        "offset": i,
    }
    rec = {
        "join_key": f"ns/isvc/predictor/{i}",
        "ce_id": str(i),
        "ce_source": "src",
        "namespace": "ns",
        "isvc": "isvc",
        "component": "predictor",
        "endpoint": "",
        "status": "complete",
        "protocol": "v1",
        "model_name": None,
        "model_version": None,
        "event_time": T0,
        "latency_ms": 1.5,
        "instance_count": 1,
        "request": side,
        "response": None if i % 3 == 0 else {**side, "ce_type": "org.kubeflow.serving.inference.response"},
        "metadata": {"x-a": ["1", "2"]},
        "annotations": {},
        "trace_id": None,
        "span_id": None,
        "request_id": "r",
        "model_metadata": {"owner": "t"},
        "error": None,
    }
    rec.update(over)
    return rec


def with_new_fields() -> dict[str, Any]:
    """A copy of the record schema with a new top-level field, a new nested field and a new free-text field."""
    schema = json.loads(load_schema("inference_record"))
    schema = copy.deepcopy(schema)
    schema["fields"].append({"name": "tokens_total", "type": ["null", "long"], "default": None})
    schema["fields"].append({"name": "prompt", "type": ["null", "string"], "default": None, "inferlog.text": True})
    payload = next(f for f in schema["fields"] if f["name"] == "request")["type"][1]
    payload["fields"].append(
        {
            "name": "finished_time",
            "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}],
            "default": None,
        }
    )
    return schema


def test_a_new_field_appears_typed_in_the_arrow_schema_the_rows_and_the_mapping() -> None:
    cols = columns_of(with_new_fields())
    names = [c.name for c in cols]
    assert names[-3:] == ["kafka_topic", "kafka_partition", "kafka_offset"]
    arrow = arrow_schema_of(cols)
    assert arrow.field("tokens_total").type == pa.int64()
    assert arrow.field("prompt").type == pa.string()
    # the nested field appears on both sides (the response reuses the Payload record)
    assert arrow.field("request_finished_time").type == pa.timestamp("us", tz="UTC")
    assert arrow.field("response_finished_time").type == pa.timestamp("us", tz="UTC")

    recs = [
        record(1, tokens_total=42, prompt="hello"),
        record(2),
        record(3, request={**record(3)["request"], "finished_time": T0}),
    ]
    rows = [compile_row_builder(cols)(r, "t", 0, n, lambda v: v) for n, r in enumerate(recs)]
    assert list(rows[0]) == names
    assert rows[0]["tokens_total"] == 42 and rows[0]["prompt"] == "hello"
    assert rows[1]["tokens_total"] is None and rows[2]["request_finished_time"] == T0
    table = table_of(cols, arrow, recs, "t", 0, [0, 1, 2])
    assert table.equals(pa.Table.from_pylist(rows, schema=arrow))
    assert table.column("tokens_total").to_pylist() == [42, None, None]

    m = mapping_of(cols)
    assert m["tokens_total"] == {"type": "long"}
    assert m["prompt"]["type"] == "text"  # inferlog.text: analysed, not a keyword
    assert m["request_finished_time"] == {"type": "date"}


def test_the_mapping_covers_every_column_and_nothing_else() -> None:
    for name in ("inference_record", "failure_signal"):
        cols = columns(name)
        m = mapping(name)
        extra = {"@timestamp", "doc_type"} | {f"{c.name}_truncated" for c in cols if c.kind == "body"}
        assert set(m) == {c.name for c in cols} | extra


def test_only_the_key_and_the_kafka_coordinates_are_required() -> None:
    for name in ("inference_record", "failure_signal"):
        required = [f.name for f in arrow_schema(name) if not f.nullable]
        assert required == ["join_key", "kafka_topic", "kafka_partition", "kafka_offset"]


def test_renamed_columns_and_bodies() -> None:
    by_name = {c.name: c for c in columns("inference_record")}
    assert by_name["request_source_offset"].path == ("request", "offset")
    assert by_name["response_body"].kind == "body" and by_name["response_body_encoding"].kind == "encoding"
    assert by_name["error"].text
    names = [c.name for c in columns("failure_signal")]
    assert names[names.index("source_partition") + 1] == "source_offset"


def test_a_clash_of_column_names_is_refused() -> None:
    schema = with_new_fields()
    schema["fields"].append({"name": "request_size", "type": "long"})  # request.size makes it too
    with pytest.raises(ValueError, match="request_size"):
        columns_of(schema)


def reference_row(
    cols: tuple[Column, ...], rec: dict[str, Any], topic: str, partition: int, offset: int
) -> dict[str, Any]:
    """The layout rules read plainly, one column at a time (what the generated builder must equal)."""
    kafka = {"kafka_topic": topic, "kafka_partition": partition, "kafka_offset": offset}
    row: dict[str, Any] = {}
    for c in cols:
        if not c.path:
            row[c.name] = kafka[c.name]
            continue
        holder: Any = rec
        for step in c.path[:-1]:
            holder = holder.get(step) if holder is not None else None
        value = None if holder is None else holder.get(c.path[-1])
        if c.kind == "body":
            try:
                row[c.name] = None if value is None else value.decode("utf-8")
                enc = None if value is None else "utf8"
            except UnicodeDecodeError:
                assert value is not None  # only bytes fail to decode
                row[c.name], enc = base64.b64encode(value).decode(), "base64"
            row[f"{c.name}_encoding"] = enc
        elif c.kind == "encoding":
            continue
        elif c.kind in ("str_map", "list_map"):
            row[c.name] = (
                None
                if holder is None
                else {k: (list(v) if c.kind == "list_map" else v) for k, v in (value or {}).items()}
            )
        else:
            row[c.name] = value
    return {c.name: row[c.name] for c in cols}


@pytest.mark.parametrize("i", range(6))
def test_the_generated_row_builder_equals_the_rules_read_plainly(i: int) -> None:
    cols = columns("inference_record")
    rec = record(i, request=None) if i == 5 else record(i)
    assert flatten("inference_record", rec, "t", 2, 9) == reference_row(cols, rec, "t", 2, 9)
    expected = pa.Table.from_pylist([reference_row(cols, rec, "t", 2, 9)], schema=arrow_schema("inference_record"))
    assert to_table("inference_record", [rec], "t", 2, [9]).equals(expected)


def test_the_streams_app_builds_exactly_the_schemas_fields() -> None:
    """The values come from streams/enrich.py (the one place that computes them): it must set every field the
    schema declares, and no other, so that no field silently takes its default or is dropped."""
    from streams.enrich import Side, build
    from tests.support.streams_harness import BASE_US, event

    req = event("c1", "request", BASE_US, b'{"instances": [[1]]}')
    built = build(Side(req, 0, 1, BASE_US), None, detected_us=BASE_US)
    for name, value in (("inference_record", built.record), ("failure_signal", built.failures[0])):
        declared = [f["name"] for f in json.loads(load_schema(name))["fields"]]
        assert list(value) == declared
