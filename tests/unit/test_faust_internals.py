"""streams/state.py writes the join table's RocksDB store and changelog itself, through faust internals that
are not public API, and streams/transport.py sets one of aiokafka's. Each one they touch is checked here on the
installed versions, so an upgrade that moves one fails in this test, naming the version, instead of losing state
(or latency) in production."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types import TP

FAUST = f"faust-streaming {importlib.metadata.version('faust-streaming')}"
WHY = f"{FAUST}: streams/state.py relies on this; check the new store code and pyproject's faust bound"


@pytest.fixture
def table(tmp_path: Path) -> Any:
    """A table built as streams.app.build_app builds it (rocksdb store, bytes keys and values), not started."""
    app = faust.App("probe", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path), web_enabled=False)
    return app.Table("pending", default=None, partitions=2, key_type=bytes, value_type=bytes)


def test_the_store_is_faust_rocksdb_with_the_private_methods_state_py_calls(table: Any) -> None:
    from faust.stores.rocksdb import Store

    store = table.data  # WriteBackState._store
    assert isinstance(store, Store), f"{WHY}: table.data is {type(store)}"
    for name, params in {
        "_db_for_partition": ["partition"],
        "_dbs_for_actives": [],
        "_visible_items": ["db"],
        "set_persisted_offset": ["tp", "offset"],
    }.items():
        method = getattr(Store, name, None)
        assert callable(method), f"{WHY}: faust.stores.rocksdb.Store.{name} is gone"
        got = [p for p in inspect.signature(method).parameters if p != "self"]
        assert got == params, f"{WHY}: Store.{name}{tuple(got)}, expected {tuple(params)}"
    assert hasattr(store, "_key_index"), f"{WHY}: Store._key_index (key -> partition index) is gone"


def test_the_partition_db_reads_and_writes_as_state_py_does(table: Any) -> None:
    store = table.data
    db = store._db_for_partition(1)
    for name in ("get", "put", "delete"):
        assert callable(getattr(db, name, None)), f"{WHY}: the partition db ({type(db)}) has no {name}()"
    db.put(b"k", b"v")
    store._key_index[b"k"] = 1
    assert bytes(db.get(b"k")) == b"v"
    assert [(bytes(k), bytes(v)) for k, v in store._visible_items(db)] == [(b"k", b"v")], WHY
    assert list(store._dbs_for_actives()) == [], f"{WHY}: no partition is active before an assignment"
    db.delete(b"k")
    store._key_index.pop(b"k", None)
    assert db.get(b"k") is None, WHY
    # What Faust's recovery resumes from: the offset written by WriteBackState._persisted.
    tp = TP(table.changelog_topic.get_topic_name(), 1)
    store.set_persisted_offset(tp, 41)
    assert store.persisted_offset(tp) == 41, WHY


def test_the_changelog_topic_and_the_producer_send_signature(table: Any) -> None:
    assert table.changelog_topic.get_topic_name() == "probe-pending-changelog", WHY
    send = type(table.app.producer).send
    got = list(inspect.signature(send).parameters)[1:7]
    # WriteBackState.write_back calls producer.send(topic, key, value, partition, None, None) positionally.
    assert got == ["topic", "key", "value", "partition", "timestamp", "headers"], f"{WHY}: Producer.send{got}"


def test_the_consumer_committed_offsets_the_idle_fallback_reads(tmp_path: Path) -> None:
    # streams.app's idle check: a partition is idle only once app.consumer._committed_offset[tp] (set by the seek
    # after recovery and by each commit) has reached the end offset from app.consumer.highwaters(*tps).
    from faust.transport.consumer import Consumer

    app = faust.App("probe", broker="kafka://127.0.0.1:1", datadir=str(tmp_path), web_enabled=False)
    consumer = app.consumer
    assert isinstance(consumer, Consumer), f"{WHY}: app.consumer is {type(consumer)}"
    committed = getattr(consumer, "_committed_offset", None)
    assert committed is not None, f"{WHY}: Consumer._committed_offset is gone"
    assert committed.get(TP("t", 0)) is None, f"{WHY}: Consumer._committed_offset is not a TP -> offset mapping"
    assert inspect.iscoroutinefunction(type(consumer).highwaters), f"{WHY}: Consumer.highwaters is not async"
    perform_seek = inspect.getsource(Consumer.perform_seek)
    commit = inspect.getsource(Consumer._commit_offsets)
    assert "_committed_offset.update" in perform_seek and "_committed_offset.update" in commit, WHY


async def test_the_worker_consumer_gets_the_configured_fetch_wait(tmp_path: Path) -> None:
    # streams.transport: the worker app's consumer thread builds Faust's aiokafka consumer, then sets the private
    # attribute aiokafka's start() hands to its fetcher (Faust passes a fixed fetch_max_wait_ms=1500).
    import aiokafka
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.transport import WorkerApp

    app = WorkerApp("probe", fetch_wait_s=0.05, broker="kafka://127.0.0.1:1", datadir=str(tmp_path), web_enabled=False)
    worker = app.consumer
    assert isinstance(worker, ThreadDelegateConsumer), f"{WHY}: the worker app's consumer is {type(worker)}"
    thread = worker._thread
    assert isinstance(thread, AIOKafkaConsumerThread), f"{WHY}: the worker consumer's thread is {type(thread)}"
    consumer = thread._create_consumer(asyncio.get_running_loop())
    try:
        assert isinstance(consumer, aiokafka.AIOKafkaConsumer), f"{WHY}: the worker consumer is {type(consumer)}"
        assert consumer._fetch_max_wait_ms == 50, WHY
        start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
        assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in start, f"aiokafka {aiokafka.__version__}: {WHY}"
    finally:
        await consumer.stop()
