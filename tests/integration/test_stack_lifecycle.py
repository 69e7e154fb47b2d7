"""`inferlog stack` lifecycle on a private SeaweedFS (alternate ports, own state dir): idempotent start,
status, and a stop that leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inferlog_stack.process import port_open

pytestmark = pytest.mark.integration


def _inferlog(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferlog.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def test_stack_start_is_idempotent_and_stop_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "stack"
    env = dict(os.environ)
    env.update(
        {
            "INFERLOG_STACK_DIR": str(state),
            "INFERLOG_S3_ENDPOINT": "http://127.0.0.1:21333",  # below the ephemeral range, and so is port + 10000
            "INFERLOG_SEAWEED_PORT_BASE": "21340",
            "INFERLOG_LOG_FORMAT": "text",
        }
    )
    try:
        first = _inferlog(env, "stack", "start", "--only", "s3", "--json")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout.strip().splitlines()[-1])["ready_after_s"]["s3"] > 0

        second = _inferlog(env, "stack", "start", "--only", "s3", "--json")
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout.strip().splitlines()[-1])["ready_after_s"]["s3"] == 0.0  # reused

        status = _inferlog(env, "stack", "status", "--json")
        rows = {r["server"]: r for r in json.loads(status.stdout)}
        assert rows["s3"]["state"] == "running" and rows["s3"]["address"] == "http://127.0.0.1:21333"
        assert _processes_mentioning(str(state))
    finally:
        stopped = _inferlog(env, "stack", "stop", "--only", "s3")
    assert stopped.returncode == 0, stopped.stderr
    assert _processes_mentioning(str(state)) == []
    assert not port_open("127.0.0.1", 21333)


def test_port_taken_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        for port in range(21400, 21500):  # below the ephemeral range, and so is port + 10000
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        sock.listen()
        env = dict(os.environ)
        env.update({"INFERLOG_STACK_DIR": str(tmp_path), "INFERLOG_S3_ENDPOINT": f"http://127.0.0.1:{port}",
                    "INFERLOG_SEAWEED_PORT_BASE": "21340"})  # fmt: skip
        res = _inferlog(env, "stack", "start", "--only", "s3")
    assert res.returncode == 2, res.stderr
    assert f"port(s) [{port}]" in res.stderr and "taken by another process" in res.stderr
