"""The sink framework with fakes for Kafka and the store: cuts, ticks, commits, backpressure, dead letters."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from core.retry import wait_until
from schemas.serde import SchemaError
from schemas.wire import TICK_HEADER
from sinks.config import SinkConfig
from sinks.errors import WriteError
from sinks.framework import Batch, Item, Rejected, Sink, SinkRunner

TOPIC = "recs"
T0 = 1_714_550_400_000_000


@dataclass
class Msg:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    commits: list[tuple[int, int]] = field(default_factory=list)
    paused: set[int] = field(default_factory=set)
    seeks: list[tuple[int, int]] = field(default_factory=list)
    #: the group's committed offset per partition (absent: none, -1001 as librdkafka says)
    offsets: dict[int, int] = field(default_factory=dict)
    committed_fails: bool = False
    #: per assign call made by the runner: which call, and the start offset it gave each partition
    assigned: list[tuple[str, dict[int, int]]] = field(default_factory=list)

    def committed(self, tps: list[Any], timeout: float) -> list[Any]:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        if self.committed_fails:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return [TopicPartition(tp.topic, tp.partition, self.offsets.get(tp.partition, -1001)) for tp in tps]

    def incremental_assign(self, tps: list[Any]) -> None:
        self.assigned.append(("incremental_assign", {tp.partition: tp.offset for tp in tps}))

    def assign(self, tps: list[Any]) -> None:
        self.assigned.append(("assign", {tp.partition: tp.offset for tp in tps}))

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits += [(tp.partition, tp.offset) for tp in offsets]

    def pause(self, tps: list[Any]) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps: list[Any]) -> None:
        self.paused -= {tp.partition for tp in tps}

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.partition, tp.offset))


@dataclass
class FakeProducer:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: list[Any], on_delivery: Any) -> None:
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": dict(headers)})

    def flush(self, timeout: float) -> int:
        return 0


class JsonSerde:
    def __init__(self) -> None:
        self.bulk_calls = 0
        self.flaky: set[bytes] = set()  # values whose first bulk decode fails as if the registry were away

    def decode(self, data: bytes) -> dict[str, Any]:
        return dict(json.loads(data))

    def decode_many(self, values: list[bytes]) -> list[dict[str, Any] | Exception]:
        self.bulk_calls += 1
        out: list[dict[str, Any] | Exception] = []
        for v in values:
            if v in self.flaky:
                self.flaky.discard(v)
                out.append(SchemaError("registry unreachable", retriable=True))
                continue
            try:
                out.append(self.decode(v))
            except Exception as exc:
                out.append(exc)
        return out


class ListSink(Sink):
    kind = "list"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.fail: list[Exception] = []
        self.reject: set[int] = set()

    def write(self, batch: Batch) -> list[Rejected]:
        if self.fail:
            raise self.fail.pop(0)
        self.batches.append([i.offset for i in batch.records])
        return [Rejected(i, "mapping says no") for i in batch.records if i.offset in self.reject]


def runner(sink: Sink | None = None, **kw: Any) -> tuple[SinkRunner, FakeConsumer, FakeProducer]:
    cfg = SinkConfig(topic_records=TOPIC, **{"flush_records": 3, "flush_span_s": 10.0, **kw})
    r = SinkRunner(cfg, sink or ListSink())
    r.INLINE_RETRY = type(r.INLINE_RETRY)(base_s=0.0, cap_s=0.0, attempts=1)
    c, p = FakeConsumer(), FakeProducer()
    r._consumer, r._producer = c, p  # type: ignore[assignment]
    r._serdes = {TOPIC: JsonSerde()}  # type: ignore[dict-item]
    r.partition((TOPIC, 0)), r.partition((TOPIC, 1))
    return r, c, p


def rec(offset: int, t_s: float = 0.0, partition: int = 0) -> Msg:
    value = {"join_key": f"k{offset}", "namespace": "ns", "isvc": "m", "event_time": T0 + int(t_s * 1e6)}
    return Msg(TOPIC, partition, offset, f"k{offset}".encode(), json.dumps(value).encode())


def tick(offset: int, t_s: float, partition: int = 0) -> Msg:
    return Msg(TOPIC, partition, offset, None, b"", [(TICK_HEADER, str(T0 + int(t_s * 1e6)).encode())])


def feed(r: SinkRunner, msgs: list[Msg]) -> None:
    """As the consume loop does with one ``consume()`` result: decode in bulk, then handle each message; then
    wait for the writes in flight and take their results."""
    for m, headers, decoded in r._predecode(msgs):  # type: ignore[arg-type]
        r._handle(m, headers, decoded)
    r._drain()


def open_batch(r: SinkRunner, partition: int = 0) -> Batch:
    """The partition's open batch (the test fails if it has none)."""
    batch = r.partition((TOPIC, partition)).open
    assert batch is not None, f"partition {partition} has no open batch"
    return batch


def make_due(r: SinkRunner, partition: int = 0) -> None:
    """Make the retry of the partition's failed batch due now (the test fails if no write is pending)."""
    pending = r.partition((TOPIC, partition)).pending
    assert pending is not None, f"partition {partition} has no failed batch pending"
    pending.due = 0


def test_cut_by_count_commits_after_each_write() -> None:
    r, c, _ = runner()
    sink = r.sink
    assert isinstance(sink, ListSink)
    feed(r, [rec(i) for i in range(7)])
    assert sink.batches == [[0, 1, 2], [3, 4, 5]]
    assert c.commits == [(0, 3), (0, 6)]  # offset 6 is open: not committed


def test_cut_by_bytes() -> None:
    r, c, _ = runner(flush_records=100, flush_bytes=200)
    msgs = [rec(i) for i in range(5)]
    assert all(70 < len(m.value() or b"") < 100 for m in msgs)  # so three of them reach 200 bytes
    feed(r, msgs)
    assert r.sink.batches == [[0, 1, 2]]  # type: ignore[attr-defined]
    assert c.commits == [(0, 3)]


def test_record_time_span_cuts_before_the_record_that_exceeds_it() -> None:
    r, c, _ = runner(flush_records=100)
    feed(r, [rec(0, 0), rec(1, 4), rec(2, 10.5), rec(3, 11)])
    assert r.sink.batches == [[0, 1]]  # type: ignore[attr-defined]
    assert c.commits == [(0, 2)]


def test_tick_closes_a_batch_whose_span_is_over_and_is_committed() -> None:
    r, c, _ = runner(flush_records=100)
    feed(r, [rec(0, 0), rec(1, 1), tick(2, 5)])
    assert r.sink.batches == []  # type: ignore[attr-defined]
    feed(r, [tick(3, 10)])
    assert r.sink.batches == [[0, 1]]  # type: ignore[attr-defined]
    assert c.commits == [(0, 4)]  # the closing tick is covered
    feed(r, [tick(4, 20), tick(5, 30)])  # ticks with nothing open: committed as they come
    r._commit_due_offsets()
    assert c.commits[-1] == (0, 6)


def test_cuts_are_the_same_when_resuming_from_a_committed_offset() -> None:
    msgs = [rec(0, 0), rec(1, 2), tick(2, 3), rec(3, 9), rec(4, 12), rec(5, 13), rec(6, 14), tick(7, 30), rec(8, 31)]
    full, c1, _ = runner()
    feed(full, msgs)
    # a second worker resumes at the first commit of the first one
    resume_at = c1.commits[0][1]
    again, _, _ = runner()
    feed(again, [m for m in msgs if m.offset() >= resume_at])
    assert again.sink.batches == full.sink.batches[1:]  # type: ignore[attr-defined]


def test_partitions_are_batched_independently() -> None:
    r, c, _ = runner()
    feed(r, [rec(0, partition=0), rec(0, partition=1), rec(1, partition=0), rec(2, partition=0)])
    assert r.sink.batches == [[0, 1, 2]]  # type: ignore[attr-defined]
    assert c.commits == [(0, 3)]
    assert open_batch(r, 1).size == 1


def test_retriable_failure_pauses_keeps_the_batch_and_resumes_after_success() -> None:
    sink = ListSink()
    sink.fail = [WriteError("503", retriable=True), WriteError("503", retriable=True)]
    r, c, _ = runner(sink)
    feed(r, [rec(0), rec(1), rec(2)])
    assert c.paused == {0} and c.commits == [] and r.stats.pauses == 1
    feed(r, [rec(3), rec(4)])  # fetched before the pause took effect: handed back by seeking
    assert c.seeks == [(0, 3)]
    make_due(r)
    r._retry_due()
    assert c.paused == {0}  # second failure: still paused
    make_due(r)
    r._retry_due()
    assert sink.batches == [[0, 1, 2]] and c.commits == [(0, 3)] and c.paused == set()
    assert r.stats.retried == 6


def test_permanent_failure_stops_the_sink() -> None:
    sink = ListSink()
    sink.fail = [WriteError("403 access denied", retriable=False)]
    r, c, _ = runner(sink)
    with pytest.raises(WriteError, match="permanent"):
        feed(r, [rec(0), rec(1), rec(2)])
    assert c.commits == []


def test_undecodable_and_rejected_records_go_to_dead_letter_with_reasons() -> None:
    sink = ListSink()
    sink.reject = {2}
    r, c, p = runner(sink)
    feed(r, [rec(0), Msg(TOPIC, 0, 1, b"bad", b"\x00garbage"), rec(2)])
    assert sink.batches == [[0, 2]]
    assert [m["key"] for m in p.sent] == [b"bad", b"k2"]
    assert p.sent[0]["headers"]["error.kind"] == b"undecodable"
    assert p.sent[1]["headers"]["error.reason"] == b"mapping says no"
    assert p.sent[1]["headers"]["error.offset"] == b"2" and p.sent[1]["value"] == rec(2).value()
    assert c.commits == [(0, 3)] and r.stats.dead_lettered == 2 and r.stats.written == 1


def test_revoked_partition_drops_its_open_batch_uncommitted() -> None:
    from confluent_kafka import TopicPartition

    r, c, _ = runner()
    feed(r, [rec(0), rec(1)])
    r._on_revoke(None, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert r.partition((TOPIC, 0)).open is None and c.commits == []


def test_a_new_runner_exports_its_retried_and_paused_series_at_zero() -> None:
    from prometheus_client import REGISTRY

    class Fresh(ListSink):
        kind = "fresh-kind"  # no other test uses it: its series appear only through this runner

    assert REGISTRY.get_sample_value("inferlog_sink_records_retried_total", {"sink": Fresh.kind}) is None
    runner(Fresh())
    assert REGISTRY.get_sample_value("inferlog_sink_records_retried_total", {"sink": Fresh.kind}) == 0
    assert REGISTRY.get_sample_value("inferlog_sink_paused_partitions", {"sink": Fresh.kind}) == 0


def test_revoked_partition_stops_reporting_its_lag() -> None:
    from confluent_kafka import TopicPartition
    from prometheus_client import REGISTRY

    from sinks.framework import LAG

    r, _, _ = runner()
    labels = {"sink": r.sink.kind, "topic": TOPIC, "partition": "0"}
    other = {**labels, "partition": "1"}
    LAG.labels(**labels).set(7)
    LAG.labels(**other).set(3)
    r._on_revoke(None, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("inferlog_sink_lag", labels) is None
    assert REGISTRY.get_sample_value("inferlog_sink_lag", other) == 3  # a partition still owned keeps its lag
    LAG.remove(*other.values())


def test_shutdown_keeps_deterministic_batches_open_but_flushes_idempotent_sinks() -> None:
    r, c, _ = runner()
    feed(r, [rec(0), rec(1)])
    r._shutdown()
    assert r.sink.batches == [] and c.commits == []  # type: ignore[attr-defined]

    class Eager(ListSink):
        deterministic_cuts = False

    r2, c2, _ = runner(Eager())
    feed(r2, [rec(0), rec(1)])
    r2._shutdown()
    assert r2.sink.batches == [[0, 1]] and c2.commits == [(0, 2)]  # type: ignore[attr-defined]


def test_records_are_decoded_in_bulk_per_consume_and_ticks_or_paused_partitions_are_not() -> None:
    sink = ListSink()
    sink.fail = [WriteError("503", retriable=True)]
    r, c, _ = runner(sink)
    serde = r._serdes[TOPIC]
    assert isinstance(serde, JsonSerde)
    feed(r, [rec(0), tick(1, 1), rec(2), rec(3)])  # one consume() result, one bulk decode
    assert serde.bulk_calls == 1 and c.paused == {0}
    pre = r._predecode([rec(4), rec(0, partition=1), tick(5, 2)])  # type: ignore[list-item]
    assert [d is None for _, _, d in pre] == [True, False, True]  # paused partition 0 and a tick: not decoded
    feed(r, [rec(4)])
    assert c.seeks == [(0, 4)]  # handed back to Kafka as before


def test_a_record_the_registry_could_not_decode_in_bulk_is_decoded_again_not_dead_lettered() -> None:
    r, c, p = runner()
    serde = r._serdes[TOPIC]
    assert isinstance(serde, JsonSerde)
    serde.flaky = {rec(1).value() or b""}
    feed(r, [rec(0), rec(1), rec(2)])
    assert r.sink.batches == [[0, 1, 2]] and p.sent == [] and c.commits == [(0, 3)]  # type: ignore[attr-defined]


class GatedSink(ListSink):
    """Writes in background threads wait until the test releases their batch (by first offset); a batch
    whose first offset is in ``fail_once`` fails (retriable) the first time."""

    max_in_flight = 3

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[int, threading.Event] = {}
        self.fail_once: set[int] = set()
        self.lock = threading.Lock()

    def gate(self, first: int) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(first, threading.Event())

    def write(self, batch: Batch) -> list[Rejected]:
        first = batch.items[0].offset
        assert self.gate(first).wait(10), f"batch {first} never released"
        with self.lock:
            if self.fail:
                raise self.fail.pop(0)
            if first in self.fail_once:
                self.fail_once.discard(first)
                raise WriteError("503", retriable=True)
            self.batches.append([i.offset for i in batch.records])
        return []


def handle(r: SinkRunner, msgs: list[Msg]) -> None:
    """Like :func:`feed` without waiting for the writes in flight."""
    for m, headers, decoded in r._predecode(msgs):  # type: ignore[arg-type]
        r._handle(m, headers, decoded)


def settle(r: SinkRunner, *firsts: int) -> None:
    """Wait until the writes of the batches starting at ``firsts`` have ended, then take the results."""
    sink = r.sink
    assert isinstance(sink, GatedSink)
    for w in [w for p in r._parts.values() for w in p.in_flight if w.batch.items[0].offset in firsts]:
        w.future.exception(timeout=10)
    r._reap()


def test_writes_in_flight_overlap_and_commits_stay_in_order() -> None:
    sink = GatedSink()
    r, c, _ = runner(sink)
    handle(r, [rec(i) for i in range(9)])  # three batches, all written at once
    assert [w.batch.items[0].offset for w in r.partition((TOPIC, 0)).in_flight] == [0, 3, 6]
    sink.gate(6).set()
    settle(r, 6)
    sink.gate(3).set()
    settle(r, 3)
    assert sink.batches == [[6, 7, 8], [3, 4, 5]]  # written out of order ...
    assert c.commits == []  # ... but nothing committed while the first batch is in flight
    handle(r, [tick(9, 0.5)])
    r._commit_due_offsets()
    assert c.commits == []  # a tick does not jump the writes in flight either
    sink.gate(0).set()
    settle(r, 0)
    assert c.commits == [(0, 3), (0, 6), (0, 9)]  # in order, once the first succeeded
    r._commit_due_offsets()
    assert c.commits[-1] == (0, 10)
    assert r.stats.written == 9


def test_a_failed_write_holds_back_later_successes_and_nothing_is_lost() -> None:
    sink = GatedSink()
    sink.fail_once = {0}
    r, c, _ = runner(sink)
    msgs = [rec(i) for i in range(8)]
    handle(r, msgs)  # batches 0-2 and 3-5 in flight, 6-7 open
    sink.gate(3).set()
    settle(r, 3)
    assert sink.batches == [[3, 4, 5]] and c.commits == []
    sink.gate(0).set()
    settle(r, 0)  # the first batch failed: paused, rewound to after it, later batches forgotten
    assert c.paused == {0} and c.commits == [] and c.seeks == [(0, 3)]
    assert r.partition((TOPIC, 0)).open is None and not r.partition((TOPIC, 0)).in_flight
    handle(r, msgs[3:])  # still in this consume() result: ignored, Kafka hands them again
    assert r.partition((TOPIC, 0)).open is None and c.seeks == [(0, 3)]
    make_due(r)
    r._retry_due()  # the retry succeeds: committed, resumed
    assert c.commits == [(0, 3)] and c.paused == set()
    handle(r, msgs[3:])  # read again after the seek: written again (idempotent) and committed in order
    r._drain()
    assert c.commits == [(0, 3), (0, 6)] and open_batch(r).size == 2
    written = sorted({o for b in sink.batches for o in b})
    assert written == list(range(6))  # every record up to the last commit was written
    assert sink.batches.count([3, 4, 5]) == 2


def test_a_partition_whose_writes_are_all_busy_waits_for_a_slot() -> None:
    sink = GatedSink()
    sink.max_in_flight = 1
    r, c, _ = runner(sink)
    handle(r, [rec(i) for i in range(3)])
    assert len(r._running) == 1
    releaser = threading.Timer(0.05, sink.gate(0).set)  # released from another thread while handle() waits
    releaser.start()
    try:
        handle(r, [rec(i) for i in range(3, 6)])  # the second cut waits for the first write to end
    finally:
        releaser.join()
    assert c.commits == [(0, 3)]  # taken while waiting for the slot
    sink.gate(3).set()
    r._drain()
    assert c.commits == [(0, 3), (0, 6)]


def test_revoked_partition_forgets_its_writes_in_flight() -> None:
    from confluent_kafka import TopicPartition

    sink = GatedSink()
    r, c, _ = runner(sink)
    handle(r, [rec(i) for i in range(3)])
    r._on_revoke(None, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    sink.gate(0).set()
    r._drain()
    assert c.commits == [] and not any(p.in_flight for p in r._parts.values())


def test_max_in_flight_zero_writes_in_the_consume_thread() -> None:
    sink = ListSink()
    sink.max_in_flight = 0
    r, c, _ = runner(sink)
    handle(r, [rec(i) for i in range(4)])
    assert sink.batches == [[0, 1, 2]] and c.commits == [(0, 3)] and r._pool is None


def test_a_permanent_failure_of_a_later_write_stops_the_sink_at_once() -> None:
    sink = GatedSink()
    r, c, _ = runner(sink)
    handle(r, [rec(i) for i in range(6)])
    sink.fail = [WriteError("403 access denied", retriable=False)]
    sink.gate(3).set()
    w = r.partition((TOPIC, 0)).in_flight[1]
    assert isinstance(w.future.exception(timeout=10), WriteError)
    with pytest.raises(WriteError, match="permanent"):
        r._reap()  # the first batch is still in flight
    sink.gate(0).set()
    assert c.commits == []


def test_a_batch_of_only_dead_items_commits_after_the_writes_before_it() -> None:
    sink = GatedSink()
    r, c, p = runner(sink)
    bad = [Msg(TOPIC, 0, o, b"bad", b"\x00garbage") for o in range(3, 6)]
    handle(r, [rec(0), rec(1), rec(2), *bad])  # the second batch has nothing to write
    assert c.commits == [] and p.sent == []  # not before the first batch is written
    sink.gate(0).set()
    r._drain()
    assert c.commits == [(0, 3), (0, 6)] and len(p.sent) == 3


class StoreWithOffsets(ListSink):
    """A store that keeps the consumed offsets itself (as the Iceberg sink does): it holds partition 0 up to 5."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[int, list[int]]] = []

    def stored_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: 5 for tp in partitions if tp == (TOPIC, 0)}

    def write(self, batch: Batch) -> list[Rejected]:
        self.written.append((batch.partition, [i.offset for i in batch.records]))
        return []


def assign_both(r: SinkRunner) -> None:
    from confluent_kafka import TopicPartition

    r._on_assign(None, [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]


def test_a_partition_the_store_is_ahead_on_is_assigned_starting_where_the_store_ends() -> None:
    """After a crash between the store's commit and Kafka's, the records the store holds are not even fetched:
    the assignment itself starts after them (a seek once records arrive would race with those already fetched)."""
    sink = StoreWithOffsets()
    r, c, _ = runner(sink)
    c.offsets = {0: 2}  # Kafka's committed offset is behind the store's 5
    assign_both(r)
    # partition 1: the store holds none of it, Kafka's offset stands
    assert c.assigned == [("incremental_assign", {0: 5, 1: -1001})]
    r._commit_due_offsets()
    assert c.commits == [(0, 5)]  # the group learns the store's progress
    feed(r, [rec(i) for i in range(5, 8)] + [rec(i, partition=1) for i in range(3)])
    assert sorted(sink.written) == [(0, [5, 6, 7]), (1, [0, 1, 2])] and c.seeks == []
    assert r.stats.records_in == 6


def test_an_eager_assignor_gets_the_start_offsets_through_assign() -> None:
    from sinks.framework import _cooperative

    assert _cooperative({"partition.assignment.strategy": "cooperative-sticky"})
    assert not _cooperative({}) and not _cooperative({"partition.assignment.strategy": "range"})
    r, c, _ = runner(StoreWithOffsets())
    r._cooperative = False
    assign_both(r)
    assert c.assigned == [("assign", {0: 5, 1: -1001})]


def test_kafka_ahead_of_the_store_keeps_its_offset() -> None:
    """Kafka commits past the store's last write for ticks and dead-only batches: starting from the store's
    offset there would dead-letter those records again."""
    sink = StoreWithOffsets()
    r, c, _ = runner(sink)
    c.offsets = {0: 7}
    assign_both(r)
    assert c.assigned == []  # librdkafka starts every partition at its committed offset
    r._commit_due_offsets()
    assert c.commits == []
    feed(r, [rec(i) for i in range(7, 10)])
    assert sink.written == [(0, [7, 8, 9])]


def test_without_the_committed_offsets_the_held_records_are_dropped_as_they_come() -> None:
    """The fallback: the partition starts at Kafka's offset and what the store holds is dropped, without a seek
    (librdkafka would deliver again, from the seek, the records of this consume() result after it)."""
    sink = StoreWithOffsets()
    r, c, _ = runner(sink)
    c.committed_fails = True
    assign_both(r)
    assert c.assigned == []
    feed(r, [rec(i) for i in range(8)] + [rec(0, partition=1)])
    assert c.seeks == [] and sink.written == [(0, [5, 6, 7])]
    assert r.stats.records_in == 4
    assert (0, 8) in c.commits and r.partition((TOPIC, 0)).resume_at is None


class OrderedProbe(GatedSink):
    """Records, as each write starts, which writes have already finished."""

    ordered_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[int, set[int]]] = []
        self.finished: set[int] = set()

    def write(self, batch: Batch) -> list[Rejected]:
        first = batch.items[0].offset
        with self.lock:
            self.started.append((first, set(self.finished)))
        out = super().write(batch)
        with self.lock:
            self.finished.add(first)
        return out


def test_ordered_writes_keep_one_write_per_partition_in_flight() -> None:
    """A store that records "everything before offset N" (Iceberg) must get a partition's batches in order: the
    next batch of a partition is written only once the one before it is."""
    sink = OrderedProbe()
    r, c, _ = runner(sink)
    consumer = threading.Thread(target=handle, args=(r, [rec(i) for i in range(6)]))
    consumer.start()  # cuts [0..2] and [3..5]
    wait_until(lambda: [f for f, _ in sink.started] == [0], timeout_s=10, what="first write started")
    sink.gate(3).set()  # the second batch could be written at once, if it had been submitted
    sink.gate(0).set()
    consumer.join(10)
    r._drain()
    assert sink.started == [(0, set()), (3, {0})]  # the second started after the first had finished
    assert sink.batches == [[0, 1, 2], [3, 4, 5]] and c.commits == [(0, 3), (0, 6)]


class ConvertingSink(ListSink):
    """Converts every two items to the list of their join keys; writes what was converted and the rest."""

    convert_every = 2

    def __init__(self) -> None:
        super().__init__()
        self.written: list[list[str]] = []

    def convert(self, batch: Batch, items: list[Item]) -> Any:
        return [i.record["join_key"] for i in items if i.record is not None]

    def write(self, batch: Batch) -> list[Rejected]:
        rest = [i.record["join_key"] for i in batch.items[batch.converted :] if i.record is not None]
        self.written.append([k for chunk in batch.chunks for k in chunk] + rest)
        return super().write(batch)


def test_a_converting_sink_gets_its_parts_of_the_open_batch_and_the_rest_at_the_cut() -> None:
    sink = ConvertingSink()
    r, c, p = runner(sink, flush_records=5)
    bad = Msg(TOPIC, 0, 2, b"k2", b"not json")
    feed(r, [rec(0), rec(1), bad, rec(3), rec(4), rec(5), rec(6), rec(7)])
    assert sink.written == [["k0", "k1", "k3", "k4"]]  # the undecodable record has no part
    assert sink.batches == [[0, 1, 3, 4]] and c.commits == [(0, 5)]
    assert [m["value"] for m in p.sent] == [b"not json"]
    open_batch = r.partition((TOPIC, 0)).open
    assert open_batch is not None and open_batch.chunks == [["k5", "k6"]] and open_batch.converted == 2
    # the converted records are stand-ins the framework's per-model counts still read
    assert [i.record for i in open_batch.items] == [{"namespace": "ns", "isvc": "m"}] * 2 + [
        {"join_key": "k7", "namespace": "ns", "isvc": "m", "event_time": T0}
    ]
    assert r.stats.written == 4
