"""The worker's Faust app class: Faust's aiokafka transport with a fetch wait the worker chooses.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500``, fixed. aiokafka keeps one fetch in flight per
broker and leaves out of it every partition that still holds buffered records. So once all events partitions
have records buffered, the next fetch asks only for the quiet ones (expiry markers, standby changelogs), the
broker holds it for the whole wait, and events that arrive meanwhile wait with it: outputs came out in bursts,
1.4-1.6 s after the POST at 400 inferences/s (bench/e2e.py, producer timestamps of the records). With a short
wait a quiet fetch returns soon and the next one carries the new events.

``_fetch_max_wait_ms`` is aiokafka's private attribute that its ``start()`` hands to the fetcher; Faust creates
the consumer before starting it. tests/unit/test_faust_internals.py checks both on the installed versions.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(driver.Transport):
    Consumer = _Consumer


class WorkerApp(faust.App):
    """A :class:`faust.App` whose worker consumer waits at most ``fetch_wait_s`` for a fetch to fill."""

    def __init__(self, *args: Any, fetch_wait_s: float, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = max(1, round(fetch_wait_s * 1000))
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
