"""The search sink's client (opensearch-py underneath): basic auth or SigV4, the NDJSON body sent as built, no
retries of its own, and answers classified retriable or permanent. Against a local stub HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypedDict, Unpack

import pytest
from opensearchpy import Urllib3AWSV4SignerAuth

from core.config import load
from sinks.config import SinkConfig
from sinks.errors import WriteError
from sinks.opensearch_client import BulkClient, http_auth


@dataclass
class Stub:
    url: str
    status: int = 200
    answer: bytes = b'{"errors":false}'
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = Stub("")

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            state.seen.append(
                (self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n))
            )
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class _Auth(TypedDict, total=False):
    """The settings these tests vary (the rest as loaded from an empty environment)."""

    opensearch_user: str
    opensearch_password: str
    opensearch_aws_region: str
    opensearch_aws_service: str


def _cfg(url: str, **kw: Unpack[_Auth]) -> SinkConfig:
    return replace(load(SinkConfig, env={}), opensearch_url=url, **kw)


def test_bulk_sends_the_ndjson_bytes_as_built_with_basic_auth(stub: Stub) -> None:
    client = BulkClient(_cfg(stub.url, opensearch_user="admin", opensearch_password="pw"))
    body = b'{"index":{"_index":"i","_id":"a"}}\n{"x":1}\n'
    assert client.bulk(body) == {"errors": False}
    method, path, headers, sent = stub.seen[0]
    assert (method, sent) == ("POST", body)
    assert path.startswith("/_bulk?filter_path=errors")
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["authorization"] == "Basic YWRtaW46cHc="
    client.close()


def test_sigv4_is_selected_when_the_region_is_set(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    cfg = _cfg(stub.url, opensearch_aws_region="eu-west-1", opensearch_aws_service="aoss", opensearch_user="ignored")
    auth = http_auth(cfg)
    assert isinstance(auth, Urllib3AWSV4SignerAuth)
    assert (auth.signer.region, auth.service) == ("eu-west-1", "aoss")
    BulkClient(cfg).bulk(b'{"index":{}}\n{}\n')
    headers = stub.seen[0][2]
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/aoss/aws4_request" in headers["authorization"]
    assert "x-amz-content-sha256" in headers


def test_basic_auth_or_none_without_a_region() -> None:
    assert http_auth(_cfg("http://x", opensearch_user="u", opensearch_password="p")) == ("u", "p")
    assert http_auth(_cfg("http://x")) is None


@pytest.mark.parametrize(("status", "retriable"), [(429, True), (500, True), (503, True), (400, False), (403, False)])
def test_answers_are_classified_and_not_retried(stub: Stub, status: int, retriable: bool) -> None:
    stub.status, stub.answer = status, json.dumps({"error": {"type": "x", "reason": "why"}}).encode()
    with pytest.raises(WriteError, match=f"HTTP {status}") as info:
        BulkClient(_cfg(stub.url)).call("PUT", "/_index_template/t", b"{}")
    assert info.value.retriable is retriable
    assert "why" in str(info.value)
    assert len(stub.seen) == 1  # the sink's retry layer decides, not the client


def test_no_connection_is_retriable() -> None:
    with pytest.raises(WriteError, match="unreachable") as info:
        BulkClient(_cfg("http://127.0.0.1:1"), timeout_s=2).call("GET", "/")
    assert info.value.retriable
