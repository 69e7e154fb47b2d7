"""Flattening, object names and bytes, OpenSearch documents and bulk handling — no servers."""

from __future__ import annotations

import io
from typing import Any, cast

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.retry import Backoff
from sinks.config import SinkConfig
from sinks.errors import RecordError, WriteError
from sinks.flatten import (
    RECORD_SCHEMA,
    arrow_schema,
    flatten,
    flatten_record,
    hive_path,
    hive_path_at,
    record_time_us,
    to_table,
)
from sinks.framework import Batch, Item, PartialWrite, SinkRunner
from sinks.opensearch import OpenSearchSink, OpenSearchSinkConfig, chunks, index_templates, prepare
from sinks.s3 import S3Sink, S3SinkConfig, encode_objects
from tests.sinks_support import T0_US, make_failure, make_record


def decoded(rec: dict[str, Any]) -> dict[str, Any]:
    """What the serde's decode returns: timestamps as tz-aware datetimes."""
    import datetime as dt

    def ts(us: int | None) -> dt.datetime | None:
        return None if us is None else dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)

    out = dict(rec)
    out["event_time"] = ts(rec["event_time"])
    if "detected_time" in rec:
        out["detected_time"] = ts(rec["detected_time"])
    for side in ("request", "response"):
        if out.get(side):
            out[side] = {**out[side], "time": ts(out[side]["time"])}
    return out


def batch_of(recs: list[dict[str, Any]], schema: str = "inference_record", first: int = 100) -> Batch:
    b = Batch("recs", 3, schema)
    for n, r in enumerate(recs):
        b.add(Item(first + n, r["join_key"].encode(), b"x" * 10, [], record=decoded(r)), record_time_us(decoded(r)))
    return b


def test_flatten_record_columns() -> None:
    r = decoded(make_record(7, request={**make_record(7)["request"], "body": b"\xff\x00"}))
    row = flatten_record(r, "recs", 3, 42)
    assert list(row) == RECORD_SCHEMA.names
    assert row["join_key"] == "team-a/iris/predictor/id-000007"
    assert row["request_body"] == "/wA=" and row["request_body_encoding"] == "base64"
    assert row["response_body"] == '{"predictions": [1]}' and row["response_body_encoding"] == "utf8"
    assert row["metadata"] == {"x-user": ["u1"]} and row["kafka_offset"] == 42
    assert hive_path(r) == "namespace=team-a/isvc=iris/date=2024-05-01/hour=08"


def test_parquet_objects_are_split_by_hive_partition_and_named_by_first_offset() -> None:
    cfg = S3SinkConfig(s3_prefix="arch")
    recs = [make_record(0), make_record(1, isvc="other"), make_record(2), make_record(3, t_us=T0_US + 3600 * 10**6)]
    objects, rejected = encode_objects(cfg, batch_of(recs))
    assert not rejected
    assert [o.key for o in objects] == [
        "arch/recs/namespace=team-a/isvc=iris/date=2024-05-01/hour=08/recs+3+00000000000000000100.parquet",
        "arch/recs/namespace=team-a/isvc=other/date=2024-05-01/hour=08/recs+3+00000000000000000101.parquet",
        "arch/recs/namespace=team-a/isvc=iris/date=2024-05-01/hour=09/recs+3+00000000000000000103.parquet",
    ]
    table = pq.read_table(io.BytesIO(objects[0].data))
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=False)
    assert table.column("kafka_offset").to_pylist() == [100, 102]
    again, _ = encode_objects(cfg, batch_of(recs))
    assert [o.data for o in again] == [o.data for o in objects]  # deterministic bytes


@pytest.mark.parametrize(
    ("schema", "utf8_only", "int_times"),
    [
        ("inference_record", False, False),
        ("inference_record", True, False),
        ("inference_record", False, True),
        ("failure_signal", False, False),
        ("failure_signal", False, True),
    ],
)
def test_column_wise_table_equals_the_table_of_flattened_rows(schema: str, utf8_only: bool, int_times: bool) -> None:
    """to_table (the Parquet path) must give exactly what from_pylist over flatten() rows gave: same bytes;
    also with all bodies UTF-8 (cast by Arrow in one go) and from records decoded with timestamps as int."""
    import pyarrow as pa

    if schema == "failure_signal":
        recs = [decoded(make_failure(i)) for i in range(4)]
        recs[1] = {**recs[1], "metadata": {"x-user": ["u1", "u2"]}, "annotations": {"a": "b"}, "trace_id": "t"}
    else:
        base = make_record(0)
        recs = [
            decoded(make_record(0)),
            decoded(make_record(1, request={**base["request"], "body": b"\xff\x00", "extensions": {"a": "b"}})),
            decoded(make_record(2, response=None, status="request_only", latency_ms=None, model_version=None)),
            decoded(make_record(3, request=None, metadata={}, annotations={}, model_metadata={}, error="boom")),
            decoded(make_record(4, request={**base["request"], "body": None, "dataref": "s3://b/k", "sha256": "ab"})),
        ]
        if utf8_only:
            del recs[1]
    offsets = [10 + i for i in range(len(recs))]
    rows = [flatten(schema, r, "recs", 3, o) for r, o in zip(recs, offsets, strict=True)]
    expected = pa.Table.from_pylist(rows, schema=arrow_schema(schema))
    table = to_table(schema, [as_int_times(r) for r in recs] if int_times else recs, "recs", 3, offsets)
    assert table.schema.equals(expected.schema, check_metadata=True)
    assert table.equals(expected)

    def parquet(t: pa.Table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        return buf.getvalue()

    assert parquet(table) == parquet(expected)


def test_column_wise_table_with_a_side_absent_everywhere_and_fields_missing_from_the_dicts() -> None:
    """The column builder takes all fields of a level at once and spreads a nested record's columns over the
    rows that have it: a batch where no record has a response, or where hand-made dicts lack fields (read as
    null, absent maps as empty), still gives the table of the flattened rows."""
    import pyarrow as pa

    schema = arrow_schema("inference_record")
    one_sided = [make_record(i, response=None, status="request_only") for i in range(3)]
    sparse = [
        {k: v for k, v in make_record(i).items() if k not in ("annotations", "trace_id", "response")} for i in (7, 8)
    ]
    sparse[1]["request"] = {k: v for k, v in sparse[1]["request"].items() if k not in ("extensions", "sha256")}
    for recs in (one_sided, sparse, [make_record(9, request=None, response=None)]):
        offsets = list(range(len(recs)))
        rows = [flatten("inference_record", r, "recs", 1, o) for r, o in zip(recs, offsets, strict=True)]
        expected = pa.Table.from_pylist(rows, schema=schema)
        assert to_table("inference_record", recs, "recs", 1, offsets).equals(expected)
    assert to_table("inference_record", [], "recs", 1, []).equals(schema.empty_table())


def as_int_times(value: Any) -> Any:
    """``value`` with every datetime as int epoch microseconds (as decoded with ``timestamps_as_int``)."""
    import datetime as dt

    if isinstance(value, dict):
        return {k: as_int_times(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return value


def test_cached_hive_path_equals_hive_path() -> None:
    import datetime as dt

    for t_us in (T0_US, T0_US + 3599_999_999, T0_US + 3600 * 10**6, 0, -1, 86400 * 10**6 * 365 * 60 + 17):
        for ns, isvc in (("team-a", "iris"), ("", None), ("a/b", "x y")):
            rec = {"namespace": ns, "isvc": isvc, "event_time": t_us}
            assert hive_path_at(rec, record_time_us(rec)) == hive_path(rec)
    naive = {"namespace": "n", "isvc": "i", "event_time": dt.datetime(2024, 5, 1, 23, 59, 59)}
    aware = {
        "namespace": "n",
        "isvc": "i",
        "event_time": dt.datetime(2024, 5, 2, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    }
    for dated in (naive, aware):
        assert hive_path_at(dated, record_time_us(dated)) == hive_path(dated)


def test_decode_many_equals_decode_for_the_same_and_an_older_writer_schema() -> None:
    import json

    from schemas import AvroSerde, load_schema
    from schemas.serde import HEADER, MAGIC, SchemaError

    text = load_schema("inference_record")
    old = json.loads(text)
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("model_metadata", "error")]  # an older version
    writers = {1: fastavro.parse_schema(json.loads(text)), 2: fastavro.parse_schema(old)}  # 1: equal, not identical

    class Registry:
        def schema_by_id(self, schema_id: int) -> Any:
            if schema_id == 9:
                raise SchemaError("registry unreachable", retriable=True)
            return writers[schema_id]

    serde = AvroSerde(Registry(), "recs-value", text)  # type: ignore[arg-type]

    def wire(schema_id: int, rec: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(HEADER.pack(MAGIC, schema_id))
        fastavro.schemaless_writer(buf, writers[schema_id], rec)
        return buf.getvalue()

    recs = [make_record(i) for i in range(3)]
    values = [wire(1, recs[0]), wire(2, recs[1]), b"\x01junk", wire(1, recs[2])[:20], HEADER.pack(MAGIC, 9) + b"\x00"]
    many = serde.decode_many(values)
    assert many[0] == serde.decode(values[0]) == decoded(recs[0])
    assert many[1] == serde.decode(values[1]) == {**decoded(recs[1]), "model_metadata": {}, "error": None}
    assert isinstance(many[2], SchemaError) and not many[2].retriable
    assert isinstance(many[3], Exception)  # truncated payload
    assert isinstance(many[4], SchemaError) and many[4].retriable


@pytest.mark.parametrize("fmt", ["avro", "jsonl"])
def test_other_formats_are_deterministic_and_readable(fmt: str) -> None:
    cfg = S3SinkConfig(s3_format=fmt)
    recs = [make_record(i) for i in range(3)]
    (obj,), _ = encode_objects(cfg, batch_of(recs))
    (obj2,), _ = encode_objects(cfg, batch_of(recs))
    assert obj.data == obj2.data and obj.key.endswith(f".{fmt}")
    if fmt == "avro":
        rows = cast(list[dict[str, Any]], list(fastavro.reader(io.BytesIO(obj.data))))  # a record schema's: dicts
        assert [r["join_key"] for r in rows] == [r["join_key"] for r in recs]
    else:
        rows = [orjson.loads(line) for line in obj.data.splitlines()]
        assert rows[1]["ce_id"] == "id-000001" and rows[1]["event_time"].startswith("2024-05-01T08:00:00.001")


class FakeS3:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def put_object(self, **kw: Any) -> None:
        self.calls.append(("put", kw["Key"]))

    def upload_fileobj(self, fileobj: Any, bucket: str, key: str, ExtraArgs: Any = None, Config: Any = None) -> None:
        size = len(fileobj.read())
        self.calls.append(("transfer", key, size, Config.multipart_threshold, Config.multipart_chunksize))
        self.calls.append(("args", sorted(ExtraArgs)))


def test_large_objects_go_up_in_parts_by_the_transfer_manager() -> None:
    from sinks.s3 import S3Object

    cfg = S3SinkConfig(s3_multipart_bytes=5 * 1024 * 1024)
    fake = FakeS3()
    sink = S3Sink(cfg, client=fake)
    sink.upload(S3Object("k", b"a" * (11 * 1024 * 1024), 1, 0, 0))
    sink.upload(S3Object("small", b"a", 1, 0, 0))
    sink.upload(S3Object("edge", b"a" * (5 * 1024 * 1024), 1, 0, 0))  # not above the setting: one put
    mib5 = 5 * 1024 * 1024
    assert fake.calls == [
        ("transfer", "k", 11 * 1024 * 1024, mib5, mib5),
        ("args", ["ContentType", "Metadata"]),
        ("put", "small"),
        ("put", "edge"),
    ]


def test_opensearch_documents_index_names_and_ids() -> None:
    cfg = OpenSearchSinkConfig(index_prefix="il", index_body_max_bytes=10)
    (p,) = prepare(cfg, batch_of([make_record(1, namespace="Team-A")]))
    action, doc = (orjson.loads(line) for line in p.lines.splitlines())
    assert action == {"index": {"_index": "il-records-team-a-2024.05.01", "_id": "team-a/iris/predictor/id-000001"}}
    assert doc["request_body"] == '{"instance' and doc["request_body_truncated"] is True
    assert doc["@timestamp"] == doc["event_time"] and doc["doc_type"] == "record"
    (f,) = prepare(cfg, batch_of([make_failure(1)], "failure_signal"))
    action, doc = (orjson.loads(line) for line in f.lines.splitlines())
    assert action["index"]["_id"] == "team-a/iris/predictor/id-000001#response_missing"
    assert action["index"]["_index"].startswith("il-failures-team-a-")
    templates = index_templates(cfg)
    assert templates["il-records"]["index_patterns"] == ["il-records-*"]
    props = templates["il-records"]["template"]["mappings"]["properties"]
    assert props["join_key"] == {"type": "keyword"} and props["metadata"] == {"type": "flat_object"}


def test_a_reused_ids_later_records_get_their_own_document_ids() -> None:
    """The streams app marks a reused id's n-th record with the ordinal header: ``_id`` = ``<join key>#<n>``,
    so the retried inference and its failed attempt are two documents (not one overwriting the other)."""
    from schemas.wire import ordinal_headers

    cfg = OpenSearchSinkConfig(index_prefix="il")
    batch = Batch("recs", 3, "inference_record")
    for offset, ordinal in enumerate([1, 2]):
        rec = decoded(make_record(1))
        item = Item(offset, rec["join_key"].encode(), b"x", ordinal_headers(ordinal) or [], record=rec)
        batch.add(item, record_time_us(rec))
    ids = [orjson.loads(p.lines.splitlines()[0])["index"]["_id"] for p in prepare(cfg, batch)]
    assert ids == ["team-a/iris/predictor/id-000001", "team-a/iris/predictor/id-000001#2"]
    failures = Batch("fails", 3, "failure_signal")
    failures.add(Item(0, None, b"x", ordinal_headers(2) or [], record=decoded(make_failure(1))), None)
    (f,) = prepare(cfg, failures)
    assert orjson.loads(f.lines.splitlines()[0])["index"]["_id"] == "team-a/iris/predictor/id-000001#2#response_missing"


def test_bulk_chunks_respect_the_byte_limit() -> None:
    cfg = OpenSearchSinkConfig()
    prepared = prepare(cfg, batch_of([make_record(i) for i in range(10)]))
    limit = sum(len(p.lines) for p in prepared[:3])
    parts = list(chunks(prepared, limit))
    assert len(parts[0]) == 3 and len(parts) >= 4
    assert all(sum(len(p.lines) for p in c) <= limit for c in parts)
    assert [p for c in parts for p in c] == prepared
    assert [len(c) for c in chunks(prepared[:1], 10)] == [1]  # an item over the limit goes alone


class FakeBulk:
    """Answers each bulk with per-item statuses from a script (one list per call)."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script = script
        self.sent: list[int] = []

    def bulk(self, body: bytes) -> dict[str, Any]:
        n = body.count(b"\n") // 2
        self.sent.append(n)
        statuses = self.script.pop(0)
        assert len(statuses) == n
        items = []
        for s in statuses:
            err = None if s < 300 else {"type": "mapper_parsing_exception", "reason": "failed to parse field [x]"}
            items.append({"index": {"status": s, **({"error": err} if err else {})}})
        return {"errors": any(s >= 300 for s in statuses), "items": items}


def test_only_429_and_5xx_items_are_retried_and_4xx_items_are_rejected() -> None:
    sink = OpenSearchSink(OpenSearchSinkConfig())
    fake = FakeBulk([[201, 429, 400, 503], [200, 200]])
    sink.attach(fake)  # type: ignore[arg-type]
    batch = batch_of([make_record(i) for i in range(4)])
    with pytest.raises(PartialWrite) as exc:
        sink.write(batch)
    assert [i.offset for i in exc.value.retry] == [101, 103]
    assert [r.item.offset for r in exc.value.rejected] == [102]
    assert "mapper_parsing_exception" in exc.value.rejected[0].reason and "400" in exc.value.rejected[0].reason
    # the framework's retry writes only those two, and keeps the rejected one for the dead-letter topic
    runner = SinkRunner(SinkConfig(), sink)
    batch = batch_of([make_record(i) for i in range(4)])
    fake.script = [[201, 429, 400, 503], [200, 200]]
    fake.sent = []
    runner._write(batch, Backoff(base_s=0.0, cap_s=0.0, attempts=3, jitter=False))
    assert fake.sent == [4, 2]
    assert [r.item.offset for r in batch.rejected] == [102]


def test_one_retry_layer_items_that_keep_failing_cost_the_framework_s_attempts_only() -> None:
    sink = OpenSearchSink(OpenSearchSinkConfig())
    fake = FakeBulk([[429]] * 10)
    sink.attach(fake)  # type: ignore[arg-type]
    runner = SinkRunner(SinkConfig(), sink)
    with pytest.raises(WriteError) as exc:
        runner._write(batch_of([make_record(0)]), Backoff(base_s=0.0, cap_s=0.0, attempts=3, jitter=False))
    assert exc.value.retriable
    assert fake.sent == [1, 1, 1]  # three bulk rounds, not the sink's retries inside the framework's


def test_flattened_rows_keep_the_schema_column_order() -> None:
    from sinks.flatten import FAILURE_SCHEMA, RECORD_SCHEMA

    assert list(flatten("inference_record", decoded(make_record(1)), "t", 0, 1)) == RECORD_SCHEMA.names
    assert list(flatten("inference_record", decoded(make_record(1, request=None)), "t", 0, 1)) == RECORD_SCHEMA.names
    assert list(flatten("failure_signal", decoded(make_failure(1)), "t", 0, 1)) == FAILURE_SCHEMA.names


def test_cached_index_name_equals_index_name() -> None:
    from sinks.flatten import record_time_us
    from sinks.opensearch import index_name, index_name_at

    cfg = OpenSearchSinkConfig(index_prefix="il")
    for t_us in (T0_US, T0_US + 86_399_999_999 - T0_US % 86_400_000_000, 0, -1, 86400 * 10**6 * 365 * 60 + 17):
        for ns in ("Team-A", "", "a/b"):
            rec = decoded(make_record(1, namespace=ns, t_us=t_us))
            for schema in ("inference_record", "failure_signal"):
                assert index_name_at(cfg, schema, rec, record_time_us(rec)) == index_name(cfg, schema, rec)


def reference_lines(cfg: OpenSearchSinkConfig, batch: Batch) -> list[bytes]:
    """The bulk lines as the sink first built them: flatten() rows, then @timestamp, doc_type, truncation."""
    import base64

    from sinks.opensearch import index_name

    out = []
    for item in batch.records:
        rec = item.record
        assert rec is not None
        doc = flatten(batch.schema_name, rec, batch.topic, batch.partition, item.offset)
        doc["@timestamp"] = doc["event_time"]
        doc["doc_type"] = "failure" if batch.schema_name == "failure_signal" else "record"
        for side in ("request", "response"):
            body = doc.get(f"{side}_body")
            if body is not None:
                doc[f"{side}_body_truncated"] = len(body) > cfg.index_body_max_bytes
                doc[f"{side}_body"] = body[: cfg.index_body_max_bytes]
        failure = batch.schema_name == "failure_signal"
        _id = f"{rec['join_key']}#{rec.get('kind') or ''}" if failure else rec["join_key"]
        action = {"index": {"_index": index_name(cfg, batch.schema_name, rec), "_id": _id}}
        dumped = orjson.dumps(doc, default=lambda v: base64.b64encode(v).decode())
        out.append(orjson.dumps(action) + b"\n" + dumped + b"\n")
    return out


def test_opensearch_documents_same_bytes_with_int_timestamps() -> None:
    """prepare() builds documents in one pass and writes int timestamps as orjson writes the datetimes: the
    bulk lines are byte for byte those of the flatten()-based build, whichever way the records were decoded."""
    import datetime as dt

    cfg = OpenSearchSinkConfig(index_prefix="il", index_body_max_bytes=16)
    recs = [make_record(i, t_us=T0_US + i * 333_333 + (i % 3) * 5) for i in range(8)]
    recs[0]["event_time"] = T0_US  # a whole second: no fraction
    recs[1]["request"] = {**recs[1]["request"], "body": b"\xff\x00 not utf-8", "recorded_time": T0_US + 7}
    recs[2]["response"] = None
    recs[3]["request"] = {**recs[3]["request"], "body": None}
    recs[4]["metadata"] = {"a": ["1", "2"], "b": []}
    recs[5]["request"] = {**recs[5]["request"], "body": 'é"\\'.encode() * 20}
    failures = [make_failure(i, kind="request_missing") for i in range(3)]
    for schema, items in (("inference_record", recs), ("failure_signal", failures)):
        with_datetimes = batch_of(items, schema)
        for item in with_datetimes.items:  # decoded() leaves recorded_time as it is
            for side in ("request", "response"):
                p = (item.record or {}).get(side)
                if p and p["recorded_time"] is not None:
                    p["recorded_time"] = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                        microseconds=p["recorded_time"]
                    )
        expected = reference_lines(cfg, with_datetimes)
        assert [p.lines for p in prepare(cfg, with_datetimes)] == expected
        with_ints = batch_of(items, schema)
        for item in with_ints.items:
            item.record = as_int_times(item.record)
        assert [p.lines for p in prepare(cfg, with_ints)] == expected
    doc = orjson.loads(prepare(cfg, batch_of(recs[:1]))[0].lines.splitlines()[1])
    assert doc["event_time"] == "2024-05-01T08:00:00+00:00" and doc["request_time"] == doc["event_time"]


def test_parquet_objects_are_the_same_when_the_table_is_built_in_parts_while_the_batch_is_open() -> None:
    """The S3 sink converts an open batch's records to Arrow every ``convert_every`` items (framework.convert);
    the objects must be byte for byte those of converting the whole batch at the cut, with several Hive
    partitions (rows taken out of the table), a dead item inside a part, records missing the response, bodies
    that are not UTF-8 and a tail shorter than a part."""
    from sinks.framework import convert

    cfg = S3SinkConfig(s3_prefix="arch")
    sink = S3Sink(cfg)
    assert sink.convert_every > 0
    hour = 3600 * 10**6
    recs = []
    for i in range(2 * sink.convert_every + 337):
        r = make_record(i, isvc=("iris", "other")[i % 3 == 0], t_us=T0_US + (i // 700) * hour + i)
        if i % 5 == 0:
            r["response"] = None
        if i % 7 == 0:
            r["request"] = {**r["request"], "body": b"\xff\x00" + bytes([i % 256])}
        recs.append(r)

    def batch(convert_every: int = 0) -> Batch:
        b = Batch("recs", 3, "inference_record")
        for n, r in enumerate(recs):
            d = decoded(r)
            item = Item(100 + n, None, b"x", [], record=d, time_us=record_time_us(d))
            if n == 1500:  # undecodable: no row
                item.record, item.error, item.time_us = None, RecordError("bad", kind="undecodable"), None
            b.add(item, item.time_us)
            if convert_every and len(b.items) - b.converted >= convert_every:  # as SinkRunner._handle does
                convert(sink, b)
        return b

    whole = batch()
    in_parts = batch(sink.convert_every)
    assert len(in_parts.chunks) == 2 and in_parts.converted == 2 * sink.convert_every
    assert all(set(i.record) == {"namespace", "isvc"} for i in in_parts.items[:10] if i.record is not None)

    expected, rejected = encode_objects(cfg, whole)
    got, rejected_parts = encode_objects(cfg, in_parts)
    assert not rejected and not rejected_parts
    assert len(expected) == 8  # 2 models x 4 hours
    assert [(o.key, o.count, o.first_offset, o.last_offset) for o in got] == [
        (o.key, o.count, o.first_offset, o.last_offset) for o in expected
    ]
    assert [o.data for o in got] == [o.data for o in expected]
    # and what the row path (flatten, from_pylist) makes of each object's records
    for obj in got:
        items = [i for i in whole.records if obj.first_offset <= i.offset <= obj.last_offset]
        items = [i for i in items if hive_path_at(i.record, i.time_us) in obj.key]  # type: ignore[arg-type]
        rows = [flatten("inference_record", i.record, "recs", 3, i.offset) for i in items]  # type: ignore[arg-type]
        table = pq.read_table(io.BytesIO(obj.data))
        assert table.equals(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
    assert encode_objects(cfg, in_parts)[0] == got  # writing again (a retry) gives the same objects
