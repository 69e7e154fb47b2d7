"""The Faust application: one agent joins ``inferlog.events`` into ``inferlog.records`` and ``inferlog.failures``.

Wiring (see FAUST-NOTES.md for why):

- one agent (``concurrency=1``, per-event ``try/except``, no ``take()``) reads ONE Faust topic covering the
  events topic and the expiry-marker topic ``<app_id>-expiry``; both have ``partitions`` partitions;
- a non-windowed table ``pending`` on the RocksDB store (rocksdict), changelog ``<app_id>-pending-changelog``
  with the same partition count, holds the join state of :mod:`streams.join`; every key lives in (and its
  changelog record goes to) the partition of the events that wrote it, as Faust's own writes would;
- a timer (wall clock, reads only) sends an expiry marker to partition ``p`` of the marker topic when ``p`` got
  no event for ``idle_timeout_s`` and the group's committed offset has reached its end (no backlog: see
  :mod:`streams.idle`); the agent applies it in stream context (:meth:`Joiner.on_advance`);
- outputs are pre-encoded bytes sent to an explicit partition = the source partition (the producer's time as
  Kafka timestamp, see ``send``) through a confluent-kafka producer (:mod:`streams.outputs`: librdkafka does
  the batching and socket work in its own threads), without awaiting each delivery;
- join state goes through :class:`streams.state.WriteBackState`: at a *barrier* (every
  ``state_flush_interval_s`` or ``state_flush_events``) the outputs sent so far are flushed, then the state
  changes are written to RocksDB and the changelog, then the events are acked (the agent iterates
  ``stream.noack()``); Faust flushes the producer before it commits offsets. So outputs are durable before
  the state that says they were emitted, and that state before the source offset: a ``kill -9`` repeats
  outputs (byte-identical, same key) but loses none (``processing_guarantee=at_least_once``);
- model metadata comes from the compacted ``inferlog.metadata`` topic (key ``namespace/isvc``, value a JSON
  object of strings, ``null`` value deletes), loaded before the worker starts and tailed afterwards; besides
  enriching records, its ``pair_timeout`` key is one step of the per-model pair timeout (:mod:`streams.timeouts`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import faust
import orjson
from faust.types import TP
from prometheus_client import Counter, Gauge

from core import metrics
from core.events import REQUEST_TYPE, RESPONSE_TYPE, EventError, from_kafka
from core.kafka import aiokafka_security
from core.retry import Backoff, retry_sync
from schemas import AvroSerde
from schemas.wire import TICK_HEADER, ordinal_headers
from streams import enrich
from streams.config import StreamsConfig
from streams.idle import IdleTracker, caught_up
from streams.join import Duplicate, Joiner, Orphan, Outcome, Paired, Tick
from streams.outputs import Outputs
from streams.state import WriteBackState
from streams.timeouts import PairTimeouts
from streams.transport import WorkerApp

log = logging.getLogger("inferlog.streams")

DUPLICATES = Counter("inferlog_streams_duplicates", "Duplicate events dropped by the join")
FAILURES = Counter("inferlog_streams_failures", "FailureSignals written, by kind", ["kind"])
TICKS = Counter("inferlog_streams_ticks", "Tick records written (per output topic pair)")
MARKERS = Counter("inferlog_streams_idle_markers", "Expiry markers sent for idle partitions")
STALE_MARKERS = Counter(
    "inferlog_streams_stale_idle_markers", "Expiry markers ignored: events that arrived after them were processed"
)
WATERMARK = Gauge("inferlog_streams_watermark_seconds", "Event-time watermark per source partition", ["partition"])


class MetadataTable:
    """Model metadata by ``namespace/isvc`` from the compacted metadata topic: no API call per event."""

    def __init__(self, cfg: StreamsConfig) -> None:
        self.cfg = cfg
        self.data: dict[str, dict[str, str]] = {}
        self.positions: dict[int, int] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", errors="replace")
        if value is None:
            self.data.pop(name, None)
            return
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.warning("ignoring metadata that is not JSON", extra={"key": name})
            return
        if isinstance(obj, dict):
            self.data[name] = {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in obj.items()}

    def load(self, timeout_s: float = 30.0) -> None:
        """Read the topic up to its current end (before the worker starts)."""
        from confluent_kafka import Consumer, TopicPartition

        from core.kafka import base_config

        consumer = Consumer(
            {**base_config(self.cfg), "group.id": f"{self.cfg.app_id}-metadata", "enable.auto.commit": False}
        )
        try:
            meta = consumer.list_topics(self.cfg.topic_metadata, timeout=timeout_s).topics[self.cfg.topic_metadata]
            if meta.error is not None:
                return
            ends = {}
            for p in meta.partitions:
                tp = TopicPartition(self.cfg.topic_metadata, p)
                low, high = retry_sync(
                    functools.partial(consumer.get_watermark_offsets, tp, timeout=timeout_s),
                    Backoff(base_s=0.2, cap_s=2.0, attempts=0, deadline_s=timeout_s),
                    what="metadata topic offsets",
                )
                self.positions[p] = low
                ends[p] = high
            todo = {p for p in ends if ends[p] > self.positions[p]}
            consumer.assign([TopicPartition(self.cfg.topic_metadata, p, self.positions[p]) for p in todo])
            deadline = time.monotonic() + timeout_s
            while todo and time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                self.apply(msg.key(), msg.value())
                part, off = int(msg.partition() or 0), int(msg.offset() or 0)
                self.positions[part] = off + 1
                if off + 1 >= ends[part]:
                    todo.discard(part)
        finally:
            consumer.close()
        log.info("model metadata loaded", extra={"models": len(self.data)})

    async def tail(self) -> None:
        """Follow the topic for changes while the worker runs."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.cfg.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **aiokafka_security(self.cfg),
        )
        await consumer.start()
        try:
            parts = [TopicPartition(self.cfg.topic_metadata, p) for p in self.positions]
            if not parts:
                return
            consumer.assign(parts)
            for tp in parts:
                consumer.seek(tp, self.positions[tp.partition])
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for rec in records:
                        self.apply(rec.key, rec.value)
        finally:
            await consumer.stop()

    def get(self, namespace: str, isvc: str) -> Mapping[str, str]:
        return self.data.get(f"{namespace}/{isvc}", {})


def _headers(raw: Any) -> list[tuple[str, bytes | None]]:
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        return list(raw.items())
    return list(raw)


class Emitter:
    """Turns join outcomes into output records (bytes); used by the agent and by tests without Faust."""

    def __init__(
        self, cfg: StreamsConfig, record_serde: AvroSerde, failure_serde: AvroSerde, meta: MetadataTable
    ) -> None:
        self.cfg = cfg
        self.record_serde = record_serde
        self.failure_serde = failure_serde
        self.meta = meta

    def messages(
        self, outcomes: Sequence[Outcome], partition: int
    ) -> list[tuple[str, bytes | None, bytes, int, int, list[tuple[str, bytes]] | None]]:
        """(topic, key, value, partition, timestamp_us, headers) for each output, in order."""
        out: list[tuple[str, bytes | None, bytes, int, int, list[tuple[str, bytes]] | None]] = []
        for o in outcomes:
            if isinstance(o, Duplicate):
                DUPLICATES.inc()
                continue
            if isinstance(o, Tick):
                TICKS.inc()
                WATERMARK.labels(partition=str(o.partition)).set(o.watermark_us / 1e6)
                hdr = [(TICK_HEADER, str(o.watermark_us).encode())]
                out.append((self.cfg.topic_records, None, b"", o.partition, o.watermark_us, hdr))
                out.append((self.cfg.topic_failures, None, b"", o.partition, o.watermark_us, hdr))
                continue
            if isinstance(o, Paired):
                ev = o.request.event
                built = enrich.build(
                    o.request,
                    o.response,
                    detected_us=o.detected_us,
                    model_metadata=self.meta.get(ev.namespace, ev.isvc),
                    ordinal=o.ordinal,
                    retracts=o.retracts,
                )
                metrics.count("paired" if o.retracts is None else "corrected", ev.namespace, ev.isvc)
                part = partition
            else:
                assert isinstance(o, Orphan)
                ev = o.side.event
                req, resp = (o.side, None) if o.side.is_request else (None, o.side)
                built = enrich.build(
                    req,
                    resp,
                    detected_us=o.detected_us,
                    model_metadata=self.meta.get(ev.namespace, ev.isvc),
                    ordinal=o.ordinal,
                )
                metrics.count("orphaned", ev.namespace, ev.isvc)
                part = o.side.partition
            key = o.key.encode()
            ts = built.record["event_time"]
            hdrs = ordinal_headers(o.ordinal)  # a reused id's later records: their identity in the sinks
            out.append((self.cfg.topic_records, key, self.record_serde.encode(built.record), part, ts, hdrs))
            for f in built.failures:
                FAILURES.labels(kind=f["kind"]).inc()
                out.append((self.cfg.topic_failures, key, self.failure_serde.encode(f), part, ts, hdrs))
        return out


def deadletter_headers(
    headers: list[tuple[str, bytes | None]], reason: str, topic: str, partition: int, offset: int, attribute: str | None
) -> list[tuple[str, bytes]]:
    out = [(k, v or b"") for k, v in headers]
    out += [
        ("error.reason", reason.encode()),
        ("error.stage", b"streams"),
        ("error.topic", topic.encode()),
        ("error.partition", str(partition).encode()),
        ("error.offset", str(offset).encode()),
    ]
    if attribute:
        out.append(("error.attribute", attribute.encode()))
    return out


def faust_credentials(cfg: StreamsConfig) -> Any:
    """Faust's ``broker_credentials`` for the security settings in ``kafka_options`` (``None``: plaintext)."""
    sec = aiokafka_security(cfg)
    protocol = sec["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(sec["ssl_context"])
    return faust.SASLCredentials(
        username=sec["sasl_plain_username"],
        password=sec["sasl_plain_password"],
        mechanism=sec["sasl_mechanism"],
        ssl_context=sec.get("ssl_context"),
    )


def build_app(cfg: StreamsConfig, record_serde: AvroSerde, failure_serde: AvroSerde, meta: MetadataTable) -> faust.App:
    """The Faust app with its agent, table, timer and tasks."""
    brokers = [f"kafka://{h.strip()}" for h in cfg.kafka_bootstrap.split(",") if h.strip()]
    app = WorkerApp(
        cfg.app_id,
        fetch_wait_s=cfg.fetch_wait_s,
        broker=brokers,
        broker_credentials=faust_credentials(cfg),
        store="rocksdb://",
        datadir=cfg.store_dir,
        topic_partitions=cfg.partitions,
        topic_replication_factor=cfg.replication_factor,
        processing_guarantee="at_least_once",
        table_standby_replicas=cfg.standby_replicas,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=cfg.commit_interval_s,
        stream_buffer_maxsize=cfg.buffer_maxsize,
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
    )
    source = app.topic(
        cfg.topic_events,
        cfg.topic_expiry,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    table = app.Table("pending", default=None, partitions=cfg.partitions, key_type=bytes, value_type=bytes)
    state = WriteBackState(app, table)
    joiner = Joiner(
        state,
        pair_timeout_us=int(cfg.pair_timeout_s * 1e6),
        done_retention_us=int(cfg.done_retention_s * 1e6),
        tick_interval_us=int(cfg.tick_interval_s * 1e6),
        late_window_us=int(cfg.late_window_s * 1e6),
        timeout_for=PairTimeouts(
            default_us=int(cfg.pair_timeout_s * 1e6),
            llm_default_us=int(cfg.llm_pair_timeout_s * 1e6),
            metadata=meta.get,
        ),
    )
    emitter = Emitter(cfg, record_serde, failure_serde, meta)
    idle = IdleTracker(cfg.idle_timeout_s)
    app.joiner = joiner  # type: ignore[attr-defined]  # for tests and introspection
    app.join_state = state  # type: ignore[attr-defined]

    # The barrier (see streams.state): the outputs sent since the last barrier (``outputs.pending``), the
    # events processed since then (acked only after the barrier), and a lock so the agent and the timer
    # never run a barrier in the middle of an event.
    outputs = Outputs(cfg)
    held: list[Any] = []
    held_since = [0.0]
    lock = asyncio.Lock()
    streams_: list[Any] = []

    # No event-time Kafka timestamp on outputs: the broker applies retention.ms to record timestamps, so
    # replayed (old) events would produce outputs that are deleted at once. The time is in the record/header.
    # Not awaited per record: the barrier awaits the delivery of everything before it writes state.
    send = outputs.send

    async def barrier() -> None:
        """Outputs delivered -> state written (RocksDB + changelog) -> events acked. Caller holds ``lock``."""
        if not held and not outputs.pending and not state.dirty:
            return
        generation = state.generation
        events = held[:]
        held.clear()
        try:
            await outputs.drain()
        except Exception as exc:  # an output was not delivered: write no state, commit nothing, restart
            log.error("output delivery failed; stopping the worker", extra={"error": repr(exc)})
            await app.crash(exc)
            raise
        if generation != state.generation:
            return  # partitions revoked meanwhile: their events are replayed by the next owner
        await state.write_back()
        stream = streams_[0] if streams_ else None
        for ev in events:
            if stream is not None:
                await stream.ack(ev)

    @app.agent(source, concurrency=1)
    async def join(stream: Any) -> None:
        manual = stream.noack()
        streams_[:] = [manual]
        async for event in manual.events():
            async with lock:
                await process(event)
                if not held:
                    held_since[0] = time.monotonic()
                held.append(event)
                if (
                    len(held) >= cfg.state_flush_events
                    or time.monotonic() - held_since[0] >= cfg.state_flush_interval_s
                ):
                    await barrier()

    @app.timer(interval=cfg.state_flush_interval_s)
    async def flush_state() -> None:
        """Barrier for a quiet stream (and during a rebalance, when Faust waits for the held events' acks)."""
        async with lock:
            await barrier()

    async def process(event: Any) -> None:
        msg = event.message
        headers = _headers(msg.headers)
        try:
            state.partition = msg.partition
            if msg.topic == cfg.topic_expiry:
                marker = orjson.loads(msg.value)
                if idle.on_marker(msg.partition, marker, time.monotonic()):
                    outcomes = joiner.on_advance(msg.partition, marker.get("base"), int(marker["elapsed"]))
                else:
                    outcomes = []
                    STALE_MARKERS.inc()
            else:
                idle.on_event(msg.partition, msg.offset, time.monotonic())
                ev = from_kafka(headers, msg.value)
                if ev.type not in (REQUEST_TYPE, RESPONSE_TYPE):
                    raise EventError("type", f"unexpected event type {ev.type!r}")
                ts_us = int(msg.timestamp * 1e6) if msg.timestamp else 0
                side = enrich.Side(ev, msg.partition, msg.offset, enrich.event_time_us(ev, ts_us))
                outcomes = joiner.on_event(side)
            for topic, key, value, part, _ts_us, hdrs in emitter.messages(outcomes, msg.partition):
                send(topic, key, value, part, hdrs)
        except Exception as exc:  # per event: the agent never dies on one bad event
            attribute = exc.attribute if isinstance(exc, EventError) else None
            reason = str(exc) if isinstance(exc, EventError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, EventError):
                log.exception("event failed", extra={"partition": msg.partition, "offset": msg.offset})
            try:
                hdrs = deadletter_headers(headers, reason, msg.topic, msg.partition, msg.offset, attribute)
                send(cfg.topic_deadletter, msg.key, msg.value, msg.partition, hdrs)
                ns = {k: (v or b"").decode(errors="replace") for k, v in headers}
                metrics.count("dead_lettered", ns.get("ce_namespace", ""), ns.get("ce_inferenceservicename", ""))
            except Exception:
                log.exception("dead-letter send failed", extra={"partition": msg.partition, "offset": msg.offset})

    async def caught_up_ends(partitions: list[int]) -> dict[int, int]:
        """The end offset of each of ``partitions`` whose events are all processed and committed."""
        tps = [TP(cfg.topic_events, p) for p in partitions]
        try:
            ends = await app.consumer.highwaters(*tps)
        except Exception:  # no consumer yet, a rebalance, a broker away: no marker this round
            log.debug("end offsets unavailable; no idle markers this round", exc_info=True)
            return {}
        # Faust's committed offset per TP (set by its seek after recovery and by every commit, which follows the
        # producer flush); not public API, see tests/unit/test_faust_internals.py.
        committed: Mapping[TP, int | None] = app.consumer._committed_offset  # type: ignore[attr-defined]
        out: dict[int, int] = {}
        for raw_tp, end in ends.items():
            tp = TP(raw_tp.topic, raw_tp.partition)
            if caught_up(committed.get(tp), end):
                out[tp.partition] = int(end)
        return out

    @app.timer(interval=cfg.idle_check_interval_s)
    async def idle_partitions() -> None:
        """Wall-clock fallback: advance event time on partitions that got nothing for ``idle_timeout_s`` and
        have no backlog (:mod:`streams.idle`)."""
        due = idle.due(time.monotonic())
        if not due:
            return
        ends = await caught_up_ends(due)
        now = time.monotonic()
        for p in idle.due(now):  # again: an event may have been processed during the await
            if p not in ends:
                continue
            marker = idle.marker(p, now, joiner.watermark(p), ends[p])
            MARKERS.inc()
            await app.producer.send(cfg.topic_expiry, None, orjson.dumps(marker), p, None, None)

    @app.on_partitions_revoked.connect
    def on_revoked(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Normally empty here: Faust waited for the held events' acks (the timer's barrier) before this.
        state.discard()
        held.clear()
        joiner.forget()
        idle.clear()

    @app.on_partitions_assigned.connect
    def on_assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        app.streams_assigned = True  # type: ignore[attr-defined]  # the start-up watchdog (streams.cli)
        now = time.monotonic()
        for tp in (args[0] if args else kwargs.get("assigned")) or ():
            if tp.topic == cfg.topic_events:
                idle.assigned(tp.partition, now)

    @app.on_before_shutdown.connect
    def on_shutdown(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        outputs.close()

    @app.task
    async def metadata_tail() -> None:
        try:
            await meta.tail()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("metadata tail stopped; enrichment keeps the last known metadata")

    return app


class StreamsWorker(faust.Worker):
    """A Faust worker that keeps inferlog's logging and logs ``streams worker ready`` once started."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self.app.streams_ready = True  # type: ignore[attr-defined]  # /readyz (streams.cli.LivenessProbe)
        log.info("streams worker ready", extra={"app_id": self.app.conf.id})
