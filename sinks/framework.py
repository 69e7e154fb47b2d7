"""The consumer loop both sinks share: batches per topic-partition, deterministic cuts, commit after write.

How a record travels:

1. ``consume()`` hands a message to :meth:`SinkRunner._handle`. A tick (header ``inferlog_tick``, see
   :mod:`schemas.wire`) carries no data: it advances the open batch's record time, and with no batch open its
   offset is simply committed. A data record is decoded from the Confluent wire format; one that cannot be
   decoded stays in the batch as a *dead* item with the reason.
2. There is one open :class:`Batch` per topic-partition. It is cut when it holds ``flush_records`` records,
   when its Kafka value bytes reach ``flush_bytes``, or when record time (``event_time``, pushed forward by
   ticks) spans ``flush_span_s`` from its first record. A record that would stretch the span past the limit
   starts the next batch. Nothing depends on the wall clock, so the same offsets always give the same
   batches, the same object names and the same contents — and a batch always starts right after a committed
   offset, which is where a restarted worker resumes.
3. A closed batch goes to :meth:`Sink.write` through :func:`core.retry.retry_sync`. On success the dead
   items (and the items the store rejected for good) are produced to ``inferlog.deadletter`` with ``error.*``
   headers, then the offset after the batch is committed. Nothing is committed before the write succeeded.
4. A retriable failure that outlives the short in-line retries pauses the partition (backpressure): the
   batch is kept, the partition is rewound to the first message not yet handled, the consumer keeps polling
   (so it stays in the group) and the write is retried with capped exponential backoff until it succeeds.
   A permanent :class:`~sinks.errors.WriteError` stops the sink: a missing bucket is not one record's fault.
5. On a revoked or lost partition its open and pending batches are dropped, uncommitted; the next owner
   reads them again from the committed offset and cuts them the same way.

On stop (SIGTERM) a sink with deterministic cuts (S3) finishes writes already decided and drops open
batches: cutting a file at the moment the signal came would name and fill it differently from a replay.
A sink whose writes do not depend on cuts (OpenSearch: ``_id`` = join key) flushes everything first.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from core import metrics
from core.errors import is_retriable
from core.kafka import consumer_config, producer_config
from core.retry import Backoff, retry_sync
from schemas import AvroSerde
from schemas.wire import tick_time_us
from sinks.config import SinkConfig
from sinks.errors import RecordError, SinkError, WriteError
from sinks.flatten import record_time_us

__all__ = ["Batch", "Item", "Rejected", "Sink", "SinkRunner", "SinkStats"]

log = logging.getLogger("sinks.framework")

RECORDS_IN = Counter("inferlog_sink_records_in", "Records consumed (ticks excluded)", ["sink", "topic"])
RECORDS_WRITTEN = Counter("inferlog_sink_records_written", "Records written and committed", ["sink", "topic"])
RECORDS_RETRIED = Counter("inferlog_sink_records_retried", "Records in write attempts that were retried", ["sink"])
RECORDS_DEAD = Counter(
    "inferlog_sink_records_dead_lettered", "Records sent to the dead-letter topic", ["sink", "topic", "kind"]
)
LAG = Gauge("inferlog_sink_lag", "High watermark minus committed offset", ["sink", "topic", "partition"])
PAUSED = Gauge("inferlog_sink_paused_partitions", "Partitions paused by backpressure", ["sink"])
WRITE_SECONDS = Histogram("inferlog_sink_write_seconds", "Duration of one successful batch write", ["sink"])
IN_FLIGHT = Gauge("inferlog_sink_writes_in_flight", "Batch writes running in the background", ["sink"])

TP = tuple[str, int]


@dataclass
class Item:
    """One consumed data record. ``record`` is the decoded Avro value, ``None`` when it could not be decoded
    (then ``error`` says why); ``time_us`` its record time (:func:`~sinks.flatten.record_time_us`) once known."""

    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    record: dict[str, Any] | None = None
    error: RecordError | None = None
    time_us: int | None = None


@dataclass(frozen=True)
class Rejected:
    """An item the store refused for good, with the store's reason (goes to the dead-letter topic)."""

    item: Item
    reason: str
    kind: str = "rejected"


@dataclass
class Batch:
    """The records of one topic-partition between two cuts. ``end_offset`` is the last offset covered,
    ticks included; committing ``end_offset + 1`` after the write is what makes progress durable."""

    topic: str
    partition: int
    schema_name: str
    items: list[Item] = field(default_factory=list)
    end_offset: int = -1
    nbytes: int = 0
    first_time_us: int | None = None
    max_time_us: int | None = None
    opened_at: float = field(default_factory=time.monotonic)  # wall clock: only idempotent sinks look at it

    @property
    def first_offset(self) -> int:
        return self.items[0].offset

    @property
    def records(self) -> list[Item]:
        """The decodable items, in offset order."""
        return [i for i in self.items if i.record is not None]

    @property
    def size(self) -> int:
        return len(self.items)

    def advance_time(self, t_us: int) -> None:
        self.max_time_us = t_us if self.max_time_us is None else max(self.max_time_us, t_us)

    def span_us(self, t_us: int | None = None) -> int:
        if self.first_time_us is None or self.max_time_us is None:
            return 0
        top = self.max_time_us if t_us is None else max(self.max_time_us, t_us)
        return top - self.first_time_us

    def add(self, item: Item, t_us: int | None) -> None:
        self.items.append(item)
        self.end_offset = item.offset
        self.nbytes += len(item.value)
        if t_us is not None:
            if self.first_time_us is None:
                self.first_time_us = t_us
            self.advance_time(t_us)


class Sink(abc.ABC):
    """A destination. The framework calls :meth:`setup` once before consuming, :meth:`write` with each
    closed batch (possibly again with the same batch after a retriable failure: writes must be idempotent)
    and :meth:`close` at the end.

    ``write`` returns the items the store refused for good (they go to the dead-letter topic) and raises
    :class:`~sinks.errors.WriteError` when the batch as a whole failed: retriable → pause and retry later,
    permanent → stop.
    """

    kind: str = "sink"
    stage: str = "archived"
    #: True when object names/contents depend on where batches are cut (then never cut on shutdown/idle).
    deterministic_cuts: bool = True
    #: Batch writes that may run at once, in background threads, while the consume thread reads, decodes and
    #: cuts the next batches (``0``: write in the consume thread). ``write`` must then be thread-safe.
    #: Offsets are still committed per partition strictly in order, each only after every write before it
    #: succeeded (see :class:`SinkRunner`).
    max_in_flight: int = 2
    #: Decode ``timestamp-micros`` fields as int epoch microseconds instead of datetimes (less CPU per record).
    raw_timestamps: bool = False

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Create clients and check the destination is reachable; raise a typed error if not."""

    @abc.abstractmethod
    def write(self, batch: Batch) -> list[Rejected]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""


@dataclass
class SinkStats:
    """Plain counters of one runner (the Prometheus metrics are process-wide)."""

    records_in: int = 0
    written: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    pauses: int = 0
    first_record_at: float = 0.0  # time.monotonic() of the first record consumed
    last_write_at: float = 0.0  # time.monotonic() of the last successful write


@dataclass
class _Pending:
    batch: Batch
    attempt: int
    due: float


@dataclass
class _Write:
    """A batch being written in the background: the future gives ``(rejected, finished_at)``."""

    batch: Batch
    future: Future[tuple[list[Rejected], float]]


class SinkRunner:
    """Runs one :class:`Sink` over the configured topics until ``stop`` is set.

    :param cfg: the sink settings.
    :param sink: the destination.
    :param consumer_overrides: extra librdkafka consumer settings (tests use short session timeouts).
    :param max_in_flight: overrides ``sink.max_in_flight``.

    **Writes in flight.** A closed batch is written by a background thread, at most ``max_in_flight`` at once;
    when all are busy the consume thread waits for the oldest (backpressure). The consume thread takes the
    results per partition in the order the batches were cut: a successful write is committed only once every
    batch cut before it on that partition was written and committed. When a write fails (retriable), that
    batch is kept for retries with the partition paused, the batches of the partition cut after it are
    forgotten (their writes may still finish: writes are idempotent) and the partition is rewound to the
    offset after the failed batch, so they are read, cut and written again once it succeeded.
    """

    INLINE_RETRY = Backoff(base_s=0.2, cap_s=1.0, attempts=3)

    def __init__(
        self,
        cfg: SinkConfig,
        sink: Sink,
        *,
        consumer_overrides: dict[str, Any] | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.max_in_flight = sink.max_in_flight if max_in_flight is None else max_in_flight
        self._in_flight: dict[TP, deque[_Write]] = {}
        self._running: set[Future[Any]] = set()  # every background write not finished, forgotten ones too
        self._pool: ThreadPoolExecutor | None = None
        self.stats = SinkStats()
        self.group = cfg.group_for(sink.kind)
        self._consumer_overrides = dict(consumer_overrides or {})
        self._span_us = int(cfg.flush_span_s * 1_000_000)
        self._serdes: dict[str, AvroSerde] = {}
        self._open: dict[TP, Batch] = {}
        self._pending: dict[TP, _Pending] = {}
        self._rewound: set[TP] = set()
        self._commit_due: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}
        self._assigned: set[TP] = set()
        self._backoff = Backoff(base_s=0.5, cap_s=cfg.sink_retry_max_s, attempts=1)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_lag = 0.0
        self.ready = threading.Event()
        self.last_loop = time.monotonic()  # liveness: the consume loop turns at least every poll timeout

    def alive(self, stall_s: float = 120.0) -> bool:
        """True while the consume loop keeps turning (a write being retried still turns it)."""
        return time.monotonic() - self.last_loop < stall_s

    # -- lifecycle -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, batch and write until ``stop`` is set; then finish as described in the module doc."""
        self.sink.setup()
        self._serdes = {
            t: AvroSerde.for_topic(
                self.cfg.registry_url, t, self.cfg.schema_for(t), timestamps_as_int=self.sink.raw_timestamps
            )
            for t in self.cfg.topics()
        }
        conf = consumer_config(self.cfg, self.group, **{"enable.partition.eof": False})
        if self.cfg.sink_instance_id:
            conf["group.instance.id"] = self.cfg.sink_instance_id
        conf.update(self._consumer_overrides)
        self._consumer = Consumer(conf)
        self._producer = Producer(producer_config(self.cfg))
        self._consumer.subscribe(
            self.cfg.topics(), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info("sink started", extra={"sink": self.sink.kind, "group": self.group, "topics": self.cfg.topics()})
        self.ready.set()
        try:
            while not stop.is_set():
                self.last_loop = time.monotonic()
                self._reap()
                self._retry_due()
                # with writes in flight, come back soon to commit what they finished
                msgs = self._consumer.consume(num_messages=1000, timeout=0.05 if self._running else 0.2)
                good: list[Message] = []
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise SinkError(f"Kafka consumer failed: {err}")
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error", extra={"error": str(err)})
                        continue
                    good.append(msg)
                for msg, headers, decoded in self._predecode(good):
                    self._handle(msg, headers, decoded)
                if not self.sink.deterministic_cuts:
                    # An idempotent sink (OpenSearch: _id = join key) may cut anywhere: it writes what it has
                    # when caught up, and under steady traffic once a batch is index_linger_s old.
                    stale = time.monotonic() - self.cfg.index_linger_s
                    for tp, batch in list(self._open.items()):
                        if not msgs or batch.opened_at <= stale:
                            self._close(tp)
                self._commit_ticks()
                self._update_lag()
            self._shutdown()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._consumer.close()
            if self._producer is not None:
                self._producer.flush(10)
            self.sink.close()
            log.info("sink stopped", extra={"sink": self.sink.kind, **vars(self.stats)})

    def _shutdown(self) -> None:
        if not self.sink.deterministic_cuts:
            for tp in list(self._open):
                self._close(tp)
        self._drain()
        for tp, pending in list(self._pending.items()):  # a last try for what was already cut
            self._attempt(tp, pending.batch, pending.attempt, final=True)
        self._commit_ticks()

    # -- consuming -------------------------------------------------------------------------------------

    def _predecode(self, msgs: list[Message]) -> list[tuple[Message, list[tuple[str, bytes]], Any]]:
        """Headers of each message and, for data records of partitions not paused, the decoded value (or the
        exception), decoded in bulk per topic: one pass of the serde over a whole ``consume()`` result."""
        out: list[tuple[Message, list[tuple[str, bytes]], Any]] = []
        todo: dict[str, list[int]] = {}
        for msg in msgs:
            headers = _headers(msg)
            topic = str(msg.topic())
            value = msg.value()
            if (
                value
                and topic in self._serdes
                and (topic, int(msg.partition() or 0)) not in self._pending
                and tick_time_us(headers) is None
            ):
                todo.setdefault(topic, []).append(len(out))
            out.append((msg, headers, None))
        for topic, idx in todo.items():
            results = self._serdes[topic].decode_many([out[i][0].value() or b"" for i in idx])
            for i, res in zip(idx, results, strict=True):
                out[i] = (out[i][0], out[i][1], res)
            RECORDS_IN.labels(self.sink.kind, topic).inc(len(idx))
        return out

    def _handle(self, msg: Message, headers: list[tuple[str, bytes]] | None = None, decoded: Any = None) -> None:
        topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
        tp = (topic, partition)
        if tp in self._pending:  # paused: hand the rest back to Kafka, to be read again on resume
            if tp not in self._rewound:
                assert self._consumer is not None
                self._consumer.seek(TopicPartition(topic, partition, offset))
                self._rewound.add(tp)
            return
        if headers is None:
            headers = _headers(msg)
        batch = self._open.get(tp)
        tick = tick_time_us(headers)
        if tick is not None:
            if batch is None:
                self._commit_due[tp] = offset + 1
                return
            batch.end_offset = offset
            batch.advance_time(tick)
            if batch.span_us() >= self._span_us:
                self._close(tp)
            return
        self.stats.records_in += 1
        if not self.stats.first_record_at:
            self.stats.first_record_at = time.monotonic()
        if decoded is None:
            RECORDS_IN.labels(self.sink.kind, topic).inc()  # else counted in bulk by _predecode
        item = self._decode(topic, offset, msg.key(), msg.value() or b"", headers, decoded)
        t_us = item.time_us
        if batch is not None and t_us is not None and batch.span_us(t_us) >= self._span_us:
            self._close(tp)
            batch = None
        if batch is None:
            batch = self._open[tp] = Batch(topic, partition, self.cfg.schema_for(topic))
            self._commit_due.pop(tp, None)
        batch.add(item, t_us)
        if batch.size >= self.cfg.flush_records or batch.nbytes >= self.cfg.flush_bytes:
            self._close(tp)

    def _decode(
        self, topic: str, offset: int, key: bytes | None, value: bytes, headers: list[Any], decoded: Any = None
    ) -> Item:
        """The item of one data record. ``decoded``: what :meth:`_predecode` got for it (a record or an
        exception), ``None`` if not decoded yet."""
        item = Item(offset, key, value, headers)
        if not value:
            item.error = RecordError("empty value without the inferlog_tick header", kind="undecodable")
            return item
        serde = self._serdes[topic]
        try:
            if isinstance(decoded, dict):
                item.record = decoded
            elif isinstance(decoded, Exception) and not is_retriable(decoded):
                raise decoded
            else:
                # The registry being away is retriable (for a while); a payload that does not decode is not.
                item.record = retry_sync(
                    lambda: serde.decode(value),
                    Backoff(base_s=0.5, cap_s=5.0, attempts=0, deadline_s=60),
                    what="decode",
                )
            item.time_us = record_time_us(item.record)
        except Exception as exc:
            if is_retriable(exc):
                raise SinkError(f"cannot decode {topic}@{offset}: registry unavailable: {exc}") from exc
            item.record = None
            item.error = RecordError(f"{type(exc).__name__}: {exc}", kind="undecodable")
        return item

    # -- writing ---------------------------------------------------------------------------------------

    def _close(self, tp: TP) -> None:
        batch = self._open.pop(tp)
        if self.max_in_flight <= 0 or (not batch.records and tp not in self._in_flight):
            self._attempt(tp, batch, 0, inline=True)  # (a batch with nothing to write commits in turn too)
            return
        while len(self._running) >= self.max_in_flight:  # backpressure: wait for a slot
            wait(set(self._running), return_when=FIRST_COMPLETED)
            self._reap()
            if tp in self._pending:  # an earlier batch of this partition failed meanwhile: this one is re-read
                return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix=f"sink-{self.sink.kind}-write")
        future = self._pool.submit(self._write, batch, self.INLINE_RETRY)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        self._in_flight.setdefault(tp, deque()).append(_Write(batch, future))
        IN_FLIGHT.labels(self.sink.kind).set(len(self._running))

    def _write(self, batch: Batch, policy: Backoff) -> tuple[list[Rejected], float]:
        """Write ``batch`` (with short retries); returns what the store rejected and when the write ended."""
        started = time.monotonic()
        if not batch.records:  # only dead items: nothing to write, they go to the dead-letter topic
            return [], started
        rejected = retry_sync(lambda: self.sink.write(batch), policy, what=f"{self.sink.kind} write")
        finished = time.monotonic()
        WRITE_SECONDS.labels(self.sink.kind).observe(finished - started)
        return rejected, finished

    def _reap(self) -> None:
        """Take the results of finished background writes, per partition in cut order: commit each success
        whose predecessors all succeeded; on a failure keep that batch pending (paused) and forget the rest."""
        for tp, q in self._in_flight.items():  # a permanent failure stops the sink at once, wherever it is
            for w in q:
                if w.future.done():
                    self._raise_permanent(tp, w.future.exception())
        for tp in list(self._in_flight):
            queue = self._in_flight.get(tp)
            while queue and queue[0].future.done():
                w = queue.popleft()
                exc = w.future.exception()
                if exc is None:
                    rejected, finished = w.future.result()
                    self._finish(tp, w.batch, rejected, finished)
                    continue
                self._raise_permanent(tp, exc)
                self._failed(tp, w.batch, 0, exc)
                # the batches cut after it (in flight or open) are forgotten: read again after the failed one
                queue.clear()
                self._open.pop(tp, None)
                assert self._consumer is not None
                self._consumer.seek(TopicPartition(tp[0], tp[1], w.batch.end_offset + 1))
                self._rewound.add(tp)
            if not queue:
                self._in_flight.pop(tp, None)
        IN_FLIGHT.labels(self.sink.kind).set(len(self._running))

    def _raise_permanent(self, tp: TP, exc: BaseException | None) -> None:
        if exc is None or (isinstance(exc, Exception) and is_retriable(exc)):
            return
        if not isinstance(exc, Exception):
            raise exc  # as if raised in this thread (KeyboardInterrupt, a test's simulated crash)
        raise WriteError(f"{self.sink.kind}: permanent write failure for {tp}: {exc}") from exc

    def _drain(self) -> None:
        """Wait for every background write and take the results."""
        while self._in_flight:
            live = [w.future for q in self._in_flight.values() for w in q]
            if live:
                wait(live)
            self._reap()

    def _attempt(self, tp: TP, batch: Batch, attempt: int, *, inline: bool = False, final: bool = False) -> bool:
        """Write ``batch`` in this thread; on success dead-letter, commit and resume; on a retriable failure
        keep it pending with the partition paused. Returns True on success."""
        try:
            rejected, finished = self._write(batch, self.INLINE_RETRY if inline else Backoff(attempts=1))
        except Exception as exc:
            if not is_retriable(exc):
                raise WriteError(f"{self.sink.kind}: permanent write failure for {tp}: {exc}") from exc
            if final:
                self._count_retried(batch)
                return False
            self._failed(tp, batch, attempt, exc)
            return False
        self._finish(tp, batch, rejected, finished)
        return True

    def _count_retried(self, batch: Batch) -> None:
        n = len(batch.records)
        self.stats.retried += n
        RECORDS_RETRIED.labels(self.sink.kind).inc(n)

    def _failed(self, tp: TP, batch: Batch, attempt: int, exc: BaseException) -> None:
        """A retriable write failure: keep ``batch`` pending with the partition paused, retry with backoff."""
        self._count_retried(batch)
        delay = self._backoff.delay(attempt)
        log.warning(
            "write failed, partition paused",
            extra={"sink": self.sink.kind, "topic": tp[0], "partition": tp[1], "retry_in_s": round(delay, 2),
                   "attempt": attempt + 1, "error": str(exc)},
        )  # fmt: skip
        if tp not in self._pending:
            assert self._consumer is not None
            self._consumer.pause([TopicPartition(*tp)])
            self.stats.pauses += 1
        self._pending[tp] = _Pending(batch, attempt + 1, time.monotonic() + delay)
        PAUSED.labels(self.sink.kind).set(len(self._pending))

    def _retry_due(self) -> None:
        now = time.monotonic()
        for tp, pending in list(self._pending.items()):
            if pending.due <= now:
                self._attempt(tp, pending.batch, pending.attempt)

    def _finish(self, tp: TP, batch: Batch, rejected: list[Rejected], finished: float) -> None:
        dead = [Rejected(i, str(i.error), i.error.kind) for i in batch.items if i.error is not None]
        dead.extend(rejected)
        if dead:
            self._dead_letter(batch, dead)
        rejected_offsets = {r.item.offset for r in rejected}
        written = [i for i in batch.records if i.offset not in rejected_offsets]
        per_model: Tally[tuple[str, str]] = Tally()
        for i in written:
            assert i.record is not None
            per_model[(i.record.get("namespace") or "", i.record.get("isvc") or "")] += 1
        for (ns, isvc), n in per_model.items():
            metrics.count(self.sink.stage, ns, isvc, n)
        self.stats.written += len(written)
        self.stats.batches += 1
        self.stats.last_write_at = max(self.stats.last_write_at, finished)
        RECORDS_WRITTEN.labels(self.sink.kind, batch.topic).inc(len(written))
        self._commit(tp, batch.end_offset + 1)
        if self._pending.pop(tp, None) is not None:
            assert self._consumer is not None
            self._rewound.discard(tp)
            if tp in self._assigned:
                self._consumer.resume([TopicPartition(*tp)])
            PAUSED.labels(self.sink.kind).set(len(self._pending))
            log.info("write succeeded, partition resumed", extra={"sink": self.sink.kind, "partition": tp[1]})

    def _dead_letter(self, batch: Batch, dead: list[Rejected]) -> None:
        assert self._producer is not None
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        for r in dead:
            headers: list[tuple[str, str | bytes | None]] = [h for h in r.item.headers if not h[0].startswith("error.")]
            headers += [
                ("error.stage", f"sink.{self.sink.kind}".encode()),
                ("error.kind", r.kind.encode()),
                ("error.reason", r.reason.encode()[:4000]),
                ("error.topic", batch.topic.encode()),
                ("error.partition", str(batch.partition).encode()),
                ("error.offset", str(r.item.offset).encode()),
            ]
            self._producer.produce(
                self.cfg.topic_deadletter, key=r.item.key, value=r.item.value, headers=headers, on_delivery=delivered
            )
        if self._producer.flush(30) != 0 or errors:
            raise WriteError(f"dead-letter produce failed: {errors or 'timeout'}", retriable=True)
        for r in dead:
            rec = r.item.record or {}
            metrics.count("dead_lettered", rec.get("namespace") or "", rec.get("isvc") or "", 1)
            RECORDS_DEAD.labels(self.sink.kind, batch.topic, r.kind).inc()
        self.stats.dead_lettered += len(dead)
        log.warning(
            "dead-lettered", extra={"sink": self.sink.kind, "count": len(dead), "first_reason": dead[0].reason[:300]}
        )

    # -- offsets ---------------------------------------------------------------------------------------

    def _commit(self, tp: TP, offset: int) -> None:
        assert self._consumer is not None
        if tp not in self._assigned:
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(tp[0], tp[1], offset)], asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the write is idempotent and the next commit covers this one.
            log.warning("commit failed", extra={"topic": tp[0], "partition": tp[1], "error": str(exc)})
            return
        self._committed[tp] = offset
        self.stats.commits += 1

    def _commit_ticks(self) -> None:
        for tp, offset in list(self._commit_due.items()):
            if tp in self._in_flight:
                continue  # committed once the writes before it are
            del self._commit_due[tp]
            if tp not in self._open and tp not in self._pending and self._committed.get(tp, -1) < offset:
                self._commit(tp, offset)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5 or self._consumer is None:
            return
        self._last_lag = now
        for tp in list(self._assigned):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            committed = self._committed.get(tp)
            if high >= 0 and committed is not None:
                LAG.labels(self.sink.kind, tp[0], str(tp[1])).set(max(0, high - committed))

    # -- rebalancing -----------------------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._assigned.add((p.topic, p.partition))
        log.info(
            "assigned", extra={"sink": self.sink.kind, "partitions": [f"{p.topic}:{p.partition}" for p in partitions]}
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            self._assigned.discard(tp)
            self._open.pop(tp, None)  # uncommitted: the next owner reads it again and cuts it the same way
            self._in_flight.pop(tp, None)  # writes still running are forgotten, their batches read again
            self._pending.pop(tp, None)
            self._rewound.discard(tp)
            self._commit_due.pop(tp, None)
            self._committed.pop(tp, None)
        PAUSED.labels(self.sink.kind).set(len(self._pending))
        log.info(
            "revoked", extra={"sink": self.sink.kind, "partitions": [f"{p.topic}:{p.partition}" for p in partitions]}
        )


def _headers(msg: Message) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for h in msg.headers() or []:
        name, value = h[0], h[1]
        out.append((str(name), value if isinstance(value, bytes) else str(value or "").encode()))
    return out


def run_until(runner: SinkRunner, stop: threading.Event, on_error: Callable[[BaseException], None]) -> threading.Thread:
    """Run ``runner`` in a daemon thread (tests and benchmarks); errors go to ``on_error``."""

    def target() -> None:
        try:
            runner.run(stop)
        except BaseException as exc:
            on_error(exc)

    t = threading.Thread(target=target, name=f"sink-{runner.sink.kind}", daemon=True)
    t.start()
    return t
