"""``inferlog ingest --workers N``: N ingest processes serving one port (``SO_REUSEPORT``), under a supervisor.

One Python process spends a core on aiohttp, parsing and the producer calls, so on a node with more cores one
ingest process is the limit. Each worker is a whole ingest (its own Kafka producer, its own spool directory
``<spool_dir>/worker-<i>`` with ``spool_max_bytes / N`` of the budget), and the kernel spreads new connections
over them. The supervisor binds nothing itself; it

- starts the workers (``spawn``: a fresh interpreter, no inherited threads or librdkafka state);
- restarts a worker that died (``kill -9``, OOM) with the same index, so that its spool is drained by its
  successor: what the dead worker acknowledged was in Kafka or fsynced in that directory, nothing is lost; the
  connections it had open are cut, and the requests on them were never acknowledged;
- forwards SIGTERM/SIGINT to every worker (each finishes its in-flight requests and flushes Kafka, as one
  ingest does) and exits when they have;
- takes the workers with it when it is killed itself (``kill -9``, OOM): each worker asks the kernel for a
  SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``) and then stops as on any SIGTERM, instead of
  serving on with nobody to restart or stop it;
- gives up (exit 1) when a worker fails during start-up three times in a row (a port in use, bad settings):
  restarting would only hide it.

Metrics: a scrape of ``/metrics`` reaches one worker at random, so the workers write their metrics to
``<spool_dir>/metrics`` with prometheus_client's multiprocess mode and every worker answers with the sum over
all of them (see :mod:`ingest.metrics` for how each gauge is combined).

Spool directories left by another worker count (``worker-<j>`` with ``j >= N``, or the top-level spool of
``--workers 1``) would never be drained: the supervisor refuses to start while one holds records, naming it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from core import logs
from core.errors import ConfigError
from ingest.config import IngestConfig

log = logging.getLogger("ingest.workers")

METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
STARTUP_GRACE_S = 5.0  # a worker that dies sooner than this after its start failed to start
MAX_STARTUP_FAILURES = 3
PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal to get when the parent dies


def spool_dir(cfg: IngestConfig, index: int) -> Path:
    """The spool directory of worker ``index`` (``--workers 1``: the spool directory itself)."""
    return Path(cfg.spool_dir) if cfg.workers == 1 else Path(cfg.spool_dir) / f"worker-{index}"


def worker_config(cfg: IngestConfig, index: int) -> IngestConfig:
    return dataclasses.replace(
        cfg,
        spool_dir=str(spool_dir(cfg, index)),
        spool_max_bytes=max(1, cfg.spool_max_bytes // cfg.workers),
    )


def _holds_records(directory: Path) -> bool:
    if not any(directory.glob("*.seg")):
        return False
    from ingest.spool import SpoolLog

    spool = SpoolLog(directory, max_bytes=1 << 62, segment_bytes=1 << 30)
    try:
        return spool.records > 0
    finally:
        spool.close()


def orphaned_spools(cfg: IngestConfig) -> list[Path]:
    """Spool directories under ``spool_dir`` that hold records no worker of this layout would drain."""
    root = Path(cfg.spool_dir)
    if not root.is_dir():
        return []
    used = {spool_dir(cfg, i) for i in range(cfg.workers)}
    candidates = [root, *sorted(p for p in root.glob("worker-*") if p.is_dir())]
    return [p for p in candidates if p not in used and _holds_records(p)]


def refuse_orphaned_spools(cfg: IngestConfig) -> None:
    """Raise :class:`ConfigError` naming the spool directories this layout would never drain."""
    orphans = orphaned_spools(cfg)
    if orphans:
        raise ConfigError(
            f"spool directories hold events that no worker of --workers {cfg.workers} would deliver: "
            f"{', '.join(map(str, orphans))}; run the ingest with the worker count that wrote them until they are "
            "drained (inferlog_ingest_spool_records 0), then change it"
        )


def _stop_with(supervisor: int) -> None:
    """SIGTERM for this process when its parent dies (Linux only; elsewhere an orphan serves on)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("cannot ask to stop with the supervisor", extra={"errno": ctypes.get_errno()})
    if os.getppid() != supervisor:  # it died before the request: nobody would send the signal
        os.kill(os.getpid(), signal.SIGTERM)


def _run_worker(cfg: IngestConfig, index: int, supervisor: int) -> None:
    """A worker's entry point (in the spawned process)."""
    from ingest import loop
    from ingest.app import serve

    logs.setup(cfg.log_level, cfg.log_format)
    _stop_with(supervisor)
    loop.run(serve(cfg, reuse_port=True, worker=index))


class Supervisor:
    def __init__(self, cfg: IngestConfig) -> None:
        self.cfg = cfg
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, BaseProcess] = {}
        self.started: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.stopping = False
        self.metrics_dir = Path(cfg.spool_dir) / "metrics"

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(
            target=_run_worker,
            args=(worker_config(self.cfg, index), index, os.getpid()),
            name=f"ingest-worker-{index}",
        )
        proc.start()
        self.procs[index] = proc
        self.started[index] = time.monotonic()
        log.info("ingest worker started", extra={"worker": index, "pid": proc.pid})

    def _stop_all(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, sig)

    def run(self) -> int:
        # The multiprocess metrics directory must start empty: files of a previous run would be summed in.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        os.environ[METRICS_ENV] = str(self.metrics_dir)  # inherited by the spawned workers

        def on_signal(signum: int, _frame: object) -> None:
            if not self.stopping:
                log.info("stopping the ingest workers", extra={"signal": signal.Signals(signum).name})
            self.stopping = True
            self._stop_all()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("ingest supervisor starting workers", extra={"workers": self.cfg.workers, "port": self.cfg.port})
        for i in range(self.cfg.workers):
            self._start(i)
        deadline: float | None = None
        while self.procs:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.cfg.shutdown_timeout_s + 10.0
            if deadline is not None and time.monotonic() > deadline:
                log.error("ingest workers did not stop in time; killing them")
                self._stop_all(signal.SIGKILL)
                deadline = time.monotonic() + 10.0
            sentinels = {p.sentinel: i for i, p in self.procs.items()}
            for ready in wait(list(sentinels), timeout=1.0):
                index = sentinels[ready]  # type: ignore[index]
                if self._reap(index) is False:
                    self.stopping = True
                    self._stop_all()
        return 1 if any(n >= MAX_STARTUP_FAILURES for n in self.failures.values()) else 0

    def _reap(self, index: int) -> bool:
        """Handle the exit of worker ``index``; False when the supervisor must give up."""
        proc = self.procs.pop(index)
        proc.join()
        pid, code = proc.pid, proc.exitcode
        self._mark_dead(pid)
        if self.stopping:
            log.info("ingest worker stopped", extra={"worker": index, "pid": pid, "exitcode": code})
            return True
        early = time.monotonic() - self.started[index] < STARTUP_GRACE_S
        self.failures[index] = self.failures.get(index, 0) + 1 if early else 0
        if self.failures[index] >= MAX_STARTUP_FAILURES:
            log.error(
                "ingest worker fails at start-up; giving up",
                extra={"worker": index, "exitcode": code, "failures": self.failures[index]},
            )
            return False
        log.error("ingest worker died; restarting it", extra={"worker": index, "pid": pid, "exitcode": code})
        self._start(index)
        return True

    def _mark_dead(self, pid: int | None) -> None:
        if pid is None:
            return
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))


def supervise(cfg: IngestConfig) -> int:
    return Supervisor(cfg).run()
