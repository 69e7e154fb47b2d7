"""Fault tests against the real broker: Kafka stopped while traffic flows (202s continue through the spool;
every acknowledged event is in Kafka exactly once afterwards), ``kill -9`` of an ingest holding a spool
(restart → drained, exactly once), and SIGTERM under load (nothing acknowledged is lost)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.config import CommonConfig, load
from core.retry import wait_until
from ingest.app import INGEST_KEY, build_app
from ingest.config import IngestConfig
from tests.integration.test_ingest_contract import consume, ingest_config
from tests.support import ingest_examples as examples

pytestmark = pytest.mark.integration
INFERLOG = str(Path(sys.executable).parent / "inferlog")


def event_headers(ce_id: str, response: bool = False) -> list[tuple[str, str]]:
    src = examples.A_RESPONSE if response else examples.A_REQUEST
    return [(k, ce_id if k == "Ce-Id" else v) for k, v in src.headers]


def acked_ids(msgs: list[Any]) -> collections.Counter[str]:
    return collections.Counter(dict(m.headers())["ce_id"].decode() for m in msgs)


@pytest.mark.restarts_kafka
async def test_broker_outage_spools_and_delivers_exactly_once(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    from inferlog_stack.manager import StackConfig, start, stop

    stack_cfg = load(StackConfig)
    cfg = ingest_config(stack, unique, tmp_path, produce_timeout_s=2.0)
    client = TestClient(TestServer(build_app(cfg)))
    await client.start_server()
    ingest = client.app[INGEST_KEY]
    acked: list[str] = []
    bad: list[tuple[str, int]] = []
    sending = True

    async def sender(n: int) -> None:
        i = 0
        while sending:
            ce_id = f"out-{n}-{i}"
            i += 1
            async with client.post("/", data=b'{"instances": [[1]]}', headers=event_headers(ce_id)) as resp:
                if resp.status == 202:
                    acked.append(ce_id)
                else:
                    bad.append((ce_id, resp.status))
            await asyncio.sleep(0.02)  # pacing: ~50 events/s per sender

    async def until(pred: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert time.monotonic() < deadline, f"{what} not reached within {timeout_s}s"
            await asyncio.sleep(0.05)

    senders = [asyncio.create_task(sender(n)) for n in range(4)]
    try:
        await until(lambda: len(acked) >= 40, 20, "traffic flowing")
        before_outage = len(acked)
        try:
            await asyncio.to_thread(stop, stack_cfg, ("kafka",))
            await until(lambda: ingest.spool.depth >= 40, 20, "events spooled while Kafka is down")
            assert not ingest.producer.up
        finally:
            await asyncio.to_thread(start, stack_cfg, ("kafka",))
        await until(lambda: ingest.spool.depth == 0 and ingest.producer.up, 60, "spool drained")
        after = len(acked)
        await until(lambda: len(acked) >= after + 20, 20, "direct traffic again")
    finally:
        sending = False
        await asyncio.gather(*senders, return_exceptions=True)
        await client.close()
    assert bad == [], bad[:5]
    assert len(acked) > before_outage + 40
    got = acked_ids(await asyncio.to_thread(consume, cfg, cfg.topic_events))  # senders done: all 202s acked
    missing = set(acked) - set(got)
    dupes = {k: v for k, v in got.items() if v > 1}
    assert not missing, sorted(missing)[:10]
    assert not dupes, dupes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def ingest_process(
    cfg: IngestConfig, port: int, *, bootstrap: str, log: Path, extra: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        INGEST_ARGS[0],
        *INGEST_ARGS[1:],
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--spool-dir",
        cfg.spool_dir,
        "--kafka-bootstrap",
        bootstrap,
        "--topic-events",
        cfg.topic_events,
        "--topic-deadletter",
        cfg.topic_deadletter,
        "--produce-timeout-s",
        "1",
        "--no-create-topics",
        "--log-format",
        "text",
        *extra,
    ]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: the workers of --workers N go with it
        )
    try:
        wait_until(lambda: _get(port, "/healthz")[0] == 200, timeout_s=30, what="ingest up")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group (a test may have killed the supervisor)


INGEST_ARGS = [INFERLOG, "ingest"]


def _get(port: int, path: str) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"null") if path == "/readyz" else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


async def post_many(
    port: int,
    ids: list[str],
    concurrency: int = 8,
    statuses: dict[str, int] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """POST one event per id; once ``stop`` is set, the ids not yet sent are skipped (and get no status)."""
    statuses = {} if statuses is None else statuses
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(ce_id: str) -> None:
            async with sem:
                if stop is not None and stop.is_set():
                    return
                try:
                    async with session.post(
                        f"http://127.0.0.1:{port}/", data=b'{"predictions": [1]}', headers=event_headers(ce_id, True)
                    ) as resp:
                        statuses[ce_id] = resp.status
                except aiohttp.ClientError:
                    statuses[ce_id] = 0

        await asyncio.gather(*(one(i) for i in ids))
    return statuses


def test_kill_9_with_a_full_spool_then_restart_drains(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    port = free_port()
    ids = [f"k9-{i}" for i in range(60)]
    log = tmp_path / "ingest.log"
    with ingest_process(cfg, port, bootstrap="127.0.0.1:1", log=log) as proc:  # Kafka unreachable: spool
        statuses = asyncio.run(post_many(port, ids))
        assert set(statuses.values()) == {202}, collections.Counter(statuses.values())
        assert _get(port, "/readyz")[1]["spool_records"] == 60
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert list(Path(cfg.spool_dir).glob("*.seg"))
    with ingest_process(cfg, port, bootstrap=cfg.kafka_bootstrap, log=log):
        wait_until(
            lambda: _get(port, "/readyz")[1]["spool_records"] == 0, timeout_s=60, what="spool drained after restart"
        )
    got = acked_ids(consume(cfg, cfg.topic_events))  # drained: every record is acknowledged
    assert got == collections.Counter({i: 1 for i in ids}), log.read_text()[-2000:]


def test_sigterm_under_load_loses_nothing_acknowledged(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    port = free_port()
    ids = [f"term-{i}" for i in range(20_000)]  # far more than can be sent before the SIGTERM below
    statuses: dict[str, int] = {}
    stop = threading.Event()
    with ingest_process(cfg, port, bootstrap=cfg.kafka_bootstrap, log=tmp_path / "ingest.log") as proc:
        loader = threading.Thread(target=lambda: asyncio.run(post_many(port, ids, 16, statuses, stop)))
        loader.start()
        try:
            wait_until(lambda: len(statuses) >= 100, timeout_s=30, what="traffic flowing")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            stop.set()  # the loader ends by itself: the rest of the ids are skipped
            loader.join(timeout=60)
    acked = [i for i, s in statuses.items() if s == 202]
    assert len(acked) >= 100
    assert len(acked) < len(ids), "SIGTERM came after all traffic: the test proved nothing"
    got = acked_ids(consume(cfg, cfg.topic_events))  # every 202 came after its ack
    assert set(acked) <= set(got)
    assert all(v == 1 for v in got.values())
    assert all(s in (202, 503, 0) for s in statuses.values())
