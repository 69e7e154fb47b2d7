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
changelog. Writes go straight to the partition's RocksDB and to the aiokafka producer with an explicit
partition (the source partition, as Faust itself would choose), skipping Faust's one-at-a-time producer
buffer; the changelog format is Faust's (raw key, raw value, ``None`` deletes), so Faust's recovery and
standby replicas read it unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.types import TP

log = logging.getLogger("inferlog.streams")


class WriteBackState(MutableMapping[str, bytes]):
    """A str-keyed view of the join table for the partition being processed (:attr:`partition`), with an
    overlay of unwritten changes. :meth:`write_back` makes the overlay durable; :meth:`discard` drops it."""

    def __init__(self, app: Any, table: Any) -> None:
        self.app = app
        self.table = table
        self.partition = 0  # set by the agent before it calls the joiner
        self.dirty: dict[int, dict[bytes, bytes | None]] = {}
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
        over = self.dirty.get(self.partition)
        if over is not None and k in over:
            value = over[k]
            return default if value is None else value
        value = self._db(self.partition).get(k)
        return default if value is None else bytes(value)

    def __getitem__(self, key: str) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return bytes(value)

    def __setitem__(self, key: str, value: bytes) -> None:
        self.dirty.setdefault(self.partition, {})[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        self.dirty.setdefault(self.partition, {})[key.encode()] = None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def items(self) -> Any:
        """Every entry of the partitions this worker owns (active, not standby), overlay applied."""
        merged: dict[bytes, bytes | None] = {}
        for db in self._store._dbs_for_actives():
            for k, v in self._store._visible_items(db):
                merged[bytes(k)] = bytes(v)
        for over in self.dirty.values():
            merged.update(over)
        return [(k.decode(), v) for k, v in merged.items() if v is not None]

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, _ in self.items()])

    def __len__(self) -> int:
        return len(self.items())

    # -- barrier --------------------------------------------------------------------------------------------
    async def write_back(self) -> int:
        """Write the overlay to RocksDB and the changelog (the caller has awaited the outputs first)."""
        dirty, self.dirty = self.dirty, {}
        store = self._store
        topic = self.table.changelog_topic.get_topic_name()
        producer = self.app.producer
        n = 0
        for partition, writes in dirty.items():
            if not writes:
                continue
            db = self._db(partition)
            fut: Any = None
            for k, v in writes.items():
                if v is None:
                    db.delete(k)
                    store._key_index.pop(k, None)
                else:
                    db.put(k, v)
                    store._key_index[k] = partition
                fut = await producer.send(topic, k, v, partition, None, None)
                n += 1
            if fut is not None:
                fut.add_done_callback(self._persisted(TP(topic, partition)))
        self.changelog_writes += n
        return n

    def _persisted(self, tp: TP) -> Any:
        """Record the changelog offset in the partition's RocksDB (what Faust's recovery resumes from)."""

        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                return
            try:
                self._store.set_persisted_offset(tp, fut.result().offset)
            except Exception:  # a partition closed by a rebalance: recovery just reads a little more
                log.debug("could not persist the changelog offset", exc_info=True)

        return done

    def discard(self) -> None:
        """Drop unwritten changes (partitions revoked): the events behind them were not acked, so they are
        replayed by whoever owns the partitions next."""
        self.dirty = {}
        self.generation += 1
