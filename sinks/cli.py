"""``inferlog sink s3`` and ``inferlog sink opensearch``: run a sink until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from core import config, logs
from core.runtime import tune_gc
from sinks.config import SinkConfig
from sinks.framework import Sink, SinkRunner

log = logging.getLogger("sinks.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sink", help="run a sink connector (records and failures → S3 or OpenSearch)")
    kinds = p.add_subparsers(dest="sink_kind", metavar="SINK", required=True)
    s3 = kinds.add_parser(
        "s3", help="archive to object storage as Parquet/Avro/JSON Lines, Hive-partitioned, exactly once in effect"
    )
    config.add_flags(s3, SinkConfig)
    s3.set_defaults(handler=run_s3)
    search = kinds.add_parser("opensearch", help="index into OpenSearch, _id = join key, one index per namespace/day")
    config.add_flags(search, SinkConfig)
    search.set_defaults(handler=run_opensearch)


def _run(cfg: SinkConfig, sink: Sink) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner = SinkRunner(cfg, sink, max_in_flight=cfg.sink_max_in_flight)
    if cfg.sink_metrics_port:
        from core import health

        health.serve(
            cfg.sink_metrics_port, alive=runner.alive, ready=lambda: runner.ready.is_set() and not stop.is_set()
        )
    log.info("sink config", extra={"config": config.redacted(cfg)})
    tune_gc()
    runner.run(stop)
    return 0


def run_s3(args: argparse.Namespace) -> int:
    from sinks.s3 import S3Sink

    cfg = config.from_args(SinkConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    return _run(cfg, S3Sink(cfg))


def run_opensearch(args: argparse.Namespace) -> int:
    from sinks.opensearch import OpenSearchSink

    cfg = config.from_args(SinkConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    return _run(cfg, OpenSearchSink(cfg))
