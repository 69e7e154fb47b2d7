"""Helpers for the sinks tests: valid Avro records, producing them (and ticks), sink settings, a TCP proxy."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, Producer, TopicPartition

from core.config import CommonConfig, env_name
from core.kafka import consumer_config, producer_config
from core.retry import wait_until
from core.topics import TopicSpec, ensure_topics
from schemas import AvroSerde
from schemas.wire import TICK_HEADER
from sinks.config import SinkConfig
from sinks.framework import Sink, SinkRunner, run_until

C = TypeVar("C", bound=SinkConfig)

T0_US = 1_714_550_400_000_000  # 2024-05-01T08:00:00Z


def make_record(i: int, *, ns: str = "team-a", isvc: str = "iris", t_us: int | None = None, **extra: Any) -> dict:
    t = T0_US + i * 1000 if t_us is None else t_us
    ce_id = f"id-{i:06d}"
    body = b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}'
    rec: dict[str, Any] = {
        "join_key": f"{ns}/{isvc}/predictor/{ce_id}",
        "ce_id": ce_id,
        "ce_source": f"http://localhost:9081/{isvc}",
        "namespace": ns,
        "isvc": isvc,
        "component": "predictor",
        "endpoint": "",
        "status": "complete",
        "protocol": "v1",
        "model_name": isvc,
        "model_version": "1",
        "event_time": t,
        "latency_ms": 3.5,
        "instance_count": 1,
        "request": {
            "ce_type": "org.kubeflow.serving.inference.request",
            "time": t,
            "recorded_time": None,
            "content_type": "application/json",
            "size": len(body),
            "body": body,
            "dataref": None,
            "sha256": None,
            "extensions": {"endpoint": ""},
            "partition": 0,
            "offset": i,
        },
        "response": {
            "ce_type": "org.kubeflow.serving.inference.response",
            "time": t + 3500,
            "recorded_time": None,
            "content_type": "application/json",
            "size": 20,
            "body": b'{"predictions": [1]}',
            "dataref": None,
            "sha256": None,
            "extensions": {},
            "partition": 0,
            "offset": i + 1,
        },
        "metadata": {"x-user": ["u1"]},
        "annotations": {"team": "a"},
        "trace_id": None,
        "span_id": None,
        "request_id": f"req-{i}",
        "model_metadata": {"framework": "sklearn"},
        "error": None,
        "llm_prompt": None,
        "llm_completion": None,
        "llm_finish_reason": None,
        "llm_choices": None,
        "llm_prompt_tokens": None,
        "llm_completion_tokens": None,
        "llm_total_tokens": None,
        "ordinal": 1,
        "revision": 1,
    }
    rec.update(extra)
    return rec


def make_failure(i: int, *, ns: str = "team-a", isvc: str = "iris", kind: str = "response_missing") -> dict:
    ce_id = f"id-{i:06d}"
    return {
        "join_key": f"{ns}/{isvc}/predictor/{ce_id}",
        "ce_id": ce_id,
        "namespace": ns,
        "isvc": isvc,
        "component": "predictor",
        "kind": kind,
        "reason": "no response within 30s",
        "model_name": isvc,
        "model_version": None,
        "protocol": "v1",
        "event_time": T0_US + i * 1000,
        "detected_time": T0_US + i * 1000 + 30_000_000,
        "trace_id": None,
        "request_id": None,
        "metadata": {},
        "annotations": {},
        "partition": 0,
        "offset": i,
        "ordinal": 1,
        "retracts": None,
    }


def sink_config(stack: CommonConfig, unique: str, cls: type[C], **overrides: Any) -> C:
    """A ``cls`` (a sink's settings) on ``stack`` with topics, group, bucket, index prefix and Iceberg catalog of
    its own (each only where ``cls`` has the setting)."""
    base = {f.name: getattr(stack, f.name) for f in dataclasses.fields(CommonConfig)}
    base.update(
        topic_records=f"t.records.{unique}",
        topic_failures=f"t.failures.{unique}",
        topic_deadletter=f"t.deadletter.{unique}",
        sink_group=f"g-{unique}",
        s3_bucket=f"sinks-{unique}",
        index_prefix=f"t-{unique}",
        index_replicas=0,
        iceberg_catalog_uri=f"sqlite:///{tempfile.gettempdir()}/inferlog-tests/{unique}/catalog.db",
        partitions=4,
    )
    base.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}
    cfg = cls(**{k: v for k, v in base.items() if k in names})
    cfg.validate()
    return cfg


def create_topics(cfg: SinkConfig) -> None:
    ensure_topics(
        cfg,
        [
            TopicSpec(cfg.topic_records, cfg.partitions),
            TopicSpec(cfg.topic_failures, cfg.partitions),
            TopicSpec(cfg.topic_deadletter, 1),
        ],
    )


def env_for(cfg: SinkConfig) -> dict[str, str]:
    """The process environment that makes ``inferlog sink …`` load exactly ``cfg``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERLOG_")}
    for f in dataclasses.fields(cfg):
        env[env_name(f.name)] = str(getattr(cfg, f.name))
    return env


def produce(cfg: SinkConfig, topic: str, schema: str, values: list[dict], *, raw: list[bytes] | None = None) -> None:
    """Encode ``values`` with the registry serde and produce them keyed by join key (murmur2)."""
    serde = AvroSerde.for_topic(cfg.registry_url, topic, schema)
    producer = Producer(producer_config(cfg, **{"linger.ms": 20, "batch.size": 1_000_000}))
    for v in values:
        producer.produce(topic, key=v["join_key"].encode(), value=serde.encode(v))
        producer.poll(0)
    for r in raw or []:
        producer.produce(topic, key=b"raw", value=r)
    assert producer.flush(60) == 0


def produce_ticks(cfg: SinkConfig, topic: str, t_us: int, partitions: int | None = None) -> None:
    producer = Producer(producer_config(cfg))
    for p in range(partitions or cfg.partitions):
        producer.produce(topic, key=None, value=b"", partition=p, headers=[(TICK_HEADER, str(t_us).encode())])
    assert producer.flush(30) == 0


def group_caught_up(cfg: SinkConfig, group: str, topics: list[str]) -> bool:
    """True when the group's committed offset equals the high watermark on every partition."""
    c = Consumer(consumer_config(cfg, group))
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(cfg.partitions)]
        committed = c.committed(tps, timeout=10)
        for tp in committed:
            _, high = c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            if high > 0 and tp.offset != high:
                return False
        return True
    finally:
        c.close()


def read_all(cfg: SinkConfig, topic: str, expect: int, timeout_s: float = 30) -> list[Any]:
    """Read ``expect`` messages of ``topic`` from the beginning (a fresh group)."""
    import time
    import uuid

    c = Consumer(consumer_config(cfg, f"reader-{uuid.uuid4().hex[:8]}"))
    c.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        c.close()
    return out


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can be stopped (dropping every connection) and started again on
    the same port: a stand-in for a server that goes away, without touching the shared server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


INFERLOG = str(Path(sys.executable).parent / "inferlog")
HOUR_US = 3600 * 10**6


def kill_loop(
    cfg: SinkConfig,
    procs: list[subprocess.Popen[bytes]],
    log_path: Path,
    argv: list[str],
    wrote_more: Callable[[], bool] | None = None,
) -> None:
    """Produce 20k records in four rounds; in each of the first three, kill -9 the sink at a random moment
    after it got its partitions (and, with ``wrote_more``, after that says the sink wrote something since the
    last kill: a store whose writes take long would otherwise only ever be killed before its first), and start
    it again. Then let it finish and stop it with SIGTERM.

    A killing round's records are produced only once the sink has its partitions, in slices spread over about a
    second: the kill (within 0.6 s) then lands while records are still arriving, which a fast sink on a quiet
    machine would otherwise have caught up with already (the kill would test nothing)."""
    total, rounds = 20_000, 4
    rng = random.Random()
    log = log_path.open("ab")

    def spawn() -> subprocess.Popen[bytes]:
        p = subprocess.Popen([INFERLOG, *argv], env=env_for(cfg), stdout=log, stderr=log)
        procs.append(p)
        return p

    def assigned_count() -> int:
        return log_path.read_text().count('"msg": "assigned"')

    proc = spawn()
    mid_flow = 0
    per_round = total // rounds
    for n in range(rounds):
        batch = [make_record(i) for i in range(n * per_round, (n + 1) * per_round)]
        killing = n < rounds - 1
        feeder = threading.Thread(target=_feed, args=(cfg, batch, 10 if killing else 1))
        if killing:
            wait_until(lambda n=n: assigned_count() > n, timeout_s=60, what="sink assigned")  # type: ignore[misc]
        feeder.start()
        if killing:
            if wrote_more is not None:
                wait_until(wrote_more, timeout_s=60, what="a write since the last kill")
            deadline = time.monotonic() + rng.uniform(0.05, 0.6)  # early enough to find work in flight
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            proc.kill()
            proc.wait(10)
            mid_flow += not group_caught_up(cfg, cfg.sink_group, [cfg.topic_records])
            proc = spawn()
        feeder.join()
    produce_ticks(cfg, cfg.topic_records, T0_US + 3 * HOUR_US)
    wait_until(lambda: group_caught_up(cfg, cfg.sink_group, [cfg.topic_records]), timeout_s=120, what="caught up")
    proc.terminate()
    assert proc.wait(30) == 0, log_path.read_text()[-3000:]
    assert mid_flow >= 2  # most kills hit the sink with work in flight


def _feed(cfg: SinkConfig, batch: list[dict], slices: int) -> None:
    """Produce ``batch`` in ``slices`` parts, 0.1 s apart (the traffic's pacing, not a synchronisation)."""
    size = -(-len(batch) // slices)
    for k in range(0, len(batch), size):
        produce(cfg, cfg.topic_records, "inference_record", batch[k : k + size])
        if k + size < len(batch):
            time.sleep(0.1)


def run_caught_up(cfg: SinkConfig, sink: Sink, *, timeout_s: float = 60, join_s: float = 60) -> SinkRunner:
    """Run ``sink`` in a thread until its group has committed everything, then stop it; the runner's errors fail."""
    runner = SinkRunner(cfg, sink)
    stop = threading.Event()
    errors: list[BaseException] = []
    thread = run_until(runner, stop, errors.append)
    try:
        wait_until(
            lambda: bool(errors) or group_caught_up(cfg, runner.group, cfg.topics()),
            timeout_s=timeout_s,
            interval_s=0.5,
            what="sink caught up",
        )
    finally:
        stop.set()
        thread.join(join_s)
    assert not errors, errors
    return runner
