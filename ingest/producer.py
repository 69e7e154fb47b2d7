"""confluent-kafka producer bridged into asyncio.

Many in-flight HTTP requests share librdkafka's batches: :meth:`EventProducer.produce` enqueues the record and
returns a future; a background thread polls the producer and, after each poll, hands the batch of delivery
reports it served to the event loop with one ``loop.call_soon_threadsafe``, which resolves the futures.
There is no per-request flush. (Polling from a task on the event loop instead was measured: 3x slower, since a busy
loop polls late.)

``message.timeout.ms`` is ``delivery_timeout_s``, long on purpose: a request waits only ``produce_timeout_s``
for its report and is then spooled (see :mod:`ingest.service`), while librdkafka goes on retrying the record,
idempotently, so that one already sent when the broker went away is written once. Broker-wide trouble
reported by librdkafka (all brokers down) flips :attr:`EventProducer.up` to ``False`` so that new events go
straight to the spool instead of waiting out ``produce_timeout_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core.errors import kafka_error_is_transient
from core.kafka import producer_config
from ingest import metrics
from ingest.config import IngestConfig
from ingest.errors import ProduceFailed
from ingest.spool import Record

log = logging.getLogger("ingest.producer")


def _fatal(err: KafkaError) -> bool:
    """Kafka will never take this record (it goes to the dead-letter topic); otherwise the spool keeps it."""
    return not kafka_error_is_transient(err)


class EventProducer:
    """An idempotent, ``acks=all``, murmur2_random producer to one topic, usable from asyncio."""

    def __init__(
        self,
        cfg: IngestConfig,
        topic: str,
        *,
        on_state: Callable[[bool], None] | None = None,
        **overrides: Any,
    ) -> None:
        self.topic = topic
        self.up = True  # optimistic until librdkafka says otherwise
        self._on_state = on_state
        self._last_down = 0.0
        self._last_error = ""
        self._last_logged = 0.0
        conf = producer_config(
            cfg,
            **{
                "linger.ms": cfg.linger_ms,
                "message.timeout.ms": int(cfg.delivery_timeout_s * 1000),
                "socket.connection.setup.timeout.ms": max(1000, int(cfg.produce_timeout_s * 1000)),
                "reconnect.backoff.max.ms": 1000,
                "queue.buffering.max.kbytes": 512 * 1024,
                "error_cb": self._on_error,
                "logger": logging.getLogger("ingest.librdkafka"),
                "message.max.bytes": 1_048_576,
            },
        )
        conf.update(overrides)
        self._producer = Producer(conf)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[tuple[asyncio.Future[Message], KafkaError | None, Message]] = []

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the delivery reports gathered by one poll to the event loop in a single wake-up."""
        if self._reports and self._loop is not None:
            batch, self._reports = self._reports, []
            self._loop.call_soon_threadsafe(_resolve_all, batch)

    def _report(self, fut: asyncio.Future[Message], err: KafkaError | None, msg: Message) -> None:
        self._reports.append((fut, err, msg))  # runs on the thread that polls

    def _on_error(self, err: KafkaError) -> None:
        # Runs on the poll thread.
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._last_down = time.monotonic()
            if err.code() == KafkaError._ALL_BROKERS_DOWN or err.code() == KafkaError._RESOLVE:
                self._set_up(False)
        now = time.monotonic()
        if err.name() != self._last_error or now - self._last_logged > 30:
            self._last_error, self._last_logged = err.name(), now
            log.warning("kafka client error", extra={"error": err.str(), "code": err.name()})

    def _set_up(self, value: bool) -> None:
        if self.up == value:
            return
        self.up = value
        log.warning("kafka is " + ("reachable again" if value else "unreachable: spooling"))
        if self._on_state is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_state, value)
        metrics.KAFKA_UP.set(1 if value else 0)

    def mark_up(self) -> None:
        """A record was delivered: the broker is reachable."""
        if not self.up:
            self._set_up(True)

    def mark_down(self) -> None:
        """A record was not delivered in time: spool until a drain succeeds."""
        self._set_up(False)

    def produce(self, record: Record, topic: str | None = None) -> asyncio.Future[Message]:
        """Enqueue ``record``; the future resolves on the broker's delivery report, or fails with
        :class:`ProduceFailed` (``fatal`` when retrying cannot help)."""
        loop = self._loop or asyncio.get_running_loop()
        fut: asyncio.Future[Message] = loop.create_future()

        try:
            self._producer.produce(
                topic or self.topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                on_delivery=functools.partial(self._report, fut),
            )
        except BufferError:
            fut.set_exception(ProduceFailed("librdkafka's local queue is full"))
        except KafkaException as exc:
            err = exc.args[0]
            fut.set_exception(ProduceFailed(f"kafka refused the record: {err}", fatal=_fatal(err)))
        return fut

    def flush(self, timeout_s: float) -> int:
        """Wait for outstanding deliveries; returns how many are still pending."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> int:
        left = self.flush(timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._dispatch()  # reports served by the flush on this thread
        return left

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Ask a broker for the topic's metadata (blocking: call in a thread)."""
        try:
            self._producer.list_topics(self.topic, timeout=timeout_s)
            return True
        except KafkaException:
            return False


def _resolve_all(batch: list[tuple[asyncio.Future[Message], KafkaError | None, Message]]) -> None:
    for fut, err, msg in batch:
        _resolve(fut, err, msg)


def _resolve(fut: asyncio.Future[Message], err: KafkaError | None, msg: Message) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(msg)
    else:
        fut.set_exception(ProduceFailed(f"kafka did not take the record: {err.str()}", fatal=_fatal(err)))
