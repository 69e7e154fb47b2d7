"""Start-up of a streams worker: readiness probes from the first moment must not stall it, and a worker that has
not joined its group within startup_timeout_s still exits with code 75 so that its supervisor restarts it."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.config import CommonConfig, load
from streams.cli import STARTUP_STALLED
from streams.config import StreamsConfig
from tests.support.streams_harness import StartupStalled, WorkerProcess, env_for

pytestmark = pytest.mark.integration


def _config(stack: CommonConfig, unique: str, tmp_path: Path, **overrides: object) -> StreamsConfig:
    return dataclasses.replace(
        load(StreamsConfig),
        kafka_bootstrap=stack.kafka_bootstrap,
        app_id=f"wd-{unique}",
        topic_events=f"wd.{unique}.events",
        topic_records=f"wd.{unique}.records",
        topic_failures=f"wd.{unique}.failures",
        topic_metadata=f"wd.{unique}.metadata",
        topic_deadletter=f"wd.{unique}.deadletter",
        partitions=2,
        store_dir=str(tmp_path / "state"),
        log_format="text",
        **overrides,  # type: ignore[arg-type]
    )


def test_a_stalled_start_exits_with_the_restart_code(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    # far shorter than any start: the watchdog must fire
    cfg = _config(stack, unique, tmp_path, startup_timeout_s=0.2)
    exe = str(Path(sys.executable).with_name("inferlog"))
    res = subprocess.run([exe, "streams"], env=env_for(cfg), capture_output=True, text=True, timeout=120)
    assert res.returncode == STARTUP_STALLED, res.stderr[-2000:]
    assert "start-up stalled" in res.stderr


def test_the_harness_fails_a_stalled_start_instead_of_restarting_it(
    stack: CommonConfig, unique: str, tmp_path: Path
) -> None:
    cfg = _config(stack, unique, tmp_path, startup_timeout_s=0.2)
    (tmp_path / "state").mkdir()
    worker = WorkerProcess(cfg, "stalls")
    try:
        with pytest.raises(StartupStalled, match=r"(?s)worker 'stalls' stalled during start-up.*start-up stalled"):
            worker.wait_ready(timeout_s=120)
        assert worker.proc.returncode == STARTUP_STALLED
        assert worker.log_text().count("start-up stalled") == 1  # one start, not restarted
    finally:
        worker.stop()


def test_readiness_probes_from_the_first_moment_do_not_stall_the_start(
    stack: CommonConfig, unique: str, tmp_path: Path
) -> None:
    # A readiness probe that reads Faust's (lazily created) table manager stalls the worker before it
    # subscribes (6 of 6 starts when /readyz is polled during start-up). Poll as a kubelet under load would.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(stack, unique, tmp_path, metrics_port=port, startup_timeout_s=30.0)
    (tmp_path / "state").mkdir()
    worker = WorkerProcess(cfg, "probed")
    try:
        deadline = time.monotonic() + 90
        ready = False
        while not ready and time.monotonic() < deadline and worker.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    ready = resp.status == 200
            except OSError:  # not listening yet, or 503 until ready
                time.sleep(0.02)  # probe cadence, not synchronisation
        log = worker.log_text()
        assert ready, f"not ready (exit {worker.proc.poll()}):\n{log[-3000:]}"
        assert "start-up stalled" not in log
    finally:
        worker.stop()
