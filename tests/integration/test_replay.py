"""`inferlog replay` against the real Kafka: to a file, to a topic (identical records), to HTTP (the original
requests byte for byte), resumable with a checkpoint, and a dry run that sends nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import pytest
from aiohttp import web
from confluent_kafka import Producer

from core.config import CommonConfig
from core.events import REQUEST_TYPE, RESPONSE_TYPE, LoggedEvent, to_kafka
from core.kafka import producer_config
from core.topics import TopicSpec, ensure_topics
from inferlog.cli import main
from inferlog.scan import ScanRange, scan

pytestmark = pytest.mark.integration


class _Common(TypedDict):
    """The LoggedEvent fields a request and its response share (typed, so that ``**common`` is checked)."""

    source: str
    namespace: str
    isvc: str
    component: str
    time: str


def _events(n: int) -> list[LoggedEvent]:
    out = []
    for i in range(n):
        body = json.dumps({"instances": [[i, 2.5, 3]]}).encode() + b" \x00\xff"[: i % 3]  # some non-UTF-8
        common = _Common(
            source="http://localhost:9081/",
            namespace="ns1" if i % 2 else "ns2",
            isvc="iris",
            component="predictor",
            time=f"2026-11-24T10:00:{i % 60:02d}Z",
        )
        out.append(
            LoggedEvent(id=f"id-{i}", type=REQUEST_TYPE, datacontenttype="application/json", data=body, **common)
        )
        out.append(LoggedEvent(id=f"id-{i}", type=RESPONSE_TYPE, data=b'{"predictions": [1]}', **common))
    return out


@pytest.fixture
def events_topic(stack: CommonConfig, unique: str) -> Iterator[tuple[CommonConfig, list[LoggedEvent]]]:
    cfg = dataclasses.replace(stack, topic_events=f"t.replay.events.{unique}")
    ensure_topics(cfg, [TopicSpec(cfg.topic_events, 3)])
    evs = _events(60)
    producer = Producer(producer_config(cfg))
    for ev in evs:
        key, headers, value = to_kafka(ev)
        producer.produce(cfg.topic_events, key=key, value=value, headers=list(headers))
    assert producer.flush(30) == 0
    yield cfg, evs


def _args(cfg: CommonConfig) -> list[str]:
    return ["--kafka-bootstrap", cfg.kafka_bootstrap, "--topic-events", cfg.topic_events, "--no-progress"]


def test_replay_to_topic_is_identical(events_topic: tuple[CommonConfig, list[LoggedEvent]], unique: str) -> None:
    cfg, evs = events_topic
    target = f"t.replay.copy.{unique}"
    ensure_topics(cfg, [TopicSpec(target, 3)])
    assert main(["replay", *_args(cfg), "--to-topic", target]) == 0
    src = {(m.partition, m.key, m.value, tuple(m.headers), m.timestamp_ms) for m in scan(cfg, cfg.topic_events)}
    dst = {(m.partition, m.key, m.value, tuple(m.headers), m.timestamp_ms) for m in scan(cfg, target)}
    assert len(src) == len(evs) and src == dst  # same partition (murmur2), key, value, headers, timestamp


def test_replay_to_file_with_filters_and_checkpoint(
    events_topic: tuple[CommonConfig, list[LoggedEvent]], tmp_path: Path
) -> None:
    cfg, _ = events_topic
    out, ckpt = tmp_path / "out.jsonl", tmp_path / "ckpt.json"
    argv = ["replay", *_args(cfg), "--namespace", "ns1", "--status", "request", "--to-file", str(out)]
    argv += ["--checkpoint", str(ckpt)]
    assert main(argv) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 30 and all(x["key"].startswith("ns1/iris/predictor/") for x in lines)
    # A re-run resumes after the checkpoint: nothing new to send.
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 30
    saved = json.loads(ckpt.read_text())
    assert sum(saved.values()) == 120  # every partition read to its end


def test_replay_dry_run_sends_nothing(events_topic: tuple[CommonConfig, list[LoggedEvent]], tmp_path: Path) -> None:
    cfg, _ = events_topic
    out = tmp_path / "never.jsonl"
    assert main(["replay", *_args(cfg), "--dry-run", "--to-file", str(out)]) == 0
    assert not out.exists()


def test_replay_to_http_reproduces_requests_byte_for_byte(
    events_topic: tuple[CommonConfig, list[LoggedEvent]],
) -> None:
    cfg, evs = events_topic
    received: list[tuple[bytes, str | None]] = []
    ready = threading.Event()
    state: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("Content-Type")))
        return web.Response(status=200)

    def serve() -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            state["port"] = runner.addresses[0][1]
            state["stop"] = asyncio.Event()
            ready.set()
            await state["stop"].wait()  # type: ignore[attr-defined]
            await runner.cleanup()

        loop = asyncio.new_event_loop()
        state["loop"] = loop
        loop.run_until_complete(go())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        url = f"http://127.0.0.1:{state['port']}/v1/models/iris:predict"
        assert main(["replay", *_args(cfg), "--to-http", url, "--concurrency", "4"]) == 0
    finally:
        loop = state["loop"]
        loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
        thread.join(10)
    expected = sorted((ev.data, ev.datacontenttype) for ev in evs if ev.type == REQUEST_TYPE)
    assert sorted(received, key=lambda x: (x[0], x[1] or "")) == sorted(expected, key=lambda x: (x[0], x[1] or ""))


def test_scan_time_range_is_bounded(events_topic: tuple[CommonConfig, list[LoggedEvent]]) -> None:
    cfg, evs = events_topic
    assert len(list(scan(cfg, cfg.topic_events, ScanRange(start_ms=0)))) == len(evs)
    assert list(scan(cfg, cfg.topic_events, ScanRange(start_ms=2**42))) == []
