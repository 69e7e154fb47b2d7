"""The consumer loop every sink shares: batches per topic-partition, deterministic cuts, commit after write.

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
from functools import lru_cache
from operator import itemgetter
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from core import metrics
from core.errors import is_retriable
from core.kafka import BATCH_FETCH, consumer_config, producer_config
from core.retry import Backoff, retry_sync
from schemas import AvroSerde
from schemas.wire import tick_time_us
from sinks.config import SinkConfig
from sinks.errors import RecordError, SinkError, WriteError
from sinks.flatten import record_time_us

__all__ = ["GC_GEN0", "Batch", "Item", "PartialWrite", "Rejected", "Sink", "SinkRunner", "SinkStats"]

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

#: The garbage collector's youngest-generation threshold for a sink process (:func:`core.runtime.tune_gc`). A
#: sink keeps objects for a while by design (each record's :class:`Item` until its batch is written, decoded
#: records until :meth:`Sink.convert`), so every collection walks them again: at 10,000 allocations the S3 sink
#: spent 3-9 µs per record in the collector (bench/sinks.py, timed with ``gc.callbacks``), at 100,000 under 1 µs.
GC_GEN0 = 100_000

#: Write threads of a sink with coalesced writes (one per partition with a write waiting, up to this many).
COALESCED_THREADS = 32


@dataclass(slots=True)
class Item:
    """One consumed data record. ``record`` is the decoded Avro value, ``None`` when it could not be decoded
    (then ``error`` says why); ``time_us`` its record time (:func:`~sinks.flatten.record_time_us`) once known.
    Once the sink converted it (:attr:`Sink.convert_every`), ``record`` is a stand-in holding only ``namespace``
    and ``isvc``; the values are in the batch's ``chunks``."""

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
    #: offsets still to write after a :class:`PartialWrite` (``None``: all)
    todo: set[int] | None = None
    #: items the store refused for good so far (they go to the dead-letter topic once the batch is done)
    rejected: list[Rejected] = field(default_factory=list)
    #: what :meth:`Sink.convert` made of the decodable items of ``items[:converted]``, in order
    chunks: list[Any] = field(default_factory=list)
    converted: int = 0

    @property
    def first_offset(self) -> int:
        return self.items[0].offset

    @property
    def records(self) -> list[Item]:
        """The decodable items still to write, in offset order (all of them until a :class:`PartialWrite`)."""
        todo = self.todo
        return [i for i in self.items if i.record is not None and (todo is None or i.offset in todo)]

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


class PartialWrite(WriteError):
    """Some items of a batch were written, others are worth another try (429, 5xx of single bulk items):
    the framework's next attempt writes only ``retry``. ``rejected`` are refused for good."""

    retriable = True

    def __init__(self, message: str, *, retry: list[Item], rejected: list[Rejected]) -> None:
        super().__init__(message)
        self.retry = retry
        self.rejected = rejected


class Sink(abc.ABC):
    """A destination. The framework calls :meth:`setup` once before consuming, :meth:`stored_offsets` when
    partitions are assigned, :meth:`write` with each closed batch (possibly again with the same batch after a
    retriable failure: writes must be idempotent) and :meth:`close` at the end. Sinks do not retry: the
    framework does (see :class:`SinkRunner`).

    ``write`` writes ``batch.records`` and returns the items the store refused for good (they go to the
    dead-letter topic); it raises :class:`~sinks.errors.WriteError` when the batch as a whole failed
    (retriable → pause and retry later, permanent → stop), or :class:`PartialWrite` when only some items
    need another try.
    """

    kind: str = "sink"
    #: the pipeline metrics stage counted for every record written (a registered sink's comes from its
    #: :class:`~sinks.registry.SinkSpec`)
    stage: str = "written"
    #: True when object names/contents depend on where batches are cut (then never cut on shutdown/idle).
    deterministic_cuts: bool = True
    #: Batch writes that may run at once, in background threads, while the consume thread reads, decodes and
    #: cuts the next batches (``0``: write in the consume thread). ``write`` must then be thread-safe.
    #: Offsets are still committed per partition strictly in order, each only after every write before it
    #: succeeded (see :class:`SinkRunner`).
    max_in_flight: int = 2
    #: Decode ``timestamp-micros`` fields as int epoch microseconds instead of datetimes (less CPU per record).
    raw_timestamps: bool = False
    #: For a sink without deterministic cuts: write a batch once it is this many wall-clock seconds old.
    linger_s: float | None = None
    #: At most one write in flight per partition, so a partition's batches reach the store in offset order
    #: (a store that keeps "everything before offset N is here", as Iceberg snapshots do, needs that; writes of
    #: different partitions still overlap).
    ordered_writes: bool = False
    #: ``write`` calls of different partitions may wait for each other and go out as one request (a bulk of
    #: many partitions' batches): the runner then lets every partition have one write in flight at once, and
    #: the sink itself bounds the requests it sends at once.
    coalesced_writes: bool = False
    #: Hand the decoded records of an open batch to :meth:`convert` every this many items (``0``: never), so that
    #: the dicts die young: a batch of dicts kept until the cut is many live objects that every collection of
    #: the garbage collector walks again (the consume-and-decode floor keeps none).
    convert_every: int = 0

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Create clients and check the destination is reachable; raise a typed error if not."""

    def stored_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """For a store that keeps the consumed offsets itself, committed atomically with the data (an Iceberg
        snapshot): per partition the offset after the last record it holds. Where that is ahead of Kafka's
        committed offset the runner starts the partition there, so after a crash between the store's commit and
        Kafka's the records the store holds are not read again. Default: none kept."""
        return {}

    def convert(self, batch: Batch, items: list[Item]) -> Any:
        """What ``write`` needs of the decodable ``items`` of ``batch`` (a part of an Arrow table), made while
        the batch is open; kept in ``batch.chunks``, after which each item's ``record`` is a stand-in (see
        :class:`Item`). Must be a function of the items alone. Only called when :attr:`convert_every` is set."""
        raise NotImplementedError

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
    """A batch whose write failed (retriable): retried at ``due``, the partition paused meanwhile."""

    batch: Batch
    attempt: int
    due: float


@dataclass
class _Write:
    """A batch being written in the background: the future gives the time the write finished."""

    batch: Batch
    future: Future[float]


@dataclass
class _Partition:
    """Everything the runner keeps about one assigned topic-partition.

    :param open: the batch being filled.
    :param in_flight: batches being written in the background, in cut order.
    :param pending: the batch whose write failed, retried with the partition paused.
    :param rewound: the consumer was already sent back to the first offset not handled (while paused).
    :param commit_due: an offset to commit once nothing before it is open or in flight (ticks, skipped records).
    :param committed: the last offset committed.
    :param resume_at: the offset the store says it holds everything before (:meth:`Sink.stored_offsets`).
        The partition is assigned starting there when that is ahead of Kafka's committed offset; should a
        record before it still arrive (the committed offsets could not be read), it is dropped, not written.
    """

    open: Batch | None = None
    in_flight: deque[_Write] = field(default_factory=deque)
    pending: _Pending | None = None
    rewound: bool = False
    commit_due: int | None = None
    committed: int | None = None
    resume_at: int | None = None


class SinkRunner:
    """Runs one :class:`Sink` over the configured topics until ``stop`` is set.

    :param cfg: the sink settings.
    :param sink: the destination.
    :param consumer_overrides: extra librdkafka consumer settings (tests use short session timeouts).
    :param max_in_flight: overrides ``sink.max_in_flight``.

    **Writes in flight.** A closed batch is written by a background thread, at most ``max_in_flight`` at once;
    when all are busy the consume thread waits for the oldest (backpressure); a sink with
    :attr:`Sink.coalesced_writes` gets one write per partition in flight instead. The consume thread takes the
    results per partition in the order the batches were cut: a successful write is committed only once every
    batch cut before it on that partition was written and committed. When a write fails (retriable), that
    batch is kept for retries with the partition paused, the batches of the partition cut after it are
    forgotten (their writes may still finish: writes are idempotent) and the partition is rewound to the
    offset after the failed batch, so they are read, cut and written again once it succeeded.

    **One retry layer.** Sinks do not retry: a write is tried a few times in line (:data:`INLINE_RETRY`),
    then the partition pauses and the write is retried with capped backoff until it succeeds. A sink that
    writes items separately (a bulk request) raises :class:`PartialWrite` with the items worth another try:
    the next attempt writes only those.
    """

    INLINE_RETRY = Backoff(base_s=0.2, cap_s=1.0, attempts=3)
    #: how long the assignment waits for the group's committed offsets (to compare them with the store's)
    COMMITTED_TIMEOUT_S = 30.0

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
        # this sink's series exist from the start, at 0: a dashboard shows 0 rather than no data, and the first
        # retry is an increase Prometheus can see (a counter first scraped at 1 has no earlier sample to rise from)
        RECORDS_RETRIED.labels(sink.kind)
        PAUSED.labels(sink.kind).set(0)
        self.max_in_flight = sink.max_in_flight if max_in_flight is None else max_in_flight
        if sink.stage not in metrics.STAGES:  # a sink that is not registered (tests, benchmarks) still counts
            metrics.register_stage(sink.stage, f"records the {sink.kind} sink wrote")
        self._running: set[Future[Any]] = set()  # every background write not finished, forgotten ones too
        self._pool: ThreadPoolExecutor | None = None
        self.stats = SinkStats()
        self.group = cfg.group_for(sink.kind)
        self._consumer_overrides = dict(consumer_overrides or {})
        self._span_us = int(cfg.flush_span_s * 1_000_000)
        self._convert_every = sink.convert_every
        self._flush_records, self._flush_bytes = cfg.flush_records, cfg.flush_bytes
        self._serdes: dict[str, AvroSerde] = {}
        self._parts: dict[TP, _Partition] = {}
        self._backoff = Backoff(base_s=0.5, cap_s=cfg.sink_retry_max_s, attempts=1)
        self._consumer: Consumer | None = None
        self._cooperative = True  # the rebalance protocol of the consumer's settings (see run())
        self._producer: Producer | None = None
        self._last_lag = 0.0
        self.ready = threading.Event()
        self.last_loop = time.monotonic()  # liveness: the consume loop turns at least every poll timeout

    def alive(self, stall_s: float = 120.0) -> bool:
        """True while the consume loop keeps turning (a write being retried still turns it)."""
        return time.monotonic() - self.last_loop < stall_s

    def partition(self, tp: TP) -> _Partition:
        """The state of an assigned partition (created on first use)."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        return part

    def _paused(self) -> int:
        return sum(1 for p in self._parts.values() if p.pending is not None)

    # -- lifecycle -------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume, batch and write until ``stop`` is set; then finish as described in the module doc."""
        self.sink.setup()
        self._serdes = {
            t: AvroSerde.for_topic(
                self.cfg.registry_url,
                t,
                self.cfg.schema_for(t),
                timestamps_as_int=self.sink.raw_timestamps,
                registry_auth=self.cfg.registry_auth,
            )
            for t in self.cfg.topics()
        }
        conf = consumer_config(self.cfg, self.group, defaults=BATCH_FETCH, **{"enable.partition.eof": False})
        if self.cfg.sink_instance_id:
            conf["group.instance.id"] = self.cfg.sink_instance_id
        conf.update(self._consumer_overrides)
        self._cooperative = _cooperative(conf)
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
                self._handle_all(good)
                linger = self.sink.linger_s
                if not self.sink.deterministic_cuts and linger is not None:
                    # A sink whose writes do not depend on cuts may cut anywhere: it writes what it has when
                    # caught up, and under steady traffic once a batch is linger_s old (searchable sooner).
                    stale = time.monotonic() - linger
                    for tp, part in list(self._parts.items()):
                        if part.open is not None and (not msgs or part.open.opened_at <= stale):
                            self._close(tp)
                self._commit_due_offsets()
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
            for tp, part in list(self._parts.items()):
                if part.open is not None:
                    self._close(tp)
        self._drain()
        for tp, part in list(self._parts.items()):  # a last try for what was already cut
            if part.pending is not None:
                self._attempt(tp, part.pending.batch, part.pending.attempt, final=True)
        self._commit_due_offsets()

    # -- consuming -------------------------------------------------------------------------------------

    def _predecode(self, msgs: list[Message]) -> list[tuple[Message, list[tuple[str, bytes]], Any]]:
        """Headers of each message and, for data records of partitions not paused, the decoded value (or the
        exception), decoded in bulk per topic: one pass of the serde over a whole ``consume()`` result."""
        out: list[tuple[Message, list[tuple[str, bytes]], Any]] = []
        todo: dict[str, tuple[list[int], list[bytes]]] = {}
        parts, serdes = self._parts, self._serdes
        for msg in msgs:
            raw = msg.headers()
            headers = _headers(msg) if raw else []
            value = msg.value()
            if value and not (raw and tick_time_us(headers) is not None):
                topic = str(msg.topic())
                part = parts.get((topic, int(msg.partition() or 0)))
                if topic in serdes and (
                    part is None
                    or (part.pending is None and (part.resume_at is None or not _held(part, int(msg.offset() or 0))))
                ):
                    idx, values = todo.setdefault(topic, ([], []))
                    idx.append(len(out))
                    values.append(value)
            out.append((msg, headers, None))
        for topic, (idx, values) in todo.items():
            results = serdes[topic].decode_many(values)
            for i, res in zip(idx, results, strict=True):
                out[i] = (out[i][0], out[i][1], res)
            RECORDS_IN.labels(self.sink.kind, topic).inc(len(idx))
        return out

    def _handle_all(self, msgs: list[Message]) -> None:
        """:meth:`_handle` each of ``msgs`` (decoded in bulk by :meth:`_predecode`). The common case is done in line:
        a decoded data record that joins its partition's open batch without cutting it by record time. Anything
        else (ticks, dead items, paused or resuming partitions, no open batch, a cut by record time) goes through
        :meth:`_handle`, so both make the same batches (``tests/unit/test_sinks_fast_path.py``). In line, the
        general path's per-record partition lookup, tick check, paused/resume checks and record-time parsing are
        skipped: with the column-wise conversion they were a third of the consume thread's work beyond decoding
        (bench/sinks.py under py-spy)."""
        parts, stats, span = self._parts, self.stats, self._span_us
        flush_records, flush_bytes, every = self._flush_records, self._flush_bytes, self._convert_every
        for msg, headers, decoded in self._predecode(msgs):
            t = decoded.get("event_time") if type(decoded) is dict else None  # (a tick is never decoded)
            part = parts.get((msg.topic(), msg.partition())) if type(t) is int else None  # type: ignore[arg-type]
            batch = None if part is None or part.pending is not None or part.resume_at is not None else part.open
            if batch is None or not stats.first_record_at:
                self._handle(msg, headers, decoded)
                continue
            assert type(t) is int
            if batch.span_us(t) >= span:
                self._handle(msg, headers, decoded)  # a cut by record time
                continue
            stats.records_in += 1
            batch.add(Item(int(msg.offset() or 0), msg.key(), msg.value() or b"", headers, decoded, None, t), t)
            n = len(batch.items)
            if n >= flush_records or batch.nbytes >= flush_bytes:
                self._close((batch.topic, batch.partition))
            elif every and n - batch.converted >= every:
                convert(self.sink, batch)

    def _handle(self, msg: Message, headers: list[tuple[str, bytes]] | None = None, decoded: Any = None) -> None:
        topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
        tp = (topic, partition)
        part = self.partition(tp)
        if part.pending is not None:  # paused: hand the rest back to Kafka, to be read again on resume
            if not part.rewound:
                assert self._consumer is not None
                self._consumer.seek(TopicPartition(topic, partition, offset))
                part.rewound = True
            return
        if part.resume_at is not None:
            if offset < part.resume_at:
                # Already in the store, and the assignment could not start after it. No seek: the records
                # librdkafka has already handed over would still come here, and then again from the seek.
                part.commit_due = part.resume_at
                return
            part.resume_at = None
        if headers is None:
            headers = _headers(msg)
        batch = part.open
        tick = tick_time_us(headers) if headers else None
        if tick is not None:
            if batch is None:
                part.commit_due = offset + 1
                return
            batch.end_offset = offset
            batch.advance_time(tick)
            if batch.span_us() >= self._span_us:
                self._close(tp)
            return
        self.stats.records_in += 1
        if not self.stats.first_record_at:
            self.stats.first_record_at = time.monotonic()
        item: Item | None = None
        t_us: int | None = None
        if type(decoded) is dict:  # the common case, without _decode's checks
            try:
                t_us = record_time_us(decoded)
                item = Item(offset, msg.key(), msg.value() or b"", headers, decoded, None, t_us)
            except (KeyError, TypeError, ValueError):
                pass  # _decode makes it a dead item with the reason
        if item is None:
            if decoded is None:
                RECORDS_IN.labels(self.sink.kind, topic).inc()  # else counted in bulk by _predecode
            item = self._decode(topic, offset, msg.key(), msg.value() or b"", headers, decoded)
            t_us = item.time_us
        if batch is not None and t_us is not None and batch.span_us(t_us) >= self._span_us:
            self._close(tp)
            batch = None
        if batch is None:
            batch = part.open = Batch(topic, partition, self.cfg.schema_for(topic))
            part.commit_due = None
        batch.add(item, t_us)
        if len(batch.items) >= self._flush_records or batch.nbytes >= self._flush_bytes:
            self._close(tp)
        elif self._convert_every and len(batch.items) - batch.converted >= self._convert_every:
            convert(self.sink, batch)

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
        part = self.partition(tp)
        batch = part.open
        assert batch is not None
        part.open = None
        if self.max_in_flight <= 0 or (not batch.records and not part.in_flight):
            self._attempt(tp, batch, 0, inline=True)  # (a batch with nothing to write commits in turn too)
            return
        coalesced = self.sink.coalesced_writes
        while (part.in_flight if coalesced else len(self._running) >= self.max_in_flight) or (
            self.sink.ordered_writes and part.in_flight
        ):
            # backpressure: wait for a slot (or, for ordered writes, for this partition's write before it)
            wait(set(self._running), return_when=FIRST_COMPLETED)
            self._reap()
            if part.pending is not None:  # an earlier batch of this partition failed meanwhile: this one is re-read
                return
        if self._pool is None:
            threads = max(self.max_in_flight, COALESCED_THREADS) if coalesced else self.max_in_flight
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"sink-{self.sink.kind}-write")
        future = self._pool.submit(self._write, batch, self.INLINE_RETRY)
        self._running.add(future)
        future.add_done_callback(self._running.discard)
        part.in_flight.append(_Write(batch, future))
        IN_FLIGHT.labels(self.sink.kind).set(len(self._running))

    def _write(self, batch: Batch, policy: Backoff) -> float:
        """Write ``batch`` (with short retries); returns when the write ended. What the store refused for good
        is kept in ``batch.rejected``; after a :class:`PartialWrite`, only the items it names are written again."""
        started = time.monotonic()
        if not batch.records:  # only dead items: nothing to write, they go to the dead-letter topic
            return started

        def once() -> None:
            try:
                batch.rejected.extend(self.sink.write(batch))
            except PartialWrite as exc:
                batch.rejected.extend(exc.rejected)
                batch.todo = {i.offset for i in exc.retry}
                raise

        retry_sync(once, policy, what=f"{self.sink.kind} write")
        finished = time.monotonic()
        WRITE_SECONDS.labels(self.sink.kind).observe(finished - started)
        return finished

    def _reap(self) -> None:
        """Take the results of finished background writes, per partition in cut order: commit each success
        whose predecessors all succeeded; on a failure keep that batch pending (paused) and forget the rest."""
        for tp, part in self._parts.items():  # a permanent failure stops the sink at once, wherever it is
            for w in part.in_flight:
                if w.future.done():
                    self._raise_permanent(tp, w.future.exception())
        for tp, part in list(self._parts.items()):
            queue = part.in_flight
            while queue and queue[0].future.done():
                w = queue.popleft()
                exc = w.future.exception()
                if exc is None:
                    self._finish(tp, w.batch, w.future.result())
                    continue
                self._raise_permanent(tp, exc)
                self._failed(tp, w.batch, 0, exc)
                # the batches cut after it (in flight or open) are forgotten: read again after the failed one
                queue.clear()
                part.open = None
                assert self._consumer is not None
                self._consumer.seek(TopicPartition(tp[0], tp[1], w.batch.end_offset + 1))
                part.rewound = True
        IN_FLIGHT.labels(self.sink.kind).set(len(self._running))

    def _raise_permanent(self, tp: TP, exc: BaseException | None) -> None:
        if exc is None or (isinstance(exc, Exception) and is_retriable(exc)):
            return
        if not isinstance(exc, Exception):
            raise exc  # as if raised in this thread (KeyboardInterrupt, a test's simulated crash)
        raise WriteError(f"{self.sink.kind}: permanent write failure for {tp}: {exc}") from exc

    def _drain(self) -> None:
        """Wait for every background write and take the results."""
        while any(p.in_flight for p in self._parts.values()):
            live = [w.future for p in self._parts.values() for w in p.in_flight]
            wait(live)
            self._reap()

    def _attempt(self, tp: TP, batch: Batch, attempt: int, *, inline: bool = False, final: bool = False) -> bool:
        """Write ``batch`` in this thread; on success dead-letter, commit and resume; on a retriable failure
        keep it pending with the partition paused. Returns True on success."""
        try:
            finished = self._write(batch, self.INLINE_RETRY if inline else Backoff(attempts=1))
        except Exception as exc:
            if not is_retriable(exc):
                raise WriteError(f"{self.sink.kind}: permanent write failure for {tp}: {exc}") from exc
            if final:
                self._count_retried(batch)
                return False
            self._failed(tp, batch, attempt, exc)
            return False
        self._finish(tp, batch, finished)
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
        part = self.partition(tp)
        if part.pending is None:
            assert self._consumer is not None
            self._consumer.pause([TopicPartition(*tp)])
            self.stats.pauses += 1
        part.pending = _Pending(batch, attempt + 1, time.monotonic() + delay)
        PAUSED.labels(self.sink.kind).set(self._paused())

    def _retry_due(self) -> None:
        now = time.monotonic()
        for tp, part in list(self._parts.items()):
            if part.pending is not None and part.pending.due <= now:
                self._attempt(tp, part.pending.batch, part.pending.attempt)

    def _finish(self, tp: TP, batch: Batch, finished: float) -> None:
        dead = [Rejected(i, str(i.error), i.error.kind) for i in batch.items if i.error is not None]
        dead.extend(batch.rejected)
        if dead:
            self._dead_letter(batch, dead)
        rejected_offsets = {r.item.offset for r in batch.rejected}
        written = [
            rec
            for i in batch.items
            if (rec := i.record) is not None and (not rejected_offsets or i.offset not in rejected_offsets)
        ]
        for (ns, isvc), n in _per_model(written).items():
            metrics.count(self.sink.stage, ns or "", isvc or "", n)
        self.stats.written += len(written)
        self.stats.batches += 1
        self.stats.last_write_at = max(self.stats.last_write_at, finished)
        RECORDS_WRITTEN.labels(self.sink.kind, batch.topic).inc(len(written))
        self._commit(tp, batch.end_offset + 1)
        part = self._parts.get(tp)
        if part is not None and part.pending is not None:
            part.pending = None
            part.rewound = False
            assert self._consumer is not None
            self._consumer.resume([TopicPartition(*tp)])
            PAUSED.labels(self.sink.kind).set(self._paused())
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
        part = self._parts.get(tp)
        if part is None:  # revoked meanwhile: the next owner commits
            return
        try:
            self._consumer.commit(offsets=[TopicPartition(tp[0], tp[1], offset)], asynchronous=False)
        except KafkaException as exc:
            # Not fatal: the write is idempotent and the next commit covers this one.
            log.warning("commit failed", extra={"topic": tp[0], "partition": tp[1], "error": str(exc)})
            return
        part.committed = offset
        self.stats.commits += 1

    def _commit_due_offsets(self) -> None:
        for tp, part in list(self._parts.items()):
            offset = part.commit_due
            if offset is None or part.in_flight:
                continue  # committed once the writes before it are
            part.commit_due = None
            if part.open is None and part.pending is None and (part.committed is None or part.committed < offset):
                self._commit(tp, offset)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5 or self._consumer is None:
            return
        self._last_lag = now
        for tp, part in list(self._parts.items()):
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            if high >= 0 and part.committed is not None:
                LAG.labels(self.sink.kind, tp[0], str(tp[1])).set(max(0, high - part.committed))

    # -- rebalancing -----------------------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions, each starting after what the store already holds when that is ahead of Kafka's
        committed offset (a crash between the two commits): records the store has are never fetched, so none
        reaches a batch. Elsewhere the partition starts at the committed offset, as librdkafka would."""
        tps = [(p.topic, p.partition) for p in partitions]
        stored = self.sink.stored_offsets(tps) if tps else {}
        start = self._ahead_of_kafka(stored)
        for tp in tps:
            self._parts[tp] = _Partition(resume_at=stored.get(tp), commit_due=start.get(tp))
        if start:
            assert self._consumer is not None
            at = [TopicPartition(p.topic, p.partition, start.get((p.topic, p.partition), p.offset)) for p in partitions]
            if self._cooperative:
                self._consumer.incremental_assign(at)
            else:
                self._consumer.assign(at)
        log.info(
            "assigned",
            extra={"sink": self.sink.kind, "partitions": [f"{t}:{p}" for t, p in tps],
                   "resume_from_store": {f"{t}:{p}": o for (t, p), o in stored.items()},
                   "start_from_store": {f"{t}:{p}": o for (t, p), o in start.items()}},
        )  # fmt: skip

    def _ahead_of_kafka(self, stored: dict[TP, int]) -> dict[TP, int]:
        """The store's offsets that are ahead of the group's committed ones. Kafka may be ahead too (ticks and
        batches with nothing to write commit without a store write): there its offset stands, or dead letters
        would be sent again. When the committed offsets cannot be read, none: :meth:`_handle` drops the
        records the store holds as they come."""
        if not stored:
            return {}
        assert self._consumer is not None
        try:
            committed = self._consumer.committed(
                [TopicPartition(t, p) for t, p in stored], timeout=self.COMMITTED_TIMEOUT_S
            )
        except KafkaException as exc:
            log.warning(
                "committed offsets not read, skipping what the store holds as it comes",
                extra={"sink": self.sink.kind, "error": str(exc)},
            )
            return {}
        out: dict[TP, int] = {}
        for c in committed:
            tp = (c.topic, c.partition)
            if c.error is None and tp in stored and stored[tp] > c.offset:  # (no committed offset: negative)
                out[tp] = stored[tp]
        return out

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            # open, in-flight and pending batches are dropped uncommitted: the next owner reads them again and
            # cuts them the same way (writes still running are forgotten)
            self._parts.pop((p.topic, p.partition), None)
            # the next owner reports this partition's lag: a value left here would stay frozen, count twice in
            # a per-sink sum and look like a lag that never goes down (deploy/k8s/monitoring alerts on that)
            LAG.remove(self.sink.kind, p.topic, str(p.partition))
        PAUSED.labels(self.sink.kind).set(self._paused())
        log.info(
            "revoked", extra={"sink": self.sink.kind, "partitions": [f"{p.topic}:{p.partition}" for p in partitions]}
        )


def convert(sink: Sink, batch: Batch) -> None:
    """:meth:`Sink.convert` the items of ``batch`` not converted yet; their records become stand-ins."""
    live = [i for i in batch.items[batch.converted :] if i.record is not None]
    if live:
        batch.chunks.append(sink.convert(batch, live))
        for i in live:
            rec = i.record
            assert rec is not None
            i.record = _stand_in(*_model_of(rec))
    batch.converted = len(batch.items)


_MODEL = itemgetter("namespace", "isvc")


def _model_of(rec: dict[str, Any]) -> tuple[Any, Any]:
    try:
        return _MODEL(rec)
    except KeyError:
        return rec.get("namespace"), rec.get("isvc")


@lru_cache(maxsize=4096)
def _stand_in(namespace: Any, isvc: Any) -> dict[str, Any]:
    # one shared dict per model: the stand-ins of a batch add no objects for the collector to walk
    return {"namespace": namespace, "isvc": isvc}


def _per_model(recs: list[dict[str, Any]]) -> Tally[tuple[Any, Any]]:
    """Records per ``(namespace, isvc)``, counted in C (``itemgetter``); a record without either key (a hand-made
    one) counts as ``None`` for it."""
    try:
        return Tally(map(_MODEL, recs))
    except KeyError:
        return Tally((r.get("namespace"), r.get("isvc")) for r in recs)


def _held(part: _Partition, offset: int) -> bool:
    """The store already holds this record of the partition (it is dropped, not decoded)."""
    return part.resume_at is not None and offset < part.resume_at


def _cooperative(conf: dict[str, Any]) -> bool:
    """Whether these consumer settings rebalance incrementally (then the assign callback must call
    ``incremental_assign``, else ``assign``)."""
    if str(conf.get("group.protocol", "classic")).lower() == "consumer":
        return True
    strategies = str(conf.get("partition.assignment.strategy", "range,roundrobin")).split(",")
    return all(s.strip() == "cooperative-sticky" for s in strategies)


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
