"""Each server of the local stack is the real thing: round-trips through the clients inferlog uses."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import CommonConfig
from core.kafka import consumer_config, producer_config
from core.s3 import client as s3_client

pytestmark = pytest.mark.integration


def _create_topic(cfg: CommonConfig, name: str, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def test_kafka_confluent_roundtrip_with_headers(stack: CommonConfig, unique: str) -> None:
    topic = f"smoke.ck.{unique}"
    _create_topic(stack, topic)
    producer = Producer(producer_config(stack))
    delivered: list[KafkaError | Message] = []
    for i in range(10):
        producer.produce(
            topic,
            key=f"k{i}".encode(),
            value=f"v{i}".encode(),
            headers=[("ce_id", f"id-{i}".encode()), ("ce_type", b"t")],
            on_delivery=lambda err, msg: delivered.append(err or msg),
        )
    assert producer.flush(30) == 0
    assert all(not isinstance(d, KafkaError) and d.error() is None for d in delivered)

    consumer = Consumer(consumer_config(stack, f"smoke-{unique}"))
    consumer.subscribe([topic])
    got: dict[bytes | None, tuple[bytes | None, dict[str, str | bytes | None]]] = {}
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        got[msg.key()] = (msg.value(), dict(msg.headers() or []))
    consumer.close()
    assert len(got) == 10
    assert got[b"k3"] == (b"v3", {"ce_id": b"id-3", "ce_type": b"t"})


def test_kafka_aiokafka_roundtrip_with_headers(stack: CommonConfig, unique: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"smoke.aio.{unique}"
    _create_topic(stack, topic)

    async def go() -> dict[bytes, tuple[bytes, dict[str, bytes]]]:
        producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(
                    topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("ce_id", f"id-{i}".encode())]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        got: dict[bytes, tuple[bytes, dict[str, bytes]]] = {}
        try:
            async with asyncio.timeout(30):
                while len(got) < 5:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for r in records:
                            got[r.key] = (r.value, dict(r.headers))
        finally:
            await consumer.stop()
        return got

    got = asyncio.run(go())
    assert got[b"k4"] == (b"v4", {"ce_id": b"id-4"})


def test_s3_put_list_get_and_multipart(stack: CommonConfig, unique: str) -> None:
    from boto3.s3.transfer import TransferConfig

    s3 = s3_client(stack)
    bucket = f"smoke-{unique}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b/one.txt", Body=b"hello", Metadata={"x": "1"})
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="a/")["Contents"]]
    assert keys == ["a/b/one.txt"]
    obj = s3.get_object(Bucket=bucket, Key="a/b/one.txt")
    assert obj["Body"].read() == b"hello" and obj["Metadata"] == {"x": "1"}

    big = bytes(range(256)) * (6 * 1024 * 1024 // 256 + 7)  # > 5 MiB: two parts
    s3.upload_fileobj(
        io.BytesIO(big),
        bucket,
        "big.bin",
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(big)
    assert "-2" in head["ETag"]  # a multipart ETag
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == big


def test_opensearch_index_bulk_search(stack: CommonConfig, unique: str) -> None:
    from opensearchpy import OpenSearch, helpers

    client = OpenSearch(hosts=[stack.opensearch_url])
    index = f"smoke-{unique}"
    client.indices.create(
        index=index, body={"mappings": {"properties": {"model": {"type": "keyword"}, "latency_ms": {"type": "float"}}}}
    )
    docs = [{"_index": index, "_id": f"id-{i}", "model": "m1" if i % 2 else "m2", "latency_ms": i} for i in range(20)]
    ok, errors = helpers.bulk(client, docs, refresh="wait_for")
    assert ok == 20 and not errors
    res = client.search(
        index=index,
        body={"query": {"term": {"model": "m1"}}, "size": 0, "aggs": {"p": {"max": {"field": "latency_ms"}}}},
    )
    assert res["hits"]["total"]["value"] == 10
    assert res["aggregations"]["p"]["value"] == 19
    client.indices.delete(index=index)


def test_registry_avro_serializer_roundtrip(stack: CommonConfig, unique: str) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = json.dumps(
        {
            "type": "record",
            "name": "Smoke",
            "namespace": "io.inferlog.test",
            "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "int"}],
        }
    )
    client = SchemaRegistryClient({"url": stack.registry_url})
    topic = f"smoke.avro.{unique}"
    ser = AvroSerializer(client, schema)
    ctx = SerializationContext(topic, MessageField.VALUE)
    data = ser({"id": "a", "n": 7}, ctx)
    assert data is not None and data[0] == 0  # Confluent wire format: magic byte, then 4-byte schema id
    schema_id = int.from_bytes(data[1:5], "big")
    fetched = client.get_schema(schema_id)
    assert fetched.schema_str is not None
    assert json.loads(fetched.schema_str)["name"] == "Smoke"
    assert f"{topic}-value" in client.get_subjects()
    assert AvroDeserializer(client)(data, ctx) == {"id": "a", "n": 7}
