"""A streams worker that has not joined its group within startup_timeout_s exits with code 75, so that its
supervisor restarts it (Faust 0.15 occasionally stalls before subscribing)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from inferlog.config import CommonConfig, load
from streams.cli import STARTUP_STALLED
from streams.config import StreamsConfig
from streams.testing import env_for

pytestmark = pytest.mark.integration


def test_a_stalled_start_exits_with_the_restart_code(stack: CommonConfig, unique: str, tmp_path: Path) -> None:
    base = load(StreamsConfig)
    cfg = dataclasses.replace(
        base,
        kafka_bootstrap=stack.kafka_bootstrap,
        app_id=f"wd-{unique}",
        topic_events=f"wd.{unique}.events",
        topic_records=f"wd.{unique}.records",
        topic_failures=f"wd.{unique}.failures",
        topic_metadata=f"wd.{unique}.metadata",
        topic_deadletter=f"wd.{unique}.deadletter",
        partitions=2,
        store_dir=str(tmp_path / "state"),
        startup_timeout_s=0.2,  # far shorter than any start: the watchdog must fire
        log_format="text",
    )
    exe = str(Path(sys.executable).with_name("inferlog"))
    res = subprocess.run([exe, "streams"], env=env_for(cfg), capture_output=True, text=True, timeout=120)
    assert res.returncode == STARTUP_STALLED, res.stderr[-2000:]
    assert "start-up stalled" in res.stderr
