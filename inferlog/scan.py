"""Read a topic by time range and/or offsets, bounded or following: the one reader behind ``replay``,
``tail``, ``stats`` and the analytics API.

A bounded scan captures each partition's high watermark when it starts and stops there, so it ends by
itself; ``follow=True`` keeps reading new records until the caller stops iterating or ``idle_exit_s``
passes with nothing new.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from core.config import CommonConfig
from core.errors import InferlogError
from core.kafka import base_config


class ScanError(InferlogError):
    """The topic cannot be read as asked (unknown topic, bad range)."""


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


@dataclass(frozen=True)
class ScanRange:
    """Which part of a topic to read. Times are epoch milliseconds (Kafka record timestamps)."""

    start_ms: int | None = None
    end_ms: int | None = None
    partitions: Sequence[int] | None = None
    start_offsets: dict[int, int] | None = None  # per partition, inclusive (resume points)
    end_offsets: dict[int, int] | None = None  # per partition, exclusive


def scan(
    cfg: CommonConfig,
    topic: str,
    rng: ScanRange = ScanRange(),
    *,
    follow: bool = False,
    idle_exit_s: float | None = None,
    poll_s: float = 0.5,
) -> Iterator[Message]:
    """Yield the records of ``topic`` in ``rng``, partition by partition interleaved as Kafka delivers."""
    consumer = Consumer(
        {
            **base_config(cfg),
            "group.id": "inferlog-scan",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=15)
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None:
            raise ScanError(f"topic {topic!r} does not exist on {cfg.kafka_bootstrap}")
        parts = sorted(tmeta.partitions) if rng.partitions is None else list(rng.partitions)
        missing = [p for p in parts if p not in tmeta.partitions]
        if missing:
            raise ScanError(f"topic {topic!r} has no partition(s) {missing}")
        starts = _start_offsets(consumer, topic, parts, rng)
        ends: dict[int, int] = {}
        if not follow:
            for p in parts:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                ends[p] = min(high, rng.end_offsets[p]) if rng.end_offsets and p in rng.end_offsets else high
        live = {p for p in parts if follow or starts[p] < ends[p]}
        if not live:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(live)])
        last_data = time.monotonic()
        while live:
            msg = consumer.poll(poll_s)
            if msg is None:
                if idle_exit_s is not None and time.monotonic() - last_data > idle_exit_s:
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ScanError(f"reading {topic}: {err}")
                continue
            last_data = time.monotonic()
            p, off = int(msg.partition() or 0), int(msg.offset() or 0)
            _, ts = msg.timestamp()
            if not follow and off >= ends[p]:
                _finish(consumer, topic, p, live)
                continue
            if rng.end_ms is not None and ts >= rng.end_ms:
                if not follow:
                    _finish(consumer, topic, p, live)
                continue
            yield Message(topic, p, off, ts, msg.key(), msg.value(), _headers(msg.headers()))
            if not follow and off + 1 >= ends[p]:
                _finish(consumer, topic, p, live)
    except KafkaException as exc:
        raise ScanError(f"reading {topic}: {exc}", retriable=True) from exc
    finally:
        consumer.close()


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    items = raw.items() if isinstance(raw, dict) else (raw or [])
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]


def _finish(consumer: Consumer, topic: str, p: int, live: set[int]) -> None:
    live.discard(p)
    consumer.incremental_unassign([TopicPartition(topic, p)])


def _start_offsets(consumer: Consumer, topic: str, parts: list[int], rng: ScanRange) -> dict[int, int]:
    out = {p: OFFSET_BEGINNING for p in parts}
    if rng.start_ms is not None:
        asked = [TopicPartition(topic, p, rng.start_ms) for p in parts]
        for tp in consumer.offsets_for_times(asked, timeout=15):
            out[tp.partition] = tp.offset if tp.offset >= 0 else OFFSET_END
    if rng.start_offsets:
        for p, off in rng.start_offsets.items():
            if p in out:
                out[p] = max(off, out[p]) if out[p] >= 0 else off
    # Resolve symbolic offsets so callers and the end check compare numbers.
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        if out[p] == OFFSET_BEGINNING:
            out[p] = low
        elif out[p] == OFFSET_END:
            out[p] = high
    return out


def end_offsets(cfg: CommonConfig, topic: str) -> dict[int, int]:
    """High watermark per partition (a snapshot)."""
    consumer = Consumer({**base_config(cfg), "group.id": "inferlog-scan"})
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ScanError(f"topic {topic!r} does not exist on {cfg.kafka_bootstrap}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time_ms(text: str, *, now_ms: int | None = None) -> int:
    """``15m`` / ``2h`` / ``1d`` ago, an epoch in ms, or an ISO-8601 time (``2026-11-24T10:00:00Z``)."""
    from datetime import UTC, datetime

    text = text.strip()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if text and text[-1] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        return now_ms - int(float(text[:-1]) * _UNITS[text[-1]] * 1000)
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScanError(f"cannot read time {text!r}: use 15m, 2h, 1d, epoch ms or ISO-8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
