"""Helpers for the streams tests and benchmark: synthetic KServe events, a topic reader, a worker subprocess."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.events import REQUEST_TYPE, RESPONSE_TYPE, LoggedEvent, to_kafka
from core.kafka import base_config, producer_config
from core.topics import ensure_topics
from streams.cli import STARTUP_STALLED, streams_topic_specs
from streams.config import StreamsConfig
from tests.support import kafka_wait

BASE_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def rfc3339(us: int) -> str:
    dt = datetime.fromtimestamp(us // 1_000_000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def event(
    ce_id: str,
    kind: str,
    time_us: int,
    body: bytes = b"",
    *,
    namespace: str = "default",
    isvc: str = "sklearn-iris",
    component: str = "predictor",
    metadata: str | None = "{}",
    annotations: str | None = None,
    source: str = "http://localhost:9081/",
) -> LoggedEvent:
    return LoggedEvent(
        id=ce_id,
        source=source,
        type=REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        time=rfc3339(time_us),
        datacontenttype="application/json",
        namespace=namespace,
        isvc=isvc,
        component=component,
        metadata=metadata,
        annotations=annotations,
        data=body,
    )


def pair(ce_id: str, time_us: int, latency_us: int = 20_000, **kw: Any) -> tuple[LoggedEvent, LoggedEvent]:
    req = event(ce_id, "request", time_us, b'{"instances": [[6.8, 2.8, 4.8, 1.4]]}', **kw)
    resp = event(ce_id, "response", time_us + latency_us, b'{"predictions": [1]}', **kw)
    return req, resp


def streams_config(base: Any, unique: str, **overrides: Any) -> StreamsConfig:
    """A StreamsConfig with per-test topics, app id and store dir, from the stack's CommonConfig."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(StreamsConfig) if hasattr(base, f.name)}
    cfg = StreamsConfig(**fields)
    return dataclasses.replace(
        cfg,
        topic_events=f"t.events.{unique}",
        topic_records=f"t.records.{unique}",
        topic_failures=f"t.failures.{unique}",
        topic_metadata=f"t.metadata.{unique}",
        topic_deadletter=f"t.deadletter.{unique}",
        app_id=f"t-streams-{unique}",
        store_dir=tempfile.mkdtemp(prefix=f"streams-{unique}-"),
        log_format="json",
        **overrides,
    )


def create_topics(cfg: StreamsConfig) -> None:
    ensure_topics(cfg, streams_topic_specs(cfg))


def replay_config(cfg: StreamsConfig, tag: str) -> StreamsConfig:
    """The same events read by a new app id into output topics and a store of its own (topics created), to
    check that a replay writes byte-identical records."""
    replay = dataclasses.replace(
        cfg,
        app_id=f"{cfg.app_id}-replay-{tag}",
        topic_records=f"{cfg.topic_records}.replay.{tag}",
        topic_failures=f"{cfg.topic_failures}.replay.{tag}",
        topic_deadletter=f"{cfg.topic_deadletter}.replay.{tag}",
        store_dir=tempfile.mkdtemp(prefix="streams-replay-"),
    )
    create_topics(replay)
    return replay


def produce(
    cfg: StreamsConfig,
    events: Iterable[LoggedEvent | tuple[Any, bytes | None, bytes, list[tuple[str, bytes]]]],
    *,
    topic: str | None = None,
) -> int:
    """Produce events (or raw (key?, headers) tuples as ``(topic_key, key, value, headers)``) with the
    murmur2 partitioner; returns the count."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(cfg, **{"linger.ms": 20, "batch.num.messages": 10000}))
    n = 0
    for ev in events:
        if isinstance(ev, LoggedEvent):
            key, headers, value = to_kafka(ev)
            producer.produce(topic or cfg.topic_events, key=key, value=value, headers=list(headers))
        else:
            _, rkey, value, headers = ev
            producer.produce(topic or cfg.topic_events, key=rkey, value=value, headers=list(headers))
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("events not delivered")
    return n


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def read_all(
    cfg: StreamsConfig,
    topic: str,
    *,
    until: Callable[[list[Rec]], bool],
    timeout_s: float = 60.0,
    explain: Callable[[list[Rec]], str] | None = None,
) -> list[Rec]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or raise TimeoutError (with
    ``explain(records)`` appended: what is missing, the worker's log). To see *every* record (duplicates too),
    wait for the producing stage to catch up and use :func:`read_to_end`."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **base_config(cfg),
            "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[Rec] = []
        deadline = time.monotonic() + timeout_s
        while not until(out):
            if time.monotonic() >= deadline:
                why = f"\n{explain(out)}" if explain is not None else ""
                raise TimeoutError(f"{topic}: condition not met within {timeout_s}s ({len(out)} records){why}")
            out += [_rec(msg) for msg in consumer.consume(10000, 0.2) if not msg.error()]
        return out
    finally:
        consumer.close()


def _rec(msg: Any) -> Rec:
    headers = {str(k): v if isinstance(v, bytes) else (v or "").encode() for k, v in list(msg.headers() or [])}
    return Rec(int(msg.partition() or 0), int(msg.offset() or 0), msg.key(), msg.value() or b"", headers)


def read_to_end(cfg: StreamsConfig, topic: str, timeout_s: float = 60.0) -> list[Rec]:
    """Every record of ``topic`` up to its high watermarks now (see :func:`tests.support.kafka_wait.read_to_end`)."""
    return [_rec(msg) for msg in kafka_wait.read_to_end(base_config(cfg), topic, timeout_s)]


def wait_caught_up(cfg: StreamsConfig, timeout_s: float = 60.0) -> float:
    """Wait until the worker's group has committed every event and expiry marker produced so far; as the worker
    flushes its outputs before it commits, its records and failures are then all in their topics."""
    return kafka_wait.wait_for_group_caught_up(
        cfg.kafka_bootstrap, cfg.app_id, [cfg.topic_events, cfg.topic_expiry], timeout_s
    )


def env_for(cfg: StreamsConfig) -> dict[str, str]:
    env = dict(os.environ)
    for f in dataclasses.fields(cfg):
        env[f"INFERLOG_{f.name.upper()}"] = str(getattr(cfg, f.name))
    return env


class StartupStalled(RuntimeError):
    """The worker's start-up watchdog fired (exit :data:`streams.cli.STARTUP_STALLED`). A supervisor would
    restart it; a test must not, or the stall it met would pass unseen."""


class WorkerProcess:
    """``inferlog streams`` as a subprocess whose log goes to a file."""

    def __init__(self, cfg: StreamsConfig, name: str = "w") -> None:
        self.cfg = cfg
        self.name = name
        self.log_path = Path(cfg.store_dir) / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._spawn()

    def _spawn(self) -> None:
        exe = str(Path(sys.executable).with_name("inferlog"))
        self.proc = subprocess.Popen(
            [exe, "streams"], env=env_for(self.cfg), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait for "streams worker ready". A worker whose start-up stalled (exit 75, see
        ``streams.cli.start_watchdog``) is not restarted: :class:`StartupStalled` fails the test that met it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "streams worker ready" in self.log_text():
                return
            if self.proc.poll() == STARTUP_STALLED:
                raise StartupStalled(
                    f"worker {self.name!r} stalled during start-up (exit {STARTUP_STALLED} after "
                    f"startup_timeout_s={self.cfg.startup_timeout_s:g}); not restarted. Its log:\n"
                    + self.log_text()[-4000:]
                )
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            time.sleep(0.2)  # poll interval of a condition with a deadline
        raise TimeoutError(f"worker not ready within {timeout_s}s:\n{self.log_text()[-4000:]}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


@contextmanager
def running_worker(cfg: StreamsConfig, name: str = "w", *, wait: bool = True) -> Iterator[WorkerProcess]:
    w = WorkerProcess(cfg, name)
    try:
        if wait:
            w.wait_ready()
        yield w
    finally:
        w.stop()
