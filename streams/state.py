"""Write-back join state over the Faust table's RocksDB store: state is made durable only after its outputs.

Why: Faust writes a table's changelog record as soon as the key is set, through its producer buffer, while the
outputs of the same event go through the producer separately. After a ``kill -9`` the changelog can hold
"pair done" while the pair's record never reached Kafka; the replayed event would then be dropped as a
duplicate and the pair lost. Here every state change of the join goes into an in-memory *overlay* (reads see it at
once) and is written to RocksDB and the changelog only at a *barrier*, after every output sent so far is
acknowledged by the broker (``acks=all``). The events processed before the barrier are acked to Faust only
after the barrier, and Faust commits offsets only after flushing the producer, so the order on the broker is
always: outputs, then the state that says they were emitted, then the source offset. A crash at any point
replays from the committed offset over a state that never claims more than what is in Kafka; a replayed
event re-creates byte-identical outputs or is dropped as a duplicate because its outputs are already durable.

The overlay also coalesces writes: a request and its response processed within one barrier interval cost one
changelog record (the compact "done" entry) instead of two, and the 1 KiB first side never reaches the
changelog. At a barrier the overlay is *sealed* (:meth:`WriteBackState.seal`) and a new one starts, so the agent
goes on processing while the sealed overlay waits for its outputs; reads see the current overlay, then the
sealed ones (newest first), then RocksDB. Sealed overlays are written strictly in order (:meth:`write_back`).
Writes go straight to the partition's RocksDB and to the app's aiokafka producer as one record batch per
partition (``create_batch``/``send_batch``) with an explicit partition (the source partition, as Faust itself
would choose), skipping Faust's per-record ``send`` (a coroutine, a signal and a future per key, ~40 µs per pair
on the event loop); the changelog format is Faust's (raw key, raw value, ``None`` deletes, no headers), so Faust's
recovery and standby replicas read it unchanged, and Faust's producer flush before each offset commit covers
the batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.types import TP

log = logging.getLogger("inferlog.streams")


_BATCHED_MAX = 64 * 1024  # larger changelog values (a pending side's big body) go one by one
Overlay = dict[int, dict[bytes, bytes | None]]  # partition -> key -> value (None: deleted)


class WriteBackState(MutableMapping[str, bytes]):
    """A str-keyed view of the join table for the partition being processed (:attr:`partition`), with overlays of
    unwritten changes: the current one (:attr:`dirty`) and the sealed ones waiting for their outputs.
    :meth:`seal` closes the current one, :meth:`write_back` makes the oldest sealed one durable, :meth:`discard`
    drops them all."""

    def __init__(self, app: Any, table: Any) -> None:
        self.app = app
        self.table = table
        self.partition = 0  # set by the agent before it calls the joiner
        self.dirty: Overlay = {}
        self.sealed: deque[Overlay] = deque()  # oldest first
        self.generation = 0  # bumped when partitions are revoked: an in-flight barrier must not write
        self.changelog_writes = 0

    # -- the store --------------------------------------------------------------------------------------------
    @property
    def _store(self) -> Any:
        return self.table.data

    def _db(self, partition: int) -> Any:
        return self._store._db_for_partition(partition)

    # -- MutableMapping (for streams.join.Joiner) -----------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        k = key.encode()
        p = self.partition
        over = self.dirty.get(p)
        if over is not None and k in over:
            value = over[k]
            return default if value is None else value
        for sealed in reversed(self.sealed):
            over = sealed.get(p)
            if over is not None and k in over:
                value = over[k]
                return default if value is None else value
        value = self._db(p).get(k)
        return default if value is None else bytes(value)

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        over = self.dirty.get(self.partition)
        if over is None:
            over = self.dirty[self.partition] = {}
        over[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        over = self.dirty.get(self.partition)
        if over is None:
            over = self.dirty[self.partition] = {}
        over[key.encode()] = None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def items(self) -> Any:
        """Every entry of the partitions this worker owns (active, not standby), overlays applied."""
        merged: dict[bytes, bytes | None] = {}
        for db in self._store._dbs_for_actives():
            for k, v in self._store._visible_items(db):
                merged[bytes(k)] = bytes(v)
        for overlay in (*self.sealed, self.dirty):
            for over in overlay.values():
                merged.update(over)
        return [(k.decode(), v) for k, v in merged.items() if v is not None]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])

    def __len__(self) -> int:
        return len(self.items())

    # -- barrier --------------------------------------------------------------------------------------------
    def seal(self) -> Overlay:
        """Close the current overlay (the state of the events processed so far); it is written by
        :meth:`write_back` once the outputs sent before this point are delivered."""
        overlay, self.dirty = self.dirty, {}
        self.sealed.append(overlay)
        return overlay

    async def write_back(self, overlay: Overlay | None = None) -> int:
        """Write a sealed overlay (the oldest; by default the current one, sealed now) to RocksDB and the
        changelog. The caller has awaited its outputs first. An overlay dropped by :meth:`discard` meanwhile is
        not written."""
        if overlay is None:
            overlay = self.seal()
        if not self.sealed or self.sealed[0] is not overlay:
            if any(o is overlay for o in self.sealed):
                raise RuntimeError("join-state overlays must be written in the order they were sealed")
            return 0
        store = self._store
        key_index = store._key_index
        # RocksDB first, all of it before the overlay leaves the read path (no await in between)
        for partition, writes in overlay.items():
            if not writes:
                continue
            db = self._db(partition)
            for k, v in writes.items():
                if v is None:
                    db.delete(k)
                    key_index.pop(k, None)
                else:
                    db.put(k, v)
                    key_index[k] = partition
        self.sealed.popleft()
        topic = self.table.changelog_topic.get_topic_name()
        n = 0
        for partition, writes in overlay.items():
            if writes:
                n += await self._send_changelog(topic, partition, writes)
        self.changelog_writes += n
        return n

    async def _send_changelog(self, topic: str, partition: int, writes: dict[bytes, bytes | None]) -> int:
        """The partition's changes as record batches (an overlay has each key once, so their order does not
        matter); each batch's delivery records the changelog offset."""
        producer = self.app.producer
        raw = producer._producer  # the started aiokafka producer behind Faust's (see test_faust_internals)
        tp = TP(topic, partition)
        batch = raw.create_batch()
        count = 0
        for k, v in writes.items():
            if v is not None and len(v) > _BATCHED_MAX:  # the producer's own path checks it against the request size
                single = await producer.send(topic, k, v, partition, None, None)
                single.add_done_callback(self._persisted(tp, 1))
                continue
            if batch.append(key=k, value=v, timestamp=None, headers=[]) is None:  # full: send, start the next
                fut = await raw.send_batch(batch, topic, partition=partition)
                fut.add_done_callback(self._persisted(tp, count))
                batch, count = raw.create_batch(), 0
                batch.append(key=k, value=v, timestamp=None, headers=[])  # an empty batch takes any record
            count += 1
        if count:
            batch.close()
            fut = await raw.send_batch(batch, topic, partition=partition)
            fut.add_done_callback(self._persisted(tp, count))
        return len(writes)

    def _persisted(self, tp: TP, count: int) -> Any:
        """Record the changelog offset in the partition's RocksDB (what Faust's recovery resumes from); a
        batch's future carries its first offset, ``count`` records end it."""

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            try:
                self._store.set_persisted_offset(tp, fut.result().offset + count - 1)
            except Exception:  # a partition closed by a rebalance: recovery just reads a little more
                log.debug("could not persist the changelog offset", exc_info=True)

        return done

    def discard(self) -> None:
        """Drop unwritten changes (partitions revoked): the events behind them were not acked, so they are
        replayed by whoever owns the partitions next."""
        self.dirty = {}
        self.sealed.clear()
        self.generation += 1
