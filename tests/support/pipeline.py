"""A whole pipeline for end-to-end tests: ``inferlog run --no-stack`` on topics, indices and a catalog of its own,
and the waits that say when every stage has caught up (conditions with deadlines, never quiet periods)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from inferlog_stack.run_cli import DEMO_ENV

from core.config import CommonConfig
from inferlog.stats import Reconciliation, reconcile, sink_configs
from tests.support.kafka_wait import wait_for_group_caught_up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (the metrics ports of streams and of every sink)."""
    for _ in range(100):
        base = _free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


@dataclasses.dataclass
class Pipeline:
    cfg: CommonConfig
    url: str
    index_prefix: str
    archive_prefix: str
    env: dict[str, str]
    log: Path
    pipeline_id: str
    console_url: str  # the web console inferlog run started

    @property
    def streams_group(self) -> str:
        return f"{self.pipeline_id}-streams"  # the Faust app id (inferlog run --pipeline-id)

    @property
    def sink_groups(self) -> list[str]:
        """The consumer group (``--sink-group <pipeline id>-sink-<name>``) of every sink ``inferlog run`` started:
        each printed "sink-<name> ready" before "pipeline running"."""
        names = re.findall(r"^\s*sink-(\S+)\s+ready$", self.log.read_text(errors="replace"), re.MULTILINE)
        assert {"s3", "opensearch"} <= set(names), self.log_tail()
        return [f"{self.pipeline_id}-sink-{name}" for name in names]

    def reconcile(self, since_ms: int) -> Reconciliation:
        return reconcile(self.cfg, since_ms=since_ms, sinks=sink_configs(self.env))  # as inferlog run's sinks

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def running_pipeline(stack: CommonConfig, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    """``inferlog run --no-stack`` (ingest, streams, every sink) on topics, indices and a catalog of its own,
    with the demo's fast event-time settings; stopped with SIGTERM at the end."""
    cfg = dataclasses.replace(
        stack,
        topic_events=f"e2e.{unique}.events",
        topic_records=f"e2e.{unique}.records",
        topic_failures=f"e2e.{unique}.failures",
        topic_metadata=f"e2e.{unique}.metadata",
        topic_deadletter=f"e2e.{unique}.deadletter",
        partitions=4,
    )
    index_prefix = f"e2e{unique}"
    mport = _free_ports(8)  # streams, then one per sink
    port, console_port = _free_port(), _free_port()
    while mport <= port < mport + 8 or mport <= console_port < mport + 8 or port == console_port:
        port, console_port = _free_port(), _free_port()
    env = dict(os.environ)
    env.update(DEMO_ENV)
    env.update(
        {
            "INFERLOG_TOPIC_EVENTS": cfg.topic_events,
            "INFERLOG_TOPIC_RECORDS": cfg.topic_records,
            "INFERLOG_TOPIC_FAILURES": cfg.topic_failures,
            "INFERLOG_TOPIC_METADATA": cfg.topic_metadata,
            "INFERLOG_TOPIC_DEADLETTER": cfg.topic_deadletter,
            "INFERLOG_PARTITIONS": "4",
            "INFERLOG_INDEX_PREFIX": index_prefix,
            "INFERLOG_INDEX_REPLICAS": "0",
            "INFERLOG_STACK_DIR": os.environ.get("INFERLOG_STACK_DIR", "/var/tmp/inferlog-stack"),
            "INFERLOG_ICEBERG_CATALOG_URI": f"sqlite:///{tmp_path / 'iceberg-catalog.db'}",
            "INFERLOG_ICEBERG_WAREHOUSE": f"s3://{stack.s3_bucket}/iceberg/e2e-{unique}",
        }
    )
    log = tmp_path / "run.log"
    pipeline_id = f"e2e-{unique}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferlog.cli", "run", "--no-stack", "--ingest-port", str(port),
             "--metrics-port-base", str(mport), "--pipeline-id", pipeline_id, "--console-port", str(console_port)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "pipeline running" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "pipeline not ready:\n" + log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)  # poll interval of a condition with a deadline
        # `inferlog run` restarts a worker whose start-up stalled, as a supervisor would; here that is a failure
        # to report, not to hide.
        assert "start-up stalled" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        archive_prefix = f"archive/{cfg.topic_records}"
        yield Pipeline(
            cfg,
            f"http://127.0.0.1:{port}/",
            index_prefix,
            archive_prefix,
            env,
            log,
            pipeline_id,
            f"http://127.0.0.1:{console_port}",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_caught_up(p: Pipeline, timeout_s: float) -> dict[str, float]:
    """Wait in pipeline order until every stage has committed all its input produced so far: the streams app
    on the events (and its expiry markers), then each sink on the records and failures, which the streams app
    produced before it committed. Each stage commits only after its outputs are durable (Faust flushes its
    producer first; a sink commits after the write), so then the stores hold everything. Returns the seconds
    each group took."""
    bootstrap, cfg = p.cfg.kafka_bootstrap, p.cfg
    took = {
        p.streams_group: wait_for_group_caught_up(
            bootstrap, p.streams_group, [cfg.topic_events, f"{p.streams_group}-expiry"], timeout_s
        )
    }
    for group in p.sink_groups:
        took[group] = wait_for_group_caught_up(bootstrap, group, [cfg.topic_records, cfg.topic_failures], timeout_s)
    # What the OpenSearch sink wrote and committed is searchable only after a refresh: ask for one instead of
    # waiting for the periodic one.
    req = urllib.request.Request(f"{cfg.opensearch_url}/{p.index_prefix}-*/_refresh", method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    return took


def wait_processed(p: Pipeline, since_ms: int, events: int, timeout_s: float = 150) -> Reconciliation:
    """Wait until every one of the ``events`` sent has its record (joined, or expired into a request-only
    record: nothing pending, which is false until the streams app has produced them), then until every stage
    has caught up; return the reconciliation read after that (not retried: it must balance)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rec = p.reconcile(since_ms)
        seen = sum(c.events for c in rec.models.values())
        pending = sum(c.pending for c in rec.models.values())
        if seen == events and pending == 0:
            break
        assert time.monotonic() < deadline, json.dumps(rec.as_json(), indent=1) + p.log_tail()
        time.sleep(1)  # poll interval of a condition with a deadline
    took = wait_caught_up(p, max(10.0, deadline - time.monotonic()))
    print(f"caught up: { {g: round(s, 1) for g, s in took.items()} }")
    return p.reconcile(since_ms)
