"""The ingest's durable core: each event goes to Kafka (acknowledged by the broker) or to the spool
(fsynced), and a background task drains the spool to Kafka, in order, when Kafka is back.

While the spool holds anything, new events are appended to it too (an fsync, so still a fast 202), which
keeps the arrival order for the drain; when the drain empties the spool, events go straight to Kafka again.

**Handed-over records.** An event whose delivery report has not come within ``produce_timeout_s`` is spooled and
answered, but it stays in librdkafka, which keeps retrying it (idempotently) for up to ``delivery_timeout_s``.
Failing it there instead would not take it back: a record already sent when the broker went away may have been
written, and the drain would then write it a second time. So the drain waits until librdkafka has settled every
handed-over record, and skips the spooled copy of each one it delivered. The events topic then holds each
acknowledged event once, unless the ingest stops or dies (or Kafka stays away beyond ``delivery_timeout_s``)
while a record is in both places: the next drain then sends the spooled copy too, and the join's deduplication
drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from core.events import LoggedEvent, to_kafka
from core.retry import Backoff
from ingest import metrics
from ingest.claimcheck import ClaimCheck
from ingest.config import IngestConfig
from ingest.errors import ClaimCheckFailed, ProduceFailed, SpoolFull
from ingest.spool import Position, Record, Spool

log = logging.getLogger("ingest")


class Producer(Protocol):
    up: bool

    def start(self) -> None: ...
    def produce(self, record: Record, topic: str | None = None) -> asyncio.Future[Any]: ...
    def mark_up(self) -> None: ...
    def mark_down(self) -> None: ...
    def close(self, timeout_s: float = 10.0) -> int: ...


def to_record(ev: LoggedEvent) -> Record:
    key, headers, value = to_kafka(ev)
    return Record(key, tuple(headers), value)


def _labels(record: Record) -> tuple[str, str]:
    return record.header("ce_namespace"), record.header("ce_inferenceservicename")


class Ingest:
    def __init__(
        self, cfg: IngestConfig, producer: Producer, spool: Spool, claimcheck: ClaimCheck | None = None
    ) -> None:
        self.cfg = cfg
        self.claimcheck = claimcheck
        self.producer = producer
        self.spool = spool
        self.closing = False
        self._drain_task: asyncio.Task[None] | None = None
        self._tally_task: asyncio.Task[None] | None = None
        self._stop_drain = asyncio.Event()
        self._ahead: set[Position] = set()  # spool records already in Kafka beyond the committed cursor
        self._handed_over = 0  # spooled records whose delivery librdkafka has not settled yet
        self._settled = asyncio.Event()
        self._settled.set()
        self._landed: Counter[Record] = Counter()  # spooled records librdkafka delivered after all
        metrics.SPOOL_CAPACITY.set(cfg.spool_max_bytes)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.producer.start()
        self._drain_task = asyncio.create_task(self._drain_loop(), name="spool-drain")
        self._tally_task = asyncio.create_task(self._tally_loop(), name="metrics-tally")
        self.refresh_gauges()
        if self.spool.depth:
            log.info("spool holds events from before: draining", extra={"records": self.spool.depth})

    async def stop(self) -> None:
        """Finish the current drain round, flush the producer, close the spool. Nothing acknowledged is lost:
        acknowledged events are already in Kafka or in the fsynced spool."""
        self.closing = True
        self._stop_drain.set()
        if self._drain_task is not None:
            try:
                await asyncio.wait_for(self._drain_task, timeout=self.cfg.shutdown_timeout_s)
            except TimeoutError:
                self._drain_task.cancel()
        left = await asyncio.to_thread(self.producer.close, self.cfg.shutdown_timeout_s)
        if left:
            log.warning("producer closed with records still in flight", extra={"records": left})
        await self.spool.close()
        if self._tally_task is not None:
            self._tally_task.cancel()
        metrics.TALLY.flush()

    async def _tally_loop(self) -> None:
        # Every second rather than only on a scrape: with --workers N a scrape reaches one worker, and the
        # others' gauges must be current too (ingest.workers).
        while True:
            await asyncio.sleep(1.0)
            self.refresh_gauges()

    @property
    def spooling(self) -> bool:
        return not self.producer.up or self.spool.depth > 0

    def ready(self) -> bool:
        return not self.closing and (self.producer.up or self.spool.has_room())

    def refresh_gauges(self) -> None:
        metrics.TALLY.flush()
        metrics.SPOOL_RECORDS.set(self.spool.depth)
        metrics.SPOOL_BYTES.set(self.spool.size_bytes)
        metrics.KAFKA_UP.set(0 if self.spooling else 1)

    # -- the write path --------------------------------------------------------------------------------------
    async def accept(self, events: Sequence[LoggedEvent], *, spool: bool = False) -> str:
        """Make ``events`` durable; returns ``"kafka"`` or ``"spool"``. Raises :class:`SpoolFull` when neither
        can take them (→ 503), :class:`ProduceFailed` when Kafka refuses them for good and so does the
        dead-letter topic."""
        if not events:
            return "kafka"
        if spool or self.spooling:
            await self._to_spool([to_record(ev) for ev in events])
            return "spool"
        records = [to_record(ev) for ev in events]
        futures = [self.producer.produce(r) for r in records]
        _, late = await asyncio.wait(futures, timeout=self.cfg.produce_timeout_s)
        if not late and len(records) == 1 and futures[0].exception() is None:  # KServe sends one per request
            self._count("produced", records[0])
            return "kafka"
        handed = [(r, f) for r, f in zip(records, futures, strict=True) if f in late]
        settled = [(r, f.exception() or f.result()) for r, f in zip(records, futures, strict=True) if f not in late]
        where = await self._settle([r for r, _ in settled], [res for _, res in settled])
        if handed:
            self.producer.mark_down()
            await self._hand_over(handed)
            return "spool"
        return where

    async def _hand_over(self, handed: list[tuple[Record, asyncio.Future[Any]]]) -> None:
        """Spool records librdkafka has not delivered in time, and remember which of them it delivers later.

        The hand-over counts as unsettled until the spool append is done too, so that the drain never reads
        a spooled copy before it knows whether librdkafka delivered the original."""
        spooled: bool | None = None  # None while the append is in progress
        early: list[Record] = []  # delivered before the append finished
        self._handed_over += len(handed) + 1
        self._settled.clear()

        def settle_one() -> None:
            self._handed_over -= 1
            if self._handed_over == 0:
                self._settled.set()

        def delivered(record: Record, fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                if spooled is None:
                    early.append(record)
                elif spooled:
                    self._landed[record] += 1
            settle_one()

        for record, fut in handed:
            fut.add_done_callback(functools.partial(delivered, record))
        try:
            await self._to_spool([r for r, _ in handed])
            spooled = True
            self._landed.update(early)
        finally:
            if spooled is None:
                spooled = False  # not in the spool (full): a late delivery has nothing to cancel
            settle_one()

    async def _settle(self, records: list[Record], results: Sequence[Any]) -> str:
        """Count what Kafka took, dead-letter what it refused for good, spool what it may take later."""
        retry: list[Record] = []
        fatal: list[tuple[Record, BaseException]] = []
        for record, res in zip(records, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, ProduceFailed) and res.fatal:
                    fatal.append((record, res))
                else:
                    retry.append(record)
            else:
                self._count("produced", record)
        for record, error in fatal:
            await self._dead_letter(record, str(error))
        if retry:
            self.producer.mark_down()
            await self._to_spool(retry)
            return "spool"
        return "kafka"

    async def _to_spool(self, records: list[Record]) -> None:
        try:
            await self.spool.append(records)
        except SpoolFull:
            for r in records:
                metrics.REJECTED.labels(reason="spool_full").inc()
                log.warning("spool full: refusing event", extra={"key": r.key.decode("utf-8", "replace")})
            raise
        for r in records:
            self._count("spooled", r)

    async def _dead_letter(self, record: Record, reason: str) -> None:
        headers = (*record.headers, ("error.stage", b"ingest"), ("error.reason", reason.encode()[:1024]))
        dl = Record(record.key, headers, record.value)
        await self.producer.produce(dl, self.cfg.topic_deadletter)
        self._count("dead_lettered", record)

    @staticmethod
    def _count(stage: str, record: Record) -> None:
        ns, isvc = _labels(record)
        metrics.TALLY.add(stage, ns, isvc)

    # -- the drain -------------------------------------------------------------------------------------------
    async def _drain_loop(self) -> None:
        backoff = Backoff(base_s=0.2, cap_s=5.0, attempts=0, deadline_s=1e12)
        attempt = 0
        while not self._stop_drain.is_set():
            if not self.spool.depth:
                waiter = asyncio.ensure_future(self.spool.has_data.wait())
                stopper = asyncio.ensure_future(self._stop_drain.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            try:
                progressed = await self._drain_round()
            except Exception:
                log.exception("spool drain round failed")
                progressed = False
            if progressed:
                attempt = 0
                continue
            delay = backoff.delay(attempt)
            attempt = min(attempt + 1, 10)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_drain.wait(), timeout=delay)

    async def _drain_round(self) -> bool:
        """Produce the next batch of spooled records in order; commit the delivered prefix.
        Returns True when everything in the batch was delivered."""
        if not self._settled.is_set():  # librdkafka may still deliver some spooled records itself
            stopper = asyncio.ensure_future(self._stop_drain.wait())
            settled = asyncio.ensure_future(self._settled.wait())
            await asyncio.wait({stopper, settled}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            settled.cancel()
            if not self._settled.is_set():
                return False
        batch = await self.spool.read(self.cfg.drain_batch)
        if not batch:
            await self.spool.wait_written()  # appends in progress are not readable yet
            return True
        todo: list[tuple[Position, Record]] = []
        stalled = False
        landed: set[Position] = set()
        for i, (pos, rec) in enumerate(batch):
            if pos in self._ahead:
                continue
            if self._landed[rec]:  # delivered by librdkafka after it was handed over
                self._landed[rec] -= 1
                if not self._landed[rec]:
                    del self._landed[rec]
                landed.add(pos)
                continue
            if self.claimcheck is not None and self.claimcheck.needed_record(rec):
                try:  # spooled unclaimed because object storage was away: claim-check it now
                    rec = await self.claimcheck.apply_record(rec)
                except ClaimCheckFailed as exc:
                    log.warning("spool drain: object storage still away", extra={"error": str(exc)})
                    batch, stalled = batch[:i], True  # keep the order: nothing after it goes first
                    break
            todo.append((pos, rec))
        futures = {pos: self.producer.produce(rec) for pos, rec in todo}
        results: dict[Position, Any] = dict(
            zip(futures, await asyncio.gather(*futures.values(), return_exceptions=True), strict=True)
        )
        committed: Position | None = None
        delivered = 0
        all_ok = True
        for pos, rec in batch:
            res = results.get(pos)  # None: delivered in an earlier round
            if isinstance(res, ProduceFailed) and res.fatal:
                try:
                    await self._dead_letter(rec, str(res))
                    res = None
                except Exception as exc:
                    res = exc
            if isinstance(res, BaseException):
                all_ok = False
                continue
            if pos in futures or pos in landed:
                self._count("produced", rec)
            if all_ok:
                committed = pos
                delivered += 1
                self._ahead.discard(pos)
            else:
                self._ahead.add(pos)
        all_ok = all_ok and not stalled
        if committed is not None:
            await self.spool.commit(committed, delivered)
        if all_ok:
            if not self.spool.depth:
                self.producer.mark_up()  # caught up: new events go straight to Kafka again
            if delivered:
                log.info("spool drained a batch", extra={"records": delivered, "left": self.spool.depth})
        else:
            log.warning("spool drain: kafka not taking records yet", extra={"left": self.spool.depth})
        return all_ok
