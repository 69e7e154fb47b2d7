"""The worker's output producer: confluent-kafka (librdkafka) instead of the app's pure-Python aiokafka producer.

Records, failure signals and dead letters are many small writes; through Faust's aiokafka producer their
batching, framing and socket writes ran on the event loop (about a quarter of the worker's time, measured
with py-spy). librdkafka does that work in its own threads, so the loop only pays for ``produce()``.

The barrier of :mod:`streams.app` needs one thing from the outputs: "everything sent so far is on the broker"
before it writes the join state. :meth:`Outputs.drain` is exactly that (``flush()`` in a worker thread, then
the delivery errors seen since the last drain); no per-record future is kept. Join state (the table's
changelog) and idle-partition markers still go through the app's producer, which Faust flushes before it
commits offsets, so the order on the broker stays: outputs, state, offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from core.kafka import producer_config
from streams.config import StreamsConfig
from streams.errors import OutputError

log = logging.getLogger("inferlog.streams")


class Outputs:
    """Idempotent, ``acks=all`` producer of the worker's outputs (explicit partitions)."""

    def __init__(self, cfg: StreamsConfig, *, delivery_timeout_s: float = 120.0) -> None:
        self.delivery_timeout_s = delivery_timeout_s
        self.producer = Producer(
            producer_config(
                cfg,
                **{
                    "client.id": f"{cfg.app_id}-outputs",
                    "message.timeout.ms": int(delivery_timeout_s * 1000),
                    "batch.size": 256 * 1024,
                },
            )
        )
        self.pending = 0  # produced since the last drain
        self._errors: list[KafkaError] = []

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:  # librdkafka's thread (inside flush/poll)
        if err is not None:
            self._errors.append(err)

    def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int, headers: list[tuple[str, bytes]] | None
    ) -> None:
        """Queue one record (never awaits; a full local queue waits for librdkafka briefly)."""
        while True:
            try:
                self.producer.produce(
                    topic, value, key, partition=partition, headers=cast(Any, headers), on_delivery=self._delivered
                )
                break
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self.producer.poll(0.05)
        self.pending += 1

    def _flush(self) -> None:
        deadline = time.monotonic() + self.delivery_timeout_s + 5.0
        while self.producer.flush(1.0) > 0:
            if time.monotonic() > deadline:
                raise OutputError(f"outputs not delivered within {self.delivery_timeout_s}s")

    async def drain(self) -> None:
        """Return when everything sent so far is acknowledged by the broker; raise if any of it failed."""
        if not self.pending:
            return
        self.pending = 0
        await asyncio.get_running_loop().run_in_executor(None, self._flush)
        if self._errors:
            err, self._errors = self._errors[0], []
            raise OutputError(f"output delivery failed: {err.str()}") from KafkaException(err)

    def close(self, timeout_s: float = 10.0) -> None:
        left = self.producer.flush(timeout_s)
        if left:
            log.warning("outputs not flushed at shutdown; they are produced again after restart", extra={"left": left})
