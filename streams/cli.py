"""``inferlog streams`` (run a join worker) and ``inferlog metadata set`` (write the model-metadata topic)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from typing import Any

from core import config, logs
from core.config import CommonConfig
from core.errors import ConfigError
from core.runtime import tune_gc
from core.topics import TopicSpec, ensure_topics
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
    from core.topics import topic_specs

    return [*topic_specs(cfg), TopicSpec(cfg.topic_expiry, cfg.partitions, {"retention.ms": str(24 * 3600 * 1000)})]


def run_streams(args: argparse.Namespace) -> int:
    cfg = config.from_args(StreamsConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    return run_worker(cfg)


def run_worker(cfg: StreamsConfig) -> int:
    import logging

    from core import health
    from schemas import AvroSerde
    from streams.app import MetadataTable, StreamsWorker, build_app

    log = logging.getLogger("inferlog.streams")
    log.info("starting streams worker", extra={"settings": config.redacted(cfg)})
    ensure_topics(cfg, streams_topic_specs(cfg))
    record_serde = AvroSerde.for_topic(
        cfg.registry_url, cfg.topic_records, "inference_record", registry_auth=cfg.registry_auth
    )
    failure_serde = AvroSerde.for_topic(
        cfg.registry_url, cfg.topic_failures, "failure_signal", registry_auth=cfg.registry_auth
    )
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
    ready within ``timeout_s``, logging where the event loop's tasks wait; the supervisor (Kubernetes,
    ``inferlog run``, the tests) restarts it. A safety net: the stalls seen in session 1 came from probe threads
    touching Faust objects (see :class:`LivenessProbe`) and are fixed. Table recovery after the assignment is not
    limited. The thread only reads flags that the app sets in its own event loop: touching Faust's objects from
    another thread (even ``app.tables``) stalls the start."""
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


def _await_chain(coro: Any, depth: int = 40) -> list[str]:
    """Innermost first: where a coroutine waits, following what it awaits (a task's own stack shows only the
    outermost frame)."""
    chain: list[str] = []
    start = coro
    while coro is not None and depth > 0:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}@{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
        depth -= 1
    return list(reversed(chain)) or [repr(start)]


def _pending_work(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Where the event loop's tasks wait (collected in the loop itself), or the threads' stacks if it is blocked."""
    import traceback

    done = threading.Event()
    out: list[str] = []

    def collect() -> None:
        try:
            for task in asyncio.all_tasks(loop):
                out.append(" <- ".join(_await_chain(task.get_coro())))
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
    """/healthz and /readyz of a streams worker, answered from the health server's thread.

    alive: the event loop turns (a timer refreshes a timestamp; a loop blocked for ``stale_after_s`` fails);
    ready: table recovery has completed, the worker is running and holds partitions (the point where it logs
    "streams worker ready"; false again while a rebalance recovers).

    Both are plain values that the timer computes *in the event loop*; the probe thread only reads them. Reading
    Faust's objects from the probe's thread (``app.tables`` is created lazily, with asyncio primitives) made
    the worker stall during start-up whenever a readiness probe came early: the "Faust stall" of session 1,
    seen under ``inferlog run`` and Kubernetes probes only.
    """

    def __init__(self, app: Any, stale_after_s: float) -> None:
        self.app = app
        self.stale_after_s = stale_after_s
        self.beat = time.monotonic()
        self.is_ready = False

        @app.timer(interval=1.0)
        async def heartbeat() -> None:
            self.beat = time.monotonic()
            self.is_ready = self.compute_ready()

    def compute_ready(self) -> bool:
        """In the event loop only."""
        return bool(
            getattr(self.app, "streams_ready", False)  # set by StreamsWorker where it logs "streams worker ready"
            and self.app.state == "running"
            and self.app.tables.recovery.completed.is_set()
            and not self.app.rebalancing
        )

    def alive(self) -> bool:
        return time.monotonic() - self.beat < self.stale_after_s

    def ready(self) -> bool:
        return self.is_ready


def run_metadata_set(args: argparse.Namespace) -> int:
    import json

    from confluent_kafka import Producer

    from core.kafka import producer_config

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
