"""The worker's output producer: confluent-kafka (librdkafka) instead of the app's pure-Python aiokafka producer.

Records, failure signals and dead letters are many small writes; through Faust's aiokafka producer their
batching, framing and socket writes ran on the event loop (about a quarter of the worker's time, measured
with py-spy). librdkafka does that work in its own threads, so the loop only pays for ``produce()``.

The barrier of :mod:`streams.app` needs one thing from the outputs: "everything sent before this point is on
the broker" before it writes the join state of the events behind them. Outputs are grouped in *epochs*:
:meth:`Outputs.seal` closes the current one and returns a future that resolves once every record of it is
acknowledged (``acks=all``), or fails with the first delivery error. Records sent after the seal belong to the
next epoch, so the agent keeps processing (and producing) while an earlier epoch is still in flight: waiting
for a whole ``flush()`` at each barrier stalled the event loop for ~50 ms per barrier, a quarter of the
worker's time. Delivery reports are served by one poller thread (librdkafka calls back in it); an epoch's
counters are each written by one thread only (``sent`` by the loop, ``acked`` by the poller).

Join state (the table's changelog) and idle-partition markers still go through the app's producer, which Faust
flushes before it commits offsets, so the order on the broker stays: outputs, state, offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from core.kafka import producer_config
from streams.config import StreamsConfig
from streams.errors import OutputError

log = logging.getLogger("inferlog.streams")

_POLL_INTERVAL_S = 0.02


class _Epoch:
    """The outputs sent between two seals, and the future that says they are all delivered."""

    __slots__ = ("acked", "errors", "future", "loop", "sealed", "sent")

    def __init__(self) -> None:
        self.sent = 0  # written by the event loop only
        self.acked = 0  # written by the poller thread only
        self.errors: list[KafkaError] = []
        self.sealed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def delivered(self, err: KafkaError | None, _msg: Any) -> None:  # the poller thread (librdkafka's callback)
        if err is not None:
            self.errors.append(err)
        self.acked += 1
        if self.sealed and self.acked == self.sent:
            with contextlib.suppress(RuntimeError):  # a closed loop (shutdown): nobody waits any more
                cast(asyncio.AbstractEventLoop, self.loop).call_soon_threadsafe(self.settle)

    def settle(self) -> None:
        """In the loop; may run twice (the seal and the last callback can both see the epoch complete)."""
        fut = self.future
        if fut is None or fut.done():
            return
        if self.errors:
            err = self.errors[0]
            exc = OutputError(f"output delivery failed: {err.str()}")
            exc.__cause__ = KafkaException(err)
            fut.set_exception(exc)
        else:
            fut.set_result(None)


class Outputs:
    """Idempotent, ``acks=all`` producer of the worker's outputs (explicit partitions)."""

    def __init__(self, cfg: StreamsConfig, *, delivery_timeout_s: float = 120.0) -> None:
        self.delivery_timeout_s = delivery_timeout_s
        self.producer = Producer(
            producer_config(
                cfg,
                **{
                    "client.id": f"{cfg.app_id}-outputs",
                    "message.timeout.ms": int(delivery_timeout_s * 1000),
                    "batch.size": 256 * 1024,
                },
            )
        )
        self._epoch = _Epoch()
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Records sent since the last seal."""
        return self._epoch.sent

    def _poll(self) -> None:
        # Delivery reports in bursts: each time this thread takes the GIL it preempts the event loop, so one
        # wake-up per _POLL_INTERVAL_S serves every report queued meanwhile instead of one wake-up per response.
        while not self._closed.wait(_POLL_INTERVAL_S):
            self.producer.poll(0)

    def _ensure_poller(self) -> None:
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="outputs-poller", daemon=True)
            self._poller.start()

    def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int, headers: list[tuple[str, bytes]] | None
    ) -> None:
        """Queue one record (never awaits; a full local queue waits for the poller briefly)."""
        epoch = self._epoch
        while True:
            try:
                self.producer.produce(
                    topic, value, key, partition=partition, headers=cast(Any, headers), on_delivery=epoch.delivered
                )
                break
            except BufferError:  # the local queue is full: the poller serves delivery reports and makes room
                self._ensure_poller()
                time.sleep(0.01)
        epoch.sent += 1

    def seal(self) -> asyncio.Future[None]:
        """Close the current epoch; the future resolves when all of its records are acknowledged by the broker
        (:class:`OutputError` if any failed, or if they are not delivered within the delivery timeout)."""
        epoch, self._epoch = self._epoch, _Epoch()
        loop = asyncio.get_running_loop()
        epoch.loop = loop
        epoch.future = fut = loop.create_future()
        if epoch.sent == 0:
            fut.set_result(None)
            return fut
        self._ensure_poller()
        epoch.sealed = True
        if epoch.acked == epoch.sent:
            epoch.settle()
        # librdkafka fails a record after message.timeout.ms; this only guards against a lost callback
        timeout = loop.call_later(self.delivery_timeout_s + 5.0, self._expire, fut)
        fut.add_done_callback(lambda _f: timeout.cancel())
        return fut

    def _expire(self, fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_exception(OutputError(f"outputs not delivered within {self.delivery_timeout_s}s"))

    async def drain(self) -> None:
        """Return when everything sent so far is acknowledged by the broker; raise if any of it failed."""
        await self.seal()

    def close(self, timeout_s: float = 10.0) -> None:
        self._closed.set()  # the poller stops first: then only flush() below serves delivery reports
        if self._poller is not None:
            self._poller.join(timeout=1.0)
        left = self.producer.flush(timeout_s)
        if left:
            log.warning("outputs not flushed at shutdown; they are produced again after restart", extra={"left": left})
