"""The registry client against the local Apicurio registry (ccompat API) behind a proxy that demands basic
auth, as a secured registry (Confluent Cloud, a registry behind an ingress) does: the configured credentials
are sent, and wrong ones give a clear, permanent error."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.config import CommonConfig
from schemas.serde import AvroSerde, SchemaError, load_schema

pytestmark = pytest.mark.integration

GOOD = "reg-user:reg-pass"


@pytest.fixture
def secured(stack: CommonConfig) -> Iterator[str]:
    """The URL of a basic-auth proxy in front of the stack's registry."""
    upstream = stack.registry_url.rstrip("/")
    expected = "Basic " + base64.b64encode(GOOD.encode()).decode()

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Authorization") != expected:
                body = json.dumps({"error_code": 401, "message": "Unauthorized"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else None
            req = urllib.request.Request(upstream + self.path, data=data, method=self.command)
            if self.headers.get("Content-Type"):
                req.add_header("Content-Type", self.headers["Content-Type"])
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, payload = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _forward

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_configured_credentials_are_sent(secured: str, unique: str) -> None:
    serde = AvroSerde.for_topic(secured, f"t.auth.{unique}", "failure_signal", registry_auth=GOOD)
    schema_id = serde.register()
    data = serde.encode(_failure() | {"join_key": "x"})
    reader = AvroSerde.for_topic(secured, f"t.auth.{unique}", "failure_signal", registry_auth=GOOD)
    assert reader.decode(data)["join_key"] == "x"
    assert reader.registry.schema_by_id(schema_id)["name"].endswith("FailureSignal")


@pytest.mark.parametrize("auth", ["", "reg-user:wrong"])
def test_wrong_or_missing_credentials_are_a_clear_permanent_error(secured: str, unique: str, auth: str) -> None:
    serde = AvroSerde.for_topic(secured, f"t.auth.{unique}", "failure_signal", registry_auth=auth)
    with pytest.raises(SchemaError, match=r"HTTP 401 \(check INFERLOG_REGISTRY_AUTH\)") as info:
        serde.register()
    assert not info.value.retriable


def _failure() -> dict[str, object]:
    """A minimal valid FailureSignal (every field without a default)."""
    schema = json.loads(load_schema("failure_signal"))
    out: dict[str, object] = {}
    for f in schema["fields"]:
        if "default" in f:
            continue
        t = f["type"]
        out[f["name"]] = {"string": "s", "long": 0, "int": 0}.get(t if isinstance(t, str) else "", 0)
    return out
