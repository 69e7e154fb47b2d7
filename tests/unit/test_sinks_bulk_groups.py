"""BulkGroups: the OpenSearch sink's group commit of the partitions' batches into shared bulk requests, and the
runner's side of it (one write per partition in flight)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from sinks.errors import WriteError
from sinks.framework import Item, PartialWrite, Rejected
from sinks.opensearch import BulkGroups, Prepared
from tests.unit.test_sinks_framework import TOPIC, GatedSink, handle, rec, runner


def items(first: int, n: int) -> list[Prepared]:
    """``n`` bulk items; each body line carries its offset, which the fake bulk answers by."""
    return [Prepared(Item(o, None, b"", []), b'{"index":{}}\n{"o":%d}\n' % o) for o in range(first, first + n)]


class GatedBulk:
    """A bulk endpoint whose first request waits for ``release``; answers a status per offset (default 201)."""

    def __init__(self, status: dict[int, int] | None = None, fail: BaseException | None = None) -> None:
        self.status = status or {}
        self.fail = fail
        self.release = threading.Event()
        self.entered = threading.Event()
        self.bodies: list[list[int]] = []
        self._lock = threading.Lock()

    def __call__(self, body: bytes) -> dict[str, Any]:
        offsets = [int(line.split(b":")[1].rstrip(b"}")) for line in body.splitlines()[1::2]]
        with self._lock:
            self.bodies.append(offsets)
            first = len(self.bodies) == 1
        if first:
            self.entered.set()
            assert self.release.wait(10)
        elif self.fail is not None:
            raise self.fail
        statuses = [self.status.get(o, 201) for o in offsets]
        return {
            "errors": any(s >= 300 for s in statuses),
            "items": [{"index": {"status": s, **({"error": {"type": "x", "reason": "y"}} if s >= 300 else {})}}
                      for s in statuses],
        }  # fmt: skip


def run_concurrently(groups: BulkGroups, bulk: GatedBulk, later: list[list[Prepared]]) -> list[Any]:
    """Submit ``items(0, 2)`` first; while its request is held, submit ``later`` from other threads, then let
    the first request finish. Returns each submission's outcome (its rejected items, or the exception)."""

    def submit(prepared: list[Prepared]) -> Any:
        try:
            return groups.submit(prepared)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(later) + 1) as pool:
        first = pool.submit(submit, items(0, 2))
        assert bulk.entered.wait(10)
        rest = [pool.submit(submit, p) for p in later]
        # every later submission is queued (not sent) while the only sender's request is held
        until = time.monotonic() + 10
        while groups.commit.queued < len(later):
            assert time.monotonic() < until, "the later submissions were not queued"
            time.sleep(0.005)
        bulk.release.set()
        return [first.result(10), *(f.result(10) for f in rest)]


def test_the_batches_waiting_during_a_request_go_out_together_in_the_next() -> None:
    bulk = GatedBulk()
    groups = BulkGroups(bulk, max_bytes=1 << 20, senders=1)
    outcomes = run_concurrently(groups, bulk, [items(10, 3), items(20, 1), items(30, 2)])
    assert outcomes == [[], [], [], []]
    assert bulk.bodies[0] == [0, 1]
    assert sorted(bulk.bodies[1]) == [10, 11, 12, 20, 30, 31] and len(bulk.bodies) == 2


def test_each_batch_gets_back_only_its_own_retries_and_rejections() -> None:
    bulk = GatedBulk(status={11: 429, 12: 400, 30: 503})
    groups = BulkGroups(bulk, max_bytes=1 << 20, senders=1)
    first, a, b, c = run_concurrently(groups, bulk, [items(10, 3), items(20, 1), items(30, 2)])
    assert first == [] and b == []
    assert isinstance(a, PartialWrite) and [i.offset for i in a.retry] == [11]
    assert [(r.item.offset, r.kind) for r in a.rejected] == [(12, "rejected")] and "HTTP 400" in a.rejected[0].reason
    assert isinstance(c, PartialWrite) and [i.offset for i in c.retry] == [30] and c.rejected == []


def test_a_request_that_fails_as_a_whole_hands_back_only_the_items_not_sent() -> None:
    bulk = GatedBulk(fail=WriteError("OpenSearch unreachable", retriable=True))
    # bodies of at most two items: the batches sent before the failing body are done, the rest retried
    groups = BulkGroups(bulk, max_bytes=2 * len(items(10, 1)[0].lines), senders=1)
    first, a, b = run_concurrently(groups, bulk, [items(10, 3), items(20, 1)])
    assert first == []
    for out, offsets in ((a, [10, 11, 12]), (b, [20])):
        assert isinstance(out, PartialWrite) and [i.offset for i in out.retry] == offsets
        assert "unreachable" in str(out)


def test_a_permanent_failure_of_a_request_is_raised_to_its_batches() -> None:
    bulk = GatedBulk(fail=WriteError("HTTP 401", retriable=False))
    groups = BulkGroups(bulk, max_bytes=1 << 20, senders=1)
    first, a = run_concurrently(groups, bulk, [items(10, 2)])
    assert first == []
    assert isinstance(a, WriteError) and not a.retriable and not isinstance(a, PartialWrite)


def test_up_to_senders_requests_run_at_once() -> None:
    bulk = GatedBulk()
    groups = BulkGroups(bulk, max_bytes=1 << 20, senders=2)
    # the first request is held, yet a second submission is sent at once by a second sender
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(groups.submit, items(0, 1))
        assert bulk.entered.wait(10)
        assert pool.submit(groups.submit, items(5, 1)).result(10) == []
        bulk.release.set()
        assert first.result(10) == []
    assert bulk.bodies == [[0], [5]]


@pytest.mark.parametrize("rejected", [[], [Rejected(Item(1, None, b"", []), "HTTP 400 x", "rejected")]])
def test_a_lone_batch_is_sent_by_its_own_caller(rejected: list[Rejected]) -> None:
    calls: list[str] = []

    def bulk(body: bytes) -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        status = 400 if rejected else 201
        return {"errors": bool(rejected), "items": [{"index": {"status": status, "error": {"type": "x"}}}]}

    out = BulkGroups(bulk, max_bytes=1 << 20, senders=1).submit(items(1, 1))
    assert calls == [threading.current_thread().name]
    assert [(r.item.offset, r.kind) for r in out] == [(r.item.offset, r.kind) for r in rejected]


class CoalescingProbe(GatedSink):
    coalesced_writes = True
    max_in_flight = 1


def test_a_coalescing_sink_gets_one_write_per_partition_in_flight_whatever_max_in_flight() -> None:
    sink = CoalescingProbe()
    r, c, _ = runner(sink)
    handle(r, [rec(o, partition=p) for p, first in ((0, 0), (1, 10), (2, 20)) for o in range(first, first + 3)])
    # three partitions' batches wait at once (max_in_flight=1 would allow one): BulkGroups can join them
    assert sorted(w.batch.items[0].offset for p in r._parts.values() for w in p.in_flight) == [0, 10, 20]
    releaser = threading.Timer(0.05, sink.gate(0).set)  # released from another thread while handle() waits
    releaser.start()
    try:
        handle(r, [rec(o) for o in range(3, 6)])  # partition 0's next batch waits for its write before it
    finally:
        releaser.join()
    assert (0, 3) in c.commits and [w.batch.items[0].offset for w in r.partition((TOPIC, 0)).in_flight] == [3]
    for first in (3, 10, 20):
        sink.gate(first).set()
    r._drain()
    assert sorted(c.commits) == [(0, 3), (0, 6), (1, 13), (2, 23)]
