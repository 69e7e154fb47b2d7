"""``inferlog sink <name>``: run one registered sink (:mod:`sinks.registry`) until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from core import config, logs
from core.runtime import tune_gc
from sinks.config import SinkConfig
from sinks.framework import GC_GEN0, Sink, SinkRunner
from sinks.registry import SinkSpec, specs

log = logging.getLogger("sinks.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = ", ".join(s.name for s in specs())
    p = sub.add_parser("sink", help=f"run a sink connector: records and failures → {names}")
    kinds = p.add_subparsers(dest="sink_kind", metavar="SINK", required=True)
    for spec in specs():
        one = kinds.add_parser(spec.name, help=spec.help)
        config.add_flags(one, spec.config)
        one.set_defaults(handler=lambda args, spec=spec: run(spec, args))


def run(spec: SinkSpec, args: argparse.Namespace) -> int:
    cfg = config.from_args(spec.config, args)
    logs.setup(cfg.log_level, cfg.log_format)
    return _run(cfg, spec.sink(cfg))


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
    tune_gc(GC_GEN0)
    runner.run(stop)
    return 0
