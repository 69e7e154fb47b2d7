"""``inferlog ingest`` over HTTPS as KServe's agent uses it (a new TLS connection per event, TLS 1.2+), into the
real broker, with a certificate rotated under it (files replaced, as cert-manager does)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from core.config import CommonConfig
from core.retry import wait_until
from tests.integration.test_ingest_contract import consume, ingest_config
from tests.support import ingest_examples as examples
from tests.support.certs import CA

pytestmark = pytest.mark.integration
INFERLOG = str(Path(sys.executable).parent / "inferlog")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, ctx: ssl.SSLContext, ce_id: str) -> int:
    """One event on a connection of its own, as the agent sends it."""
    headers = {k: (ce_id if k == "Ce-Id" else v) for k, v in examples.A_REQUEST.headers}
    req = urllib.request.Request(f"https://localhost:{port}/token/tok-a", data=b'{"instances": [[1]]}', headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _served_serial(port: int, ctx: ssl.SSLContext) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_https_with_a_token_in_the_url_and_a_rotated_certificate(
    stack: CommonConfig, unique: str, tmp_path: Path
) -> None:
    cfg = ingest_config(stack, unique, tmp_path)
    ca = CA()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = ca.issue("ec")
    first.write(cert, key)
    port = _port()
    env = {
        **os.environ,
        "INFERLOG_AUTH_TOKENS": f"{dict(examples.A_REQUEST.headers)['Ce-Namespace']}=tok-a",
        "INFERLOG_TLS_RELOAD_INTERVAL_S": "0.2",
    }
    cmd = [INFERLOG, "ingest", "--host", "127.0.0.1", "--port", str(port), "--spool-dir", cfg.spool_dir,
           "--kafka-bootstrap", cfg.kafka_bootstrap, "--topic-events", cfg.topic_events,
           "--topic-deadletter", cfg.topic_deadletter, "--no-create-topics",
           "--tls-cert-file", str(cert), "--tls-key-file", str(key)]  # fmt: skip
    ctx = ssl.create_default_context(cadata=ca.pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    log = tmp_path / "ingest.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: _alive(port, ctx), timeout_s=30, what="ingest serving https")
        assert _served_serial(port, ctx) == first.serial
        assert [_post(port, ctx, f"tls-{i}") for i in range(20)] == [202] * 20

        second = ca.issue("rsa")
        second.write(cert, key)
        wait_until(lambda: _served_serial(port, ctx) == second.serial, timeout_s=20, what="rotated certificate served")
        assert [_post(port, ctx, f"tls-r-{i}") for i in range(5)] == [202] * 5
        plain = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(plain, timeout=5)  # no plain HTTP on the TLS port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    got = sorted(dict(m.headers())["ce_id"].decode() for m in consume(cfg, cfg.topic_events))
    assert got == sorted([f"tls-{i}" for i in range(20)] + [f"tls-r-{i}" for i in range(5)])
    text = log.read_text()
    assert "tok-a" not in text and "certificate reloaded" in text


def _alive(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"https://localhost:{port}/healthz", context=ctx, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
