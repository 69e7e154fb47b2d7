"""Group commit: the batches of several partitions that wait at the same time go to the store in one request.

Batches are cut per partition (offsets are committed per partition). A store with a fixed cost per request
(an OpenSearch bulk and its translog fsync, an Iceberg commit and its manifest and metadata files) then pays
it once per partition and cut. A sink with :attr:`~sinks.framework.Sink.coalesced_writes` has a write of every
partition in flight at once, each in its own thread; here each ``write`` queues its job, and a caller that finds
fewer than ``senders`` sends under way takes everything queued and sends it, while the others wait for their
job to be done. What a job's outcome is (its own rejections, retries or error) is the sink's business:
``send`` sets it on every job it is given and must not raise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

J = TypeVar("J")


class GroupCommit(Generic[J]):
    """Run ``send`` over the jobs queued at once, at most ``senders`` sends at a time."""

    def __init__(self, send: Callable[[list[J]], None], senders: int = 1) -> None:
        self._send, self._senders_max = send, max(1, senders)
        self._cond = threading.Condition()
        self._queue: list[J] = []
        self._done: set[int] = set()  # id() of the jobs sent and not yet returned to their caller
        self._senders = 0

    @property
    def queued(self) -> int:
        """Jobs waiting for a sender (for tests and metrics)."""
        with self._cond:
            return len(self._queue)

    def run(self, job: J) -> None:
        """Queue ``job`` and return once a send that carried it has finished (possibly this caller's own)."""
        with self._cond:
            self._queue.append(job)
        while True:
            with self._cond:
                while id(job) not in self._done and not (self._queue and self._senders < self._senders_max):
                    self._cond.wait()
                if id(job) in self._done:
                    self._done.discard(id(job))
                    return
                jobs, self._queue = self._queue, []
                self._senders += 1
            try:
                self._send(jobs)
            finally:
                with self._cond:
                    self._senders -= 1
                    self._done.update(id(j) for j in jobs)
                    self._cond.notify_all()
