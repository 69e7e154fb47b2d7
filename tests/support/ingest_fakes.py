"""Test doubles for the ingest (unit tests only; integration tests use the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ingest.errors import ProduceFailed
from ingest.spool import Record


class FakeProducer:
    """Records what it is given; ``failing`` makes every delivery fail (retriable), ``fatal`` for good;
    ``holding`` keeps every delivery pending until :meth:`release` decides it, as librdkafka does while the
    broker is away."""

    def __init__(self) -> None:
        self.up = True
        self.failing = False
        self.fatal = False
        self.holding = False
        self.held: list[tuple[str | None, Record, asyncio.Future[Any]]] = []
        self.records: list[tuple[str | None, Record]] = []

    def start(self) -> None:
        pass

    def produce(self, record: Record, topic: str | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.holding:
            self.held.append((topic, record, fut))
        elif self.fatal and topic is None:
            fut.set_exception(ProduceFailed("record too large", fatal=True))
        elif self.failing:
            fut.set_exception(ProduceFailed("broker down"))
        else:
            self.records.append((topic, record))
            fut.set_result(None)
        return fut

    def release(self, delivered: Callable[[Record], bool]) -> None:
        """Settle the held deliveries: those ``delivered`` says reach the topic, the others fail (retriable)."""
        self.holding = False
        held, self.held = self.held, []
        for topic, record, fut in held:
            if delivered(record):
                self.records.append((topic, record))
                fut.set_result(None)
            else:
                fut.set_exception(ProduceFailed("message timed out"))

    def mark_up(self) -> None:
        self.up = True

    def mark_down(self) -> None:
        self.up = False

    def close(self, timeout_s: float = 10.0) -> int:
        return 0

    def topic_records(self, topic: str | None = None) -> list[Record]:
        return [r for t, r in self.records if t == topic]
