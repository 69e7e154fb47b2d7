"""Wait for a consumer group to have committed everything produced so far: the condition that says a stage of
the pipeline has processed (and, as every stage commits only after its outputs are durable, written) its input.

The target is the high watermark of every partition taken when the wait starts, so records produced later
(periodic ticks, expiry markers) neither move the goal nor let the wait succeed early; the group is caught up
when its committed offset is at least that target on every partition."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing on this partition
    target: int  # the high watermark when the wait started

    @property
    def lag(self) -> int:
        return self.target - (self.committed or 0)

    def __str__(self) -> str:
        committed = "none" if self.committed is None else str(self.committed)
        return f"{self.topic}[{self.partition}] committed={committed} high={self.target} lag={self.lag}"


class GroupLagTimeout(AssertionError):
    """The group did not catch up within the deadline; the message names it and its lag per partition."""

    def __init__(self, group: str, timeout_s: float, lagging: list[PartitionLag]) -> None:
        self.group = group
        self.lagging = lagging
        total = sum(p.lag for p in lagging)
        super().__init__(
            f"consumer group {group!r} not caught up within {timeout_s:g}s: lag {total} on "
            f"{len(lagging)} partition(s): " + "; ".join(str(p) for p in lagging)
        )


def _consumer(bootstrap: str, group: str) -> Consumer:
    # Never subscribes, so it never joins (or disturbs) the group; it only reads the group's committed offsets.
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})


def _partitions(consumer: Consumer, topics: Iterable[str]) -> list[TopicPartition]:
    out = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            raise RuntimeError(f"topic {topic!r}: {meta.error}")
        out += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    return out


def _lag(consumer: Consumer, group: str, targets: dict[tuple[str, int], int]) -> list[PartitionLag]:
    out = []
    for tp in consumer.committed([TopicPartition(t, p) for t, p in targets], timeout=10):
        if tp.error is not None:
            raise RuntimeError(f"committed offsets of {group!r}: {tp.error}")
        committed = tp.offset if tp.offset >= 0 else None
        out.append(PartitionLag(tp.topic, tp.partition, committed, targets[(tp.topic, tp.partition)]))
    return out


def group_lag(bootstrap: str, group: str, targets: dict[tuple[str, int], int]) -> list[PartitionLag]:
    """The group's committed offsets against ``targets`` ((topic, partition) -> offset), every partition."""
    consumer = _consumer(bootstrap, group)
    try:
        return _lag(consumer, group, targets)
    finally:
        consumer.close()


def high_watermarks(bootstrap: str, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    consumer = _consumer(bootstrap, f"watermarks-{time.monotonic_ns()}")
    try:
        return {
            (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1]
            for tp in _partitions(consumer, topics)
        }
    finally:
        consumer.close()


def wait_for_group_caught_up(
    bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 60.0, *, poll_s: float = 0.25
) -> float:
    """Wait until ``group`` has committed, on every partition of ``topics``, at least the high watermark those
    partitions have now; return the seconds it took. Raise :class:`GroupLagTimeout` (naming the group and
    the lag of each lagging partition) at the deadline."""
    t0 = time.monotonic()
    targets = high_watermarks(bootstrap, topics)
    deadline = t0 + timeout_s
    consumer = _consumer(bootstrap, group)
    try:
        while True:
            lagging = [p for p in _lag(consumer, group, targets) if p.lag > 0]
            if not lagging:
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                raise GroupLagTimeout(group, timeout_s, lagging)
            time.sleep(poll_s)  # poll interval of a condition with a deadline
    finally:
        consumer.close()


def read_to_end(conf: dict[str, Any], topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every record of ``topic`` up to the high watermarks it has when called: exact once whatever should be in
    the topic has been acknowledged by Kafka (no quiet window to wait for stragglers). ``conf`` is a client
    configuration (bootstrap, security); a throw-away group id that commits nothing is added."""
    consumer = Consumer({**conf, "group.id": f"read-to-end-{time.monotonic_ns()}", "enable.auto.commit": False})
    try:
        tps = _partitions(consumer, [topic])
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps}
        consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
        done = {p: 0 for p in ends}
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while any(done[p] < ends[p] for p in ends):
            if time.monotonic() >= deadline:
                short = {p: f"{done[p]}/{ends[p]}" for p in ends if done[p] < ends[p]}
                raise TimeoutError(
                    f"{topic}: not read to its end within {timeout_s:g}s (partition: offset/end {short})"
                )
            for msg in consumer.consume(10000, 0.2):
                if msg.error() is not None:
                    raise RuntimeError(f"{topic}: {msg.error()}")
                p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                if offset < ends[p]:
                    out.append(msg)
                done[p] = max(done[p], offset + 1)
            for tp in consumer.position(tps):  # past control records or compacted gaps
                if tp.offset >= 0:
                    done[tp.partition] = max(done[tp.partition], tp.offset)
        return out
    finally:
        consumer.close()
