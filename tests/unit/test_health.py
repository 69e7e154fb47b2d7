"""The worker health endpoint answers probes from the worker's own checks."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from core import health


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_endpoints_follow_the_checks() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = {"alive": True, "ready": False}
    server = health.serve(port, alive=lambda: state["alive"], ready=lambda: state["ready"], host="127.0.0.1")
    try:
        assert _get(port, "/healthz")[0] == 200
        assert _get(port, "/readyz")[0] == 503
        state["ready"] = True
        assert _get(port, "/readyz")[0] == 200
        state["alive"] = False
        assert _get(port, "/healthz")[0] == 503
        status, body = _get(port, "/metrics")
        assert status == 200 and b"python_info" in body
        assert _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
