"""The idle-partition fallback's bookkeeping (wall clock), kept apart from Faust so that it can be tested alone.

A partition is *idle* only when no event of it is waiting anywhere: this worker processed nothing of it for
``idle_timeout_s`` **and** the group's committed offset of its events partition has reached the partition's end
offset (Faust commits only after flushing the outputs and the join state, so everything before that offset is
durable). Time since the last processed event alone is not idleness: a worker that is behind (the backlog after a
restart or a rebalance, or a partition Faust's fetcher serves seconds after the others) processes nothing of a
partition whose events are already in Kafka; advancing its event time by the wall clock then expires pending
sides whose partners sit in that backlog (a pair split into ``request_only`` + ``response_only``).

A marker carries ``upto``, the end offset of the events partition when it was sent: every event below it was
processed before the idle time it reports. A worker that has already processed an event at or after ``upto``
(events and markers are two topics, so a replay after a restart may read them in either order) ignores the
marker: applying it would advance event time *between* a side that arrived after the idle period and its
partner. The partition was not idle after all; a later idle period sends a new marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class IdleTracker:
    """Per source partition: when it last had an event or marker processed, when its last marker was sent,
    and the offset after the last event processed (all of this worker, since its partitions were assigned)."""

    def __init__(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.last_activity: dict[int, float] = {}
        self.marker_sent: dict[int, float] = {}
        self.next_offset: dict[int, int] = {}  # events topic: offset of the last processed event + 1

    def assigned(self, partition: int, now: float) -> None:
        self.last_activity.setdefault(partition, now)

    def clear(self) -> None:
        self.last_activity.clear()
        self.marker_sent.clear()
        self.next_offset.clear()

    def on_event(self, partition: int, offset: int, now: float) -> None:
        self.last_activity[partition] = now
        self.next_offset[partition] = max(self.next_offset.get(partition, 0), offset + 1)

    def on_marker(self, partition: int, marker: Mapping[str, Any], now: float) -> bool:
        """Whether to apply ``marker`` (False: events that arrived after it were processed already)."""
        self.last_activity[partition] = now
        self.marker_sent.pop(partition, None)
        upto = marker.get("upto")
        return upto is None or self.next_offset.get(partition, 0) <= int(upto)

    def due(self, now: float) -> list[int]:
        """Partitions with nothing processed for ``idle_timeout_s`` and no marker sent within it."""
        t = self.idle_timeout_s
        return [
            p
            for p, last in self.last_activity.items()
            if now - last >= t and now - self.marker_sent.get(p, float("-inf")) >= t
        ]

    def marker(self, partition: int, now: float, base_us: int | None, end_offset: int) -> dict[str, Any]:
        """The marker for an idle partition (the caller checked it is caught up to ``end_offset``)."""
        self.marker_sent[partition] = now
        elapsed = now - self.last_activity[partition]
        return {"base": base_us, "elapsed": int(elapsed * 1e6), "upto": end_offset}


def caught_up(committed: int | None, end: int | None) -> bool:
    """Every event of the partition is processed and committed (an empty partition trivially)."""
    if end is None:
        return False
    return end == 0 or (committed is not None and committed >= end)
