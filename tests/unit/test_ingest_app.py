"""The aiohttp app against a fake producer: status codes, spooling and draining, claim check, policy,
probes and metrics; and a hypothesis fuzz: any request gets a 2xx or a precise 4xx, never a 5xx."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ingest.app import INGEST_KEY, build_app
from ingest.claimcheck import ClaimCheck
from ingest.config import IngestConfig
from ingest.spool import Spool
from tests.support import ingest_examples as examples
from tests.support.ingest_fakes import FakeProducer

Factory = Callable[..., Any]


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.failing = False
        self.attempts = 0

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        self.attempts += 1
        if self.failing:
            raise ConnectionError("object storage unreachable")
        self.objects[(Bucket, Key)] = Body


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Factory]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(**overrides: Any) -> tuple[TestClient[Any, Any], FakeProducer, FakeS3]:
        cfg = dataclasses.replace(IngestConfig(), spool_dir=str(tmp_path / f"spool{len(clients)}"), **overrides)
        cfg.validate()
        producer, s3 = FakeProducer(), FakeS3()
        spool = Spool(cfg.spool_dir, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes)
        app = build_app(cfg, producer=producer, spool=spool, claimcheck=ClaimCheck(cfg, client=s3))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, producer, s3

    yield factory
    for c in clients:
        await c.close()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("example", examples.ALL, ids=lambda e: e.name)
async def test_examples_are_acknowledged_and_produced_as_contracted(make: Factory, example: examples.Example) -> None:
    client, producer, _ = await make()
    resp = await client.post(
        "/some/logger/path", data=example.body, headers=example.headers, skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 202, await resp.text()
    got = producer.topic_records()
    assert [(r.key.decode(), {k: v.decode() for k, v in r.headers}, r.value) for r in got] == [
        (e.key, e.headers, e.value) for e in example.expected
    ]


async def test_status_codes_for_bad_requests(make: Factory) -> None:
    client, producer, _ = await make(max_body_bytes=1000)
    resp = await client.get("/")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    resp = await client.post("/", data=b"x" * 2000, headers=dict(examples.A_REQUEST.headers))
    assert resp.status == 413 and resp.content_type == "application/problem+json"
    resp = await client.post("/", data=b"\x00", headers={"Content-Type": "application/cloudevents+protobuf"})
    assert resp.status == 415
    headers = [h for h in examples.A_REQUEST.headers if h[0] != "Ce-Source"]
    resp = await client.post("/", data=b"{}", headers=headers)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    doc = await resp.json(content_type=None)
    assert doc["attribute"] == "source" and doc["status"] == 400
    assert producer.records == []


async def test_chunked_bodies_are_read_whole_and_bounded(make: Factory) -> None:
    """Bodies without Content-Length arrive in chunks: read whole (byte for byte), 413 past max_body_bytes."""
    client, producer, _ = await make(max_body_bytes=1000)

    async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
        for part in parts:
            yield part
            await asyncio.sleep(0)  # let each chunk go out on its own

    parts = [b'{"a":', b"1" * 300, b"2" * 300, b"}"]
    resp = await client.post("/", data=chunks(parts), headers=dict(examples.A_REQUEST.headers))
    assert resp.status == 202, await resp.text()
    assert producer.topic_records()[-1].value == b"".join(parts)
    resp = await client.post("/", data=chunks([b"x" * 600, b"y" * 600]), headers=dict(examples.A_REQUEST.headers))
    assert resp.status == 413 and resp.content_type == "application/problem+json"
    assert len(producer.topic_records()) == 1


async def test_invalid_utf8_header_is_a_400_naming_it(make: Factory) -> None:
    client, _, _ = await make()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    raw = (
        b"POST / HTTP/1.1\r\nHost: x\r\nCe-Specversion: 1.0\r\nCe-Id: i\r\nCe-Source: s\r\nCe-Type: t\r\n"
        b"Ce-Namespace: caf\xc3\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    writer.write(raw)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400") and b'"attribute":"namespace"' in answer


async def test_kafka_down_spools_then_drains_in_order(make: Factory) -> None:
    client, producer, _ = await make()
    spooled0 = metric("inferlog_pipeline_events_total", stage="spooled", namespace="default", isvc="sklearn-iris")
    producer.failing = True
    ids = [f"id-{i}" for i in range(30)]
    for i in ids:
        headers = [(k, i if k == "Ce-Id" else v) for k, v in examples.A_REQUEST.headers]
        assert (await client.post("/", data=b"{}", headers=headers)).status == 202
    assert producer.records == []
    ready = await (await client.get("/readyz")).json()
    assert ready["ready"] and ready["spool_records"] == 30 and ready["kafka"] is False
    text = await (await client.get("/metrics")).text()
    assert "inferlog_ingest_spool_records 30.0" in text
    assert metric("inferlog_pipeline_events_total", stage="spooled", namespace="default", isvc="sklearn-iris") == (
        spooled0 + 30
    )
    producer.failing = False
    await wait_for(lambda: len(producer.records) == 30)
    assert [r.header("ce_id") for r in producer.topic_records()] == ids
    await wait_for(lambda: producer.up)
    # caught up: the next event goes straight to Kafka
    assert (await client.post("/", data=b"{}", headers=examples.A_RESPONSE.headers)).status == 202
    assert producer.topic_records()[-1].header("ce_type") == examples.A_RESPONSE.expected[0].headers["ce_type"]


async def test_a_late_delivery_report_hands_the_event_to_the_spool_and_kafka_gets_it_once(make: Factory) -> None:
    # A record already sent when the broker went away may be written although its report is late: the spool
    # answers for it, librdkafka keeps it, and the drain skips the copies librdkafka delivered in the end.
    client, producer, _ = await make(produce_timeout_s=0.05)
    producer.holding = True
    ids = [f"late-{i}" for i in range(6)]

    async def post(ce_id: str) -> int:
        headers = [(k, ce_id if k == "Ce-Id" else v) for k, v in examples.A_REQUEST.headers]
        return (await client.post("/", data=b"{}", headers=headers)).status

    assert await asyncio.gather(*map(post, ids)) == [202] * 6  # concurrent: all six reach the producer
    assert len(producer.held) == 6 and producer.records == [] and producer.up is False
    ingest = client.app[INGEST_KEY]
    assert ingest.spool.depth == 6
    producer.release(lambda r: r.header("ce_id") in {"late-0", "late-2", "late-3"})
    await wait_for(lambda: ingest.spool.depth == 0)
    got = [r.header("ce_id") for r in producer.topic_records()]
    assert sorted(got) == ids, got  # each once: three by librdkafka, three by the drain
    assert got[:3] == ["late-0", "late-2", "late-3"] and set(got[3:]) == {"late-1", "late-4", "late-5"}


async def test_spool_full_answers_503_with_retry_after(make: Factory) -> None:
    client, producer, _ = await make(spool_max_bytes=2000, retry_after_s=7)
    producer.failing = True
    statuses = []
    for i in range(10):
        headers = [(k, f"x{i}" if k == "Ce-Id" else v) for k, v in examples.A_REQUEST.headers]
        resp = await client.post("/", data=b"{}", headers=headers)
        statuses.append(resp.status)
        if resp.status == 503:
            assert resp.headers["Retry-After"] == "7"
    assert statuses[0] == 202 and statuses[-1] == 503


async def test_fatal_kafka_refusal_goes_to_the_dead_letter_topic(make: Factory) -> None:
    client, producer, _ = await make()
    producer.fatal = True
    assert (await client.post("/", data=b"{}", headers=examples.A_REQUEST.headers)).status == 202
    (dl,) = producer.topic_records("inferlog.deadletter")
    assert dl.header("error.stage") == "ingest" and "too large" in dl.header("error.reason")


async def test_claim_check_moves_large_bodies_to_object_storage(make: Factory) -> None:
    client, producer, s3 = await make(claimcheck_threshold_bytes=1024)
    body = b'{"instances": [' + b"1," * 2000 + b"1]}"
    assert (await client.post("/", data=body, headers=examples.A_REQUEST.headers)).status == 202
    (rec,) = producer.topic_records()
    digest = hashlib.sha256(body).hexdigest()
    assert rec.value == b""
    assert rec.header("ce_datasize") == str(len(body)) and rec.header("ce_datasha256") == digest
    bucket, _, key = rec.header("ce_dataref").removeprefix("s3://").partition("/")
    assert s3.objects[(bucket, key)] == body
    small = b'{"instances": []}'
    assert (await client.post("/", data=small, headers=examples.A_RESPONSE.headers)).status == 202
    assert producer.topic_records()[-1].value == small


async def test_object_storage_outage_spools_and_claim_checks_on_drain(make: Factory) -> None:
    client, producer, s3 = await make(claimcheck_threshold_bytes=1024)
    s3.failing = True
    big = b'{"instances": [' + b"2," * 2000 + b"2]}"
    small = b'{"instances": []}'
    assert (await client.post("/", data=big, headers=examples.A_REQUEST.headers)).status == 202
    assert (await client.post("/", data=small, headers=examples.A_RESPONSE.headers)).status == 202
    await wait_for(lambda: s3.attempts >= 3)  # the handler's try, then the drain's retries
    assert producer.records == []  # the small one waits behind the big one: order is kept
    s3.failing = False
    await wait_for(lambda: len(producer.records) == 2)
    first, second = producer.topic_records()
    assert first.value == b"" and first.header("ce_datasha256") == hashlib.sha256(big).hexdigest()
    assert s3.objects and list(s3.objects.values()) == [big]
    assert second.value == small


async def test_policy_in_the_app(make: Factory) -> None:
    client, producer, _ = await make(auth_tokens="default=tok-d", sampling="default/sklearn-iris=0", redact_fields="x")
    headers = dict(examples.B_REQUEST.headers)
    assert (await client.post("/", data=b"{}", headers=headers)).status == 401
    assert (await client.post("/", data=b"{}", headers={**headers, "Authorization": "Bearer other"})).status == 401
    other_ns = {**headers, "Ce-Namespace": "prod", "Authorization": "Bearer tok-d"}
    resp = await client.post("/", data=b"{}", headers=other_ns)
    assert resp.status == 403 and (await resp.json(content_type=None))["attribute"] == "namespace"
    # sampled out: acknowledged, not produced
    assert (await client.post("/", data=b"{}", headers={**headers, "Authorization": "Bearer tok-d"})).status == 202
    assert producer.records == []
    kept = {**headers, "Ce-Inferenceservicename": "kept", "Authorization": "Bearer tok-d"}
    assert (await client.post("/", data=b'{"x": 1, "y": 2}', headers=kept)).status == 202
    assert orjson.loads(producer.topic_records()[0].value) == {"x": "[REDACTED]", "y": 2}


async def test_the_stock_agent_authenticates_with_the_token_in_its_logger_url(make: Factory) -> None:
    # KServe's agent sends no Authorization header: the token is in the URL it posts to
    client, producer, _ = await make(auth_tokens="default=tok-d,prod=p+q")
    headers = dict(examples.B_REQUEST.headers)
    assert (await client.post("/token/tok-d", data=b"{}", headers=headers)).status == 202
    assert (await client.post("/?token=tok-d", data=b"{}", headers=headers)).status == 202
    assert (await client.post("/token/p%2Bq", data=b"{}", headers={**headers, "Ce-Namespace": "prod"})).status == 202
    assert (await client.post("/token/tok-x", data=b"{}", headers=headers)).status == 401
    resp = await client.post("/token/p%2Bq", data=b"{}", headers=headers)  # prod's token, namespace default
    assert resp.status == 403
    assert len(producer.topic_records()) == 3


async def test_a_trusted_sidecar_identity_writes_its_own_namespace(make: Factory) -> None:
    client, producer, _ = await make(auth_xfcc_trust_domain="cluster.local")
    headers = dict(examples.B_REQUEST.headers)
    xfcc = "By=spiffe://cluster.local/ns/inferlog/sa/ingest;URI=spiffe://cluster.local/ns/{}/sa/model"
    ok = {**headers, "X-Forwarded-Client-Cert": xfcc.format(headers["Ce-Namespace"])}
    assert (await client.post("/", data=b"{}", headers=ok)).status == 202
    assert (
        await client.post("/", data=b"{}", headers={**headers, "X-Forwarded-Client-Cert": xfcc.format("x")})
    ).status == 403
    assert (await client.post("/", data=b"{}", headers=headers)).status == 401
    assert len(producer.topic_records()) == 1


async def test_probes(make: Factory) -> None:
    client, _, _ = await make()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["ready"] is True
    text = await (await client.get("/metrics")).text()
    assert "inferlog_ingest_request_seconds_bucket" in text and "inferlog_ingest_kafka_up 1.0" in text


# -- fuzz -----------------------------------------------------------------------------------------------------
CE_NAMES = [
    "id",
    "source",
    "type",
    "specversion",
    "time",
    "recordedtime",
    "metadata",
    "annotations",
    "namespace",
    "inferenceservicename",
    "component",
    "endpoint",
    "dataref",
    "datasize",
    "x",
    "Weird_Name",
    "traceparent",
]
header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
structured_doc = st.dictionaries(
    st.sampled_from([*CE_NAMES, "data", "data_base64", "datacontenttype"]),
    json_values | st.sampled_from(["1.0", "0.2", "aGVsbG8=", "2026-03-10T09:14:03Z", "application/json"]),
    max_size=10,
)
VALID = {"Ce-Specversion": "1.0", "Ce-Id": "i", "Ce-Source": "s", "Ce-Type": "t"}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    method = draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]))
    headers = dict(VALID) if draw(st.booleans()) else {}
    for name in draw(st.lists(st.sampled_from(CE_NAMES), max_size=6)):
        headers["Ce-" + name] = draw(header_value | st.sampled_from(["{}", '{"a":["b"]}', '"q"', "1.0", ""]))
    for name in draw(st.lists(st.sampled_from(list(VALID)), max_size=2)):
        headers.pop(name, None)
    kind = draw(st.sampled_from(["binary", "structured", "batch", "other"]))
    if kind == "structured":
        headers["Content-Type"] = "application/cloudevents+json"
        body = json.dumps(draw(structured_doc | json_values)).encode()
    elif kind == "batch":
        headers["Content-Type"] = "application/cloudevents-batch+json"
        body = json.dumps(draw(st.lists(structured_doc, max_size=3) | json_values)).encode()
    else:
        ct = draw(
            st.none()
            | st.sampled_from(
                ["application/json", "text/plain; charset=x", "application/cloudevents+xml", "", "a/b+json"]
            )
        )
        if ct is not None:
            headers["Content-Type"] = ct
        body = draw(st.binary(max_size=300))
    if draw(st.integers(0, 9)) == 0:
        headers["Authorization"] = draw(header_value)
    return method, headers, body


def test_fuzz_never_5xx(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    cfg = dataclasses.replace(IngestConfig(), spool_dir=str(tmp_path / "spool"), max_body_bytes=4096)
    producer = FakeProducer()

    async def start() -> TestClient[Any, Any]:
        spool = Spool(cfg.spool_dir, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes)
        client = TestClient(TestServer(build_app(cfg, producer=producer, spool=spool, claimcheck=ClaimCheck(cfg))))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    allowed = {202, 400, 405, 413, 415}

    async def send(method: str, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        async with client.request(method, "/p", data=body, headers=headers) as resp:
            return resp.status, resp.content_type, await resp.read()

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(requests())
    def check(req: tuple[str, dict[str, str], bytes]) -> None:
        status, ctype, body = loop.run_until_complete(send(*req))
        assert status in allowed, (status, body)
        if status >= 400:
            assert ctype == "application/problem+json"
            doc = orjson.loads(body)
            assert doc["status"] == status and doc["detail"]
            if status == 400 and req[0] == "POST":
                assert doc.get("attribute"), doc

    try:
        check()
        assert producer.records, "the fuzz never produced a valid event"
    finally:
        loop.run_until_complete(client.close())
        loop.close()
