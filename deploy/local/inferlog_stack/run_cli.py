"""``inferlog run``: the main job. Start the local real stack and the whole pipeline (ingest, a streams
worker, every registered sink) as child processes, print where to point ``logger.url`` and how to look at the results,
and with ``--demo`` drive realistic KServe traffic through it and print the per-model reconciliation."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core import config, logs
from core.errors import InferlogError
from core.topics import ensure_topics
from inferlog.stats import reconcile, render_table, sink_configs
from inferlog_stack.manager import StackConfig, start
from sinks.registry import specs


class RunError(InferlogError):
    """A pipeline process failed to start or died."""


# Faster event-time settings for the demo, so that orphans expire and files are cut within seconds.
DEMO_ENV = {
    "INFERLOG_PAIR_TIMEOUT_S": "5",
    "INFERLOG_LLM_PAIR_TIMEOUT_S": "5",  # so that the demo's slow unannotated LLM calls expire and get corrected
    "INFERLOG_IDLE_TIMEOUT_S": "3",
    "INFERLOG_IDLE_CHECK_INTERVAL_S": "1",
    "INFERLOG_TICK_INTERVAL_S": "2",
    "INFERLOG_FLUSH_SPAN_S": "5",
}


@dataclass
class Child:
    name: str
    args: list[str]
    ready_check: Callable[[Child], bool]
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inferlog.cli", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: local real stack + ingest + streams + every sink (--demo: drive traffic, reconcile)",
        description="Start the local stack and the whole pipeline on this machine. Logs of each process go to "
        "<stack dir>/run/. Ctrl-C (or SIGTERM) stops the pipeline gracefully; the stack keeps running "
        "(`inferlog stack stop`).",
    )
    p.add_argument("--demo", action="store_true", help="send realistic KServe traffic and print the reconciliation")
    p.add_argument("--demo-count", type=int, default=2000, help="inferences the demo simulates (default 2000)")
    p.add_argument("--demo-rate", type=float, default=400.0, help="demo events per second (default 400)")
    p.add_argument("--demo-slow", type=int, default=6, help="slow streamed LLM calls in the demo (default 6)")
    p.add_argument("--once", action="store_true", help="with --demo: stop the pipeline after the reconciliation")
    p.add_argument("--settle-timeout", type=float, default=120.0, help="seconds to wait for the counts to balance")
    p.add_argument("--ingest-port", type=int, default=8080, help="port of the ingest (default 8080)")
    p.add_argument("--console-port", type=int, default=8090, help="port of the web console (default 8090; 0: none)")
    p.add_argument(
        "--metrics-port-base",
        type=int,
        default=9102,
        help="metrics ports of streams and of each sink: this port and the next ones (default 9102)",
    )
    p.add_argument(
        "--pipeline-id",
        default="inferlog",
        help="names the streams app (<id>-streams) and the sinks' consumer groups (<id>-sink-s3, ...)",
    )
    p.add_argument("--no-stack", action="store_true", help="do not start the local stack (use the configured servers)")
    config.add_flags(p, StackConfig)
    p.set_defaults(handler=run)


def _ready_at(url: str) -> Callable[[Child], bool]:
    return lambda _child: _http_ok(url)


def _children(cfg: StackConfig, args: argparse.Namespace, env: dict[str, str]) -> list[Child]:
    run_dir = cfg.dir / "run" / args.pipeline_id
    port, mport = args.ingest_port, args.metrics_port_base
    pid = args.pipeline_id
    return [
        Child(
            "ingest",
            ["ingest", "--host", "127.0.0.1", "--port", str(port), "--spool-dir", str(run_dir / "spool")],
            lambda c: _http_ok(f"http://127.0.0.1:{port}/readyz"),
            run_dir / "ingest.log",
            env,
        ),
        Child(
            "streams",
            [
                "streams",
                "--app-id",
                f"{pid}-streams",
                "--store-dir",
                str(run_dir / "streams-state"),
                "--metrics-port",
                str(mport),
            ],
            lambda c: _http_ok(f"http://127.0.0.1:{mport}/readyz"),
            run_dir / "streams.log",
            env,
        ),
        *(
            Child(
                f"sink-{spec.name}",
                ["sink", spec.name, "--sink-group", f"{pid}-sink-{spec.name}", "--sink-metrics-port", str(mport + n)],
                _ready_at(f"http://127.0.0.1:{mport + n}/readyz"),
                run_dir / f"sink-{spec.name}.log",
                env,
            )
            for n, spec in enumerate(specs(), start=1)
        ),
        *(
            [
                Child(
                    "console",
                    ["console", "--console-port", str(args.console_port)],
                    _ready_at(f"http://127.0.0.1:{args.console_port}/healthz"),
                    run_dir / "console.log",
                    env,
                )
            ]
            if args.console_port
            else []
        ),
    ]


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(StackConfig, args)
    logs.setup(cfg.log_level, "text")
    t0 = time.monotonic()
    if not args.no_stack:
        print("starting the local stack (Kafka, SeaweedFS, OpenSearch, Apicurio) ...", flush=True)
        start(cfg)
    ensure_topics(cfg)
    env = dict(os.environ)
    env.update({k: str(v) for k, v in _settings_env(cfg).items()})
    run_dir = cfg.dir / "run" / args.pipeline_id
    # the lakehouse sink's catalog and tables belong to this pipeline, as its consumer groups do
    env.setdefault("INFERLOG_ICEBERG_CATALOG_URI", f"sqlite:///{run_dir / 'iceberg-catalog.db'}")
    env.setdefault("INFERLOG_ICEBERG_WAREHOUSE", f"s3://{cfg.s3_bucket}/iceberg/{args.pipeline_id}")
    if args.demo:
        for k, v in DEMO_ENV.items():
            env.setdefault(k, v)
    children = _children(cfg, args, env)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for child in children:
            child.start()
        _wait_ready(children, deadline_s=300)
        _banner(cfg, args, time.monotonic() - t0)
        status = 0
        if args.demo:
            status = _demo(cfg, args, env)
            if args.once:
                return status
        print("pipeline running; Ctrl-C to stop", flush=True)
        while not stopping:
            dead = [c.name for c in children if not c.alive()]
            if dead:
                raise RunError(f"{', '.join(dead)} exited; see {cfg.dir / 'run'}")
            time.sleep(1)  # the main job's idle loop, not synchronisation
        return status
    finally:
        print("stopping the pipeline ...", flush=True)
        for child in reversed(children):
            child.stop()


def _settings_env(cfg: StackConfig) -> dict[str, object]:
    """The common settings as INFERLOG_* variables, so every child sees the same addresses and topics."""
    import dataclasses

    from core.config import CommonConfig, env_name

    names = {f.name for f in dataclasses.fields(CommonConfig)}
    return {env_name(k): v for k, v in dataclasses.asdict(cfg).items() if k in names}


STARTUP_STALLED = 75  # a worker that stalled during start-up exits with this code to be restarted


def _wait_ready(children: list[Child], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    pending = list(children)
    restarts = 0
    while pending:
        for child in list(pending):
            if child.proc is not None and child.proc.poll() == STARTUP_STALLED and restarts < 6:
                restarts += 1
                print(f"  {child.name:<16} start-up stalled; restarting it", flush=True)
                child.start()
                continue
            if not child.alive():
                raise RunError(
                    f"{child.name} exited during start-up; last lines of {child.log_file}:\n"
                    + "\n".join(child.log_text().splitlines()[-20:])
                )
            if child.ready_check(child):
                pending.remove(child)
                print(f"  {child.name:<16} ready", flush=True)
        if pending and time.monotonic() > deadline:
            raise RunError(f"not ready within {deadline_s:.0f}s: {[c.name for c in pending]}")
        if pending:
            time.sleep(0.3)


def _banner(cfg: StackConfig, args: argparse.Namespace, took: float) -> None:
    url = f"http://127.0.0.1:{args.ingest_port}/"
    print(
        f"""
inferlog is running (ready in {took:.0f}s).

  Point KServe at the ingest:   spec.predictor.logger: {{mode: all, url: {url}}}
                                (in a cluster: http://inferlog-ingest.<namespace>.svc.cluster.local/)
  Ingest metrics:               {url}metrics
  Web console:                  {f"http://127.0.0.1:{args.console_port}/" if args.console_port else "(off)"}
  Follow joined records:        .venv/bin/inferlog tail
  Follow failed requests:       .venv/bin/inferlog tail --failures
  Reconcile counts per model:   .venv/bin/inferlog stats
  Search:                       curl '{cfg.opensearch_url}/inferlog-records-*/_search?q=status:request_only'
  Analytics over the archive:   .venv/bin/python examples/analytics_duckdb.py
  Logs of the pipeline:         {cfg.dir / "run"}/
""",
        flush=True,
    )


def _demo(cfg: StackConfig, args: argparse.Namespace, env: dict[str, str]) -> int:
    from ingest.demo import send_demo

    since_ms = int(time.time() * 1000) - 1000
    url = f"http://127.0.0.1:{args.ingest_port}/"
    summary = asyncio.run(
        send_demo(url, args.demo_count, args.demo_rate, slow=args.demo_slow, progress=sys.stderr.isatty())
    )
    print(
        f"demo sent {summary.inferences} inferences as {summary.events} events in {summary.seconds:.1f}s "
        f"({summary.missing_responses} without a response, {summary.responses_first} response-first, "
        f"{summary.retried} retried after a failed attempt, {summary.slow} slow streamed LLM calls: half "
        "annotated inferlog.io/pair-timeout=2m, half corrected after their 5 s timeout); "
        f"answers: {summary.statuses}",
        flush=True,
    )
    print(
        f"waiting up to {args.settle_timeout:.0f}s for pairs to join or expire and the sinks to flush ...", flush=True
    )
    deadline = time.monotonic() + args.settle_timeout
    sinks = sink_configs(env)  # as the children see them
    rec = reconcile(cfg, since_ms=since_ms, sinks=sinks)
    while not rec.balanced and time.monotonic() < deadline:
        time.sleep(2)  # polling the stores with a deadline
        rec = reconcile(cfg, since_ms=since_ms, sinks=sinks)
    print(render_table(rec), flush=True)
    return 0 if rec.balanced else 1
