"""A small HTTP endpoint for worker processes (streams, sinks): ``/healthz``, ``/readyz`` and ``/metrics``.

Kubernetes probes it with ``httpGet``; Prometheus scrapes ``/metrics``. Liveness and readiness come from
callbacks of the worker, so a stuck loop fails ``/healthz`` and a worker that has not joined its group yet
fails ``/readyz``. Runs in a daemon thread; binds all interfaces (probes come from the kubelet).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Check = Callable[[], bool]


def serve(port: int, *, alive: Check, ready: Check, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start serving on ``host:port`` in a daemon thread and return the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                ok = _safe(alive)
                self._send(200 if ok else 503, b"ok\n" if ok else b"not alive\n")
            elif path == "/readyz":
                ok = _safe(ready)
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found: try /healthz, /readyz or /metrics\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"health:{port}", daemon=True).start()
    return server


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
