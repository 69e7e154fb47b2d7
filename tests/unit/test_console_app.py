"""The console app against a fake search backend: auth like the ingest's (401 / 403, a namespace's token sees
that namespace only), the token kept out of the address bar, read-only, security headers, escaping."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from core.config import CommonConfig
from inferlog.console.app import COOKIE, Console, build_app
from inferlog.console.config import ConsoleConfig
from ingest.policy import Auth
from sinks.opensearch import OpenSearchSinkConfig


def console(tokens: dict[str, str]) -> tuple[Console, list[dict[str, Any]]]:
    c = Console(ConsoleConfig(), OpenSearchSinkConfig(), Auth(tokens), sinks=[])
    asked: list[dict[str, Any]] = []

    async def search(dataset: str, body_: dict[str, Any]) -> dict[str, Any]:  # as Console.search's parameters
        asked.append(body_)
        if "ids" in body_.get("query", {}):
            doc = {"namespace": "team-a", "isvc": "m", "status": "complete", "join_key": "team-a/m/predictor/1",
                   "ce_id": "1", "protocol": "v1", "request_body": '"<b>bold</b>"', "response_body": None}  # fmt: skip
            return {"hits": {"total": {"value": 1}, "hits": [{"_id": "team-a/m/predictor/1", "_source": doc}]}}
        return {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {"models": {"buckets": []}}}

    c.search = search  # type: ignore[method-assign]
    return c, asked


async def test_tokens_scope_the_console_to_their_namespace() -> None:
    c, asked = console({"tok-a": "team-a", "tok-all": "*"})
    async with TestClient(TestServer(build_app(c))) as client:
        assert (await client.get("/")).status == 401
        assert (await client.get("/", headers={"Authorization": "Bearer nope"})).status == 401
        resp = await client.get("/?range=15m&token=tok-a", allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/?range=15m"  # the token leaves the URL
        assert resp.cookies[COOKIE].value == "tok-a" and resp.cookies[COOKIE]["httponly"]
        page = await client.get("/?range=15m")  # the cookie now
        assert page.status == 200
        assert {"terms": {"namespace": ["team-a"]}} in asked[-1]["query"]["bool"]["filter"]
        assert (await client.get("/model/team-b/m")).status == 403
        assert (await client.get("/record?id=team-a/m/predictor/1")).status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/model/team-b/m", headers={"Authorization": "Bearer tok-all"})).status == 200


async def test_read_only_escaped_and_with_security_headers() -> None:
    c, _ = console({})
    async with TestClient(TestServer(build_app(c))) as client:
        assert (await client.post("/")).status == 405
        resp = await client.get("/record?id=team-a/m/predictor/1")
        html = await resp.text()
        assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert (await client.get("/?range=5y")).status == 400
        assert (await client.get("/model/team-a/m?status=bogus")).status == 400
        js = await client.get("/static/plotly.min.js")
        assert js.status == 200 and len(await js.read()) > 1_000_000  # the library itself, from the wheel
        assert (await client.get("/static/../app.py")).status == 404


def test_the_console_settings_are_common_config() -> None:
    assert issubclass(ConsoleConfig, CommonConfig) and ConsoleConfig().console_port == 8090
