"""Start, check and stop the local stack, idempotently, each server waited on with a deadline."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import CommonConfig, setting
from inferlog_stack.errors import StackError
from inferlog_stack.process import alive, port_open, read_pid, spawn, terminate
from inferlog_stack.servers import (
    LOCAL_DIR,
    TARGET,
    KafkaServer,
    OpenSearchServer,
    RegistryServer,
    SeaweedServer,
    Server,
)

log = logging.getLogger("inferlog.stack")

SERVER_NAMES = ("kafka", "s3", "opensearch", "registry")


@dataclass(frozen=True)
class StackConfig(CommonConfig):
    """Settings of the local stack. Addresses come from the common settings (kafka_bootstrap, ...)."""

    stack_dir: str = setting("/var/tmp/inferlog-stack", "State, data and logs of the local stack")
    stack_timeout_s: float = setting(240.0, "Deadline for each server to become ready, seconds")
    kafka_controller_port: int = setting(19093, "Local Kafka KRaft controller port")
    kafka_heap: str = setting("768m", "Local Kafka max heap")
    seaweed_port_base: int = setting(19333, "First of 4 consecutive ports for SeaweedFS internals")
    opensearch_transport_port: int = setting(19300, "Local OpenSearch transport port")
    opensearch_heap: str = setting("512m", "Local OpenSearch heap")
    opensearch_user_name: str = setting("inferlog-os", "Non-root user that runs OpenSearch when started as root")
    registry_heap: str = setting("384m", "Local Apicurio Registry max heap")
    registry_management_port: int = setting(18082, "Local Apicurio management (health/metrics) port")

    @property
    def dir(self) -> Path:
        return Path(self.stack_dir)


def servers(cfg: StackConfig, names: tuple[str, ...] = SERVER_NAMES) -> list[Server]:
    table: dict[str, type[Server]] = {
        "kafka": KafkaServer,
        "s3": SeaweedServer,
        "opensearch": OpenSearchServer,
        "registry": RegistryServer,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise StackError(f"unknown server(s) {unknown}; choose from {list(table)}")
    return [table[n](cfg) for n in names]


def fetch_artifacts() -> None:
    """Resolve the Java servers' jars and archives from Maven Central, once per pom version."""
    pom = LOCAL_DIR / "pom.xml"
    stamp = TARGET / ".pom-sha256"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    needed = [TARGET / "kafka-libs", TARGET / "archives" / "opensearch.zip", TARGET / "archives" / "apicurio.tar.gz"]
    if stamp.exists() and stamp.read_text() == digest and all(p.exists() for p in needed):
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven not found: install it (apt-get install -y maven) to fetch Kafka, OpenSearch, Apicurio")
    log.info("fetching server artifacts from Maven Central", extra={"pom": str(pom)})
    shutil.rmtree(TARGET, ignore_errors=True)
    res = subprocess.run([mvn, "-B", "-q", "-f", str(pom), "package"], capture_output=True, text=True)
    if res.returncode != 0:
        raise StackError(f"mvn failed to fetch the stack artifacts:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    stamp.write_text(digest)


def _state(server: Server) -> tuple[str, int | None]:
    pid = read_pid(server.pid_file)
    try:
        ok = server.ready()
    except Exception:
        ok = False
    if ok:
        return ("running" if pid else "running (not started by this stack)"), pid
    if pid:
        return "starting", pid
    return "stopped", None


def status(cfg: StackConfig) -> list[dict[str, Any]]:
    rows = []
    for s in servers(cfg):
        state, pid = _state(s)
        rows.append({"server": s.name, "address": s.address(), "state": state, "pid": pid, "log": str(s.log_file)})
    return rows


def start(cfg: StackConfig, names: tuple[str, ...] = SERVER_NAMES) -> dict[str, float]:
    """Start the servers that are not running and wait for all to be ready. Returns seconds per server."""
    fetch_artifacts()
    cfg.dir.mkdir(parents=True, exist_ok=True)
    cfg.dir.chmod(0o755)
    todo = servers(cfg, names)
    started: dict[str, float] = {}
    t0 = time.monotonic()
    launched: list[Server] = []
    for s in todo:
        state, pid = _state(s)
        if state.startswith("running"):
            started[s.name] = 0.0
            continue
        if pid is None:
            taken = [p for p in s.ports() if port_open("127.0.0.1", p)]
            if taken:
                raise StackError(
                    f"{s.name}: port(s) {taken} on 127.0.0.1 are taken by another process; free them "
                    f"or change the address (inferlog stack --help lists the settings)"
                )
            s.prepare()
            spawn(s.command(), log_file=s.log_file, pid_file=s.pid_file, env=s.env(), cwd=s.home)
            log.info("started", extra={"server": s.name, "address": s.address()})
        launched.append(s)
    deadline = t0 + cfg.stack_timeout_s
    pending = list(launched)
    while pending:
        for s in list(pending):
            state, pid = _state(s)
            if state.startswith("running"):
                s.after_ready()
                started[s.name] = round(time.monotonic() - t0, 1)
                pending.remove(s)
                log.info("ready", extra={"server": s.name, "seconds": started[s.name]})
            elif pid is None or not alive(pid):
                raise StackError(f"{s.name} exited during start-up; see {s.log_file}:\n{_tail(s.log_file)}")
        if pending and time.monotonic() > deadline:
            names_left = [s.name for s in pending]
            raise StackError(f"{names_left} not ready within {cfg.stack_timeout_s:.0f}s; see {cfg.dir}/logs")
        if pending:
            time.sleep(0.5)
    return started


def stop(cfg: StackConfig, names: tuple[str, ...] = SERVER_NAMES) -> list[str]:
    stopped = []
    for s in reversed(servers(cfg, names)):
        pid = read_pid(s.pid_file)
        if pid:
            terminate(pid, timeout_s=45)
            stopped.append(s.name)
        s.pid_file.unlink(missing_ok=True)
    return stopped


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
