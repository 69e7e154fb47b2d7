"""``inferlog ingest --workers 2`` against the real broker: ``kill -9`` of one worker under load loses nothing
acknowledged (the supervisor restarts it), each worker spools into its own directory and a restart drains them
all, ``/metrics`` answers for every worker, and a spool left by another worker count is refused by name."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.config import CommonConfig
from core.retry import wait_until
from tests.integration.test_ingest_contract import consume, ingest_config
from tests.integration.test_ingest_faults import (
    INGEST_ARGS,
    acked_ids,
    event_headers,
    free_port,
    ingest_process,
    post_many,
)

pytestmark = pytest.mark.integration
WORKERS = ["--workers", "2"]


def workers_of(supervisor: int) -> list[int]:
    """The supervisor's worker processes (its children, less multiprocessing's resource tracker)."""
    out = []
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(int(child))
    return sorted(out)


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on ``/metrics`` (every worker's, combined by the answering one)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def post_fresh_connections(port: int, ids: list[str]) -> dict[str, int]:
    """One new connection per event, so that the kernel spreads them over the workers (``SO_REUSEPORT``
    hashes each connection, a keep-alive one would stay on one worker)."""
    statuses: dict[str, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for ce_id in ids:
            async with session.post(
                f"http://127.0.0.1:{port}/", data=b'{"predictions": [1]}', headers=event_headers(ce_id, True)
            ) as resp:
                statuses[ce_id] = resp.status
    return statuses


def test_kill_9_of_one_worker_under_load_loses_nothing_acknowledged(
    stack: CommonConfig, unique: str, tmp_path: Path
) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    port = free_port()
    ids = [f"w9-{i}" for i in range(40_000)]  # far more than are sent before the loader is stopped
    statuses: dict[str, int] = {}
    stop = threading.Event()
    log = tmp_path / "ingest.log"
    with ingest_process(cfg, port, bootstrap=cfg.kafka_bootstrap, log=log, extra=WORKERS) as proc:
        wait_until(lambda: len(workers_of(proc.pid)) == 2, timeout_s=30, what="two workers")
        first = workers_of(proc.pid)
        loader = threading.Thread(target=lambda: asyncio.run(post_many(port, ids, 16, statuses, stop)))
        loader.start()
        try:
            wait_until(lambda: len(statuses) >= 300, timeout_s=60, what="traffic flowing")
            victim = first[0]
            subprocess.run(["kill", "-9", str(victim)], check=True)
            wait_until(
                lambda: len(w := workers_of(proc.pid)) == 2 and victim not in w, timeout_s=30, what="worker restarted"
            )
            at_restart = len(statuses)
            wait_until(
                lambda: sum(1 for s in list(statuses.values())[at_restart:] if s == 202) >= 300,
                timeout_s=60,
                what="traffic flowing after the restart",
            )
        finally:
            stop.set()  # the loader ends by itself: the rest of the ids are skipped
            loader.join(timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "ingest worker died; restarting it" in text
    acked = [i for i, s in statuses.items() if s == 202]
    assert len(acked) < len(ids), "the load ended before the kill: the test proved nothing"
    got = acked_ids(consume(cfg, cfg.topic_events))  # every 202 came after the broker's ack
    missing = set(acked) - set(got)
    assert not missing, f"{len(missing)} acknowledged events not in Kafka, e.g. {sorted(missing)[:5]}"
    assert all(v == 1 for v in got.values())
    assert all(s in (202, 0) for s in statuses.values()), collections.Counter(statuses.values())


def test_each_worker_spools_apart_and_a_restart_drains_all(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    port = free_port()
    ids = [f"ws-{i}" for i in range(60)]
    log = tmp_path / "ingest.log"
    with ingest_process(cfg, port, bootstrap="127.0.0.1:1", log=log, extra=WORKERS) as proc:  # Kafka away: spool
        wait_until(lambda: len(workers_of(proc.pid)) == 2, timeout_s=30, what="two workers")
        pids = workers_of(proc.pid)
        statuses = asyncio.run(post_fresh_connections(port, ids))
        assert set(statuses.values()) == {202}, collections.Counter(statuses.values())
        # one scrape reaches one worker and counts both workers' spools
        wait_until(lambda: metric(port, "inferlog_ingest_spool_records") == 60, timeout_s=10, what="spool gauges")
        assert metric(port, "inferlog_ingest_spool_capacity_bytes") == cfg.spool_max_bytes
        proc.send_signal(signal.SIGKILL)  # the supervisor first, or it would restart the workers
        proc.wait(timeout=10)
        # without their supervisor the workers stop by themselves (the kernel's SIGTERM), keeping their spools
        wait_until(
            lambda: not any(Path(f"/proc/{p}").exists() for p in pids), timeout_s=60, what="workers gone with it"
        )
    for i in (0, 1):
        assert list((Path(cfg.spool_dir) / f"worker-{i}").glob("*.seg")), f"worker {i} spooled nothing"

    # one process cannot drain two workers' spools: refused, naming them, before it listens
    single = subprocess.run(
        [*INGEST_ARGS, "--spool-dir", cfg.spool_dir, "--port", str(port), "--no-create-topics"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert single.returncode == 2, single.stderr[-2000:]
    assert "worker-0" in single.stderr and "worker-1" in single.stderr, single.stderr[-2000:]

    with ingest_process(cfg, port, bootstrap=cfg.kafka_bootstrap, log=log, extra=WORKERS):
        deadline = time.monotonic() + 60
        while metric(port, "inferlog_ingest_spool_records") != 0 or metric(port, "inferlog_ingest_kafka_up") != 1:
            assert time.monotonic() < deadline, "spools not drained after the restart"
            time.sleep(0.2)  # poll interval of a condition with a deadline
    got = acked_ids(consume(cfg, cfg.topic_events))
    assert got == collections.Counter({i: 1 for i in ids}), log.read_text()[-3000:]
