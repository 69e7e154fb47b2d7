"""``inferlog streams`` (run a join worker) and ``inferlog metadata set`` (write the model-metadata topic)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from typing import Any

from inferlog import config, logs
from inferlog.config import CommonConfig
from inferlog.errors import ConfigError
from inferlog.runtime import tune_gc
from inferlog.topics import TopicSpec, ensure_topics
from streams.config import StreamsConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "streams",
        help="run a Faust worker that joins inferlog.events into inferlog.records and inferlog.failures",
        description="Run one streams worker. Start more with the same --app-id to split the partitions; give "
        "each worker on a host its own --store-dir. Logs 'streams worker ready' once recovered.",
    )
    config.add_flags(p, StreamsConfig)
    p.set_defaults(handler=run_streams)

    m = sub.add_parser("metadata", help="model metadata used to enrich records (compacted inferlog.metadata)")
    msub = m.add_subparsers(dest="metadata_command", metavar="ACTION", required=True)
    s = msub.add_parser("set", help="set the metadata of one model: inferlog metadata set ns/isvc key=value ...")
    s.add_argument("model", help="namespace/isvc")
    s.add_argument("pairs", nargs="*", help="key=value; the given pairs replace the model's whole metadata")
    s.add_argument("--delete", action="store_true", help="delete the model's metadata (tombstone)")
    config.add_flags(s, CommonConfig)
    s.set_defaults(handler=run_metadata_set)


def streams_topic_specs(cfg: StreamsConfig) -> list[TopicSpec]:
    """Topics the worker needs; the expiry-marker topic is co-partitioned with the events topic."""
    from inferlog.topics import topic_specs

    return [*topic_specs(cfg), TopicSpec(cfg.topic_expiry, cfg.partitions, {"retention.ms": str(24 * 3600 * 1000)})]


def run_streams(args: argparse.Namespace) -> int:
    cfg = config.from_args(StreamsConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    return run_worker(cfg)


def run_worker(cfg: StreamsConfig) -> int:
    import logging

    from inferlog import health
    from schemas import AvroSerde
    from streams.app import MetadataTable, StreamsWorker, build_app

    log = logging.getLogger("inferlog.streams")
    log.info("starting streams worker", extra={"settings": config.redacted(cfg)})
    ensure_topics(cfg, streams_topic_specs(cfg))
    record_serde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_records, "inference_record")
    failure_serde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_failures, "failure_signal")
    record_serde.register()
    failure_serde.register()
    meta = MetadataTable(cfg)
    meta.load()
    os.makedirs(cfg.store_dir, exist_ok=True)
    app = build_app(cfg, record_serde, failure_serde, meta)
    if cfg.metrics_port:
        probe = LivenessProbe(app, stale_after_s=max(10.0, 5 * cfg.state_flush_interval_s))
        health.serve(cfg.metrics_port, alive=probe.alive, ready=probe.ready)
    tune_gc()  # Faust's stream buffers hold many live objects: ~10 % of the event-loop CPU per pair (bench/streams)
    worker = StreamsWorker(app, loglevel=cfg.log_level.upper(), override_logging=False, quiet=True)
    start_watchdog(app, worker.loop, cfg.startup_timeout_s)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code in (None, 0):
            log.info("streams worker stopped cleanly")
        raise
    return 0  # pragma: no cover (execute_from_commandline exits)


STARTUP_STALLED = 75  # EX_TEMPFAIL: try again


def start_watchdog(app: Any, loop: asyncio.AbstractEventLoop, timeout_s: float) -> threading.Thread:
    """Exit the process with :data:`STARTUP_STALLED` if the worker neither got a partition assignment nor became
    ready within ``timeout_s``. Faust 0.15 sometimes stalls during start-up before it subscribes (about once in
    six starts under load: the event loop idles after "Recovery: Starting...", the group stays empty); a fresh
    process starts normally, so the supervisor (Kubernetes, ``inferlog run``, the tests) restarts it. Table
    recovery after the assignment is not limited. The thread only reads flags that the app sets in its own
    event loop: touching Faust's objects from another thread (even ``app.tables``) makes every start stall."""
    import logging

    log = logging.getLogger("inferlog.streams")

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if getattr(app, "streams_assigned", False) or getattr(app, "streams_ready", False):
                return
            time.sleep(0.5)
        log.error(
            "start-up stalled: no partition assignment; exiting so that the worker is restarted",
            extra={"timeout_s": timeout_s, "exit_code": STARTUP_STALLED, "pending": _pending_work(loop)},
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(STARTUP_STALLED)

    thread = threading.Thread(target=watch, name="startup-watchdog", daemon=True)
    thread.start()
    return thread


def _pending_work(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Where the event loop's tasks wait (collected in the loop itself), or the threads' stacks if it is blocked."""
    import traceback

    done = threading.Event()
    out: list[str] = []

    def collect() -> None:
        try:
            for task in asyncio.all_tasks(loop):
                frames = task.get_stack(limit=8)
                where = " <- ".join(
                    f"{f.f_code.co_name}@{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"
                    for f in reversed(frames)
                )
                out.append(f"{task.get_name()}: {where}")
        finally:
            done.set()

    try:
        loop.call_soon_threadsafe(collect)
    except RuntimeError:
        return ["event loop closed"]
    if done.wait(5.0):
        return sorted(out)
    frames = sys._current_frames()
    return ["event loop blocked"] + [
        f"thread {tid}: "
        + " <- ".join(
            f"{fs.name}@{os.path.basename(fs.filename)}:{fs.lineno}"
            for fs in reversed(traceback.extract_stack(frame)[-10:])
        )
        for tid, frame in frames.items()
    ]


class LivenessProbe:
    """/healthz and /readyz of a streams worker.

    alive: the event loop turns (a timer refreshes a timestamp; a loop blocked for ``stale_after_s`` fails);
    ready: table recovery has completed, the worker is running and holds partitions (the point where it logs
    "streams worker ready"; false again while a rebalance recovers).
    """

    def __init__(self, app: Any, stale_after_s: float) -> None:
        import time

        self.app = app
        self.stale_after_s = stale_after_s
        self.beat = time.monotonic()

        @app.timer(interval=1.0)
        async def heartbeat() -> None:
            self.beat = time.monotonic()

    def alive(self) -> bool:
        import time

        return time.monotonic() - self.beat < self.stale_after_s

    def ready(self) -> bool:
        recovery = self.app.tables.recovery
        return bool(
            getattr(self.app, "streams_ready", False)  # set by StreamsWorker where it logs "streams worker ready"
            and self.app.state == "running"
            and recovery.completed.is_set()
            and not self.app.rebalancing
        )


def run_metadata_set(args: argparse.Namespace) -> int:
    import json

    from confluent_kafka import Producer

    from inferlog.kafka import producer_config

    cfg = config.from_args(CommonConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    if args.model.count("/") != 1 or not all(args.model.split("/")):
        raise ConfigError(f"model must be namespace/isvc, got {args.model!r}")
    values = {}
    for item in args.pairs:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"{item!r} is not of the form key=value")
        values[key] = value
    if args.delete and values:
        raise ConfigError("--delete takes no key=value pairs")
    ensure_topics(cfg, [TopicSpec(cfg.topic_metadata, 1, {"cleanup.policy": "compact"})])
    producer = Producer(producer_config(cfg))
    payload = None if args.delete else json.dumps(values, sort_keys=True).encode()
    producer.produce(cfg.topic_metadata, key=args.model.encode(), value=payload)
    if producer.flush(30) != 0:
        print("metadata not delivered within 30 s", file=sys.stderr)
        return 1
    print(f"{args.model}: {'deleted' if args.delete else values}")
    return 0
