"""The console's aiohttp application: read-only pages over OpenSearch and the reconciliation.

Pages: ``/`` (models overview), ``/model/<namespace>/<isvc>`` (charts, recent failures, a filtered and paged
table of records), ``/record?id=<record id>`` (both bodies side by side, metadata, coordinates, the replay
command), ``/record/body?id=…&side=…`` (a claim-checked body fetched from object storage, as text),
``/reconciliation`` (``inferlog stats``). Only ``GET``/``HEAD``; nothing changes data.

Payloads are untrusted: templates escape everything (Jinja2 autoescape, nothing marked safe), chart data is
embedded as JSON (``tojson`` escapes ``<``, ``>``, ``&``), a claim-checked body is served as ``text/plain``
with ``nosniff``, and a Content-Security-Policy allows scripts from the console itself only. Charts are
plotly.js from the installed ``plotly`` package: the console works without internet.

Auth, when the ingest's auth settings are set: a token (``Authorization: Bearer``, or ``?token=`` once, which
sets an HttpOnly cookie) or a trusted mesh identity; a namespace's token sees that namespace only.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jinja2
import orjson
from aiohttp import web

from core import s3 as core_s3
from core.errors import InferlogError
from inferlog.console import queries
from inferlog.console.bodies import body
from inferlog.console.config import ConsoleConfig
from inferlog.stats import COLUMNS, Reconciliation, reconcile
from ingest.errors import Forbidden, Unauthorized
from ingest.policy import Auth, Credentials
from sinks.config import SinkConfig
from sinks.opensearch import OpenSearchSinkConfig
from sinks.opensearch_client import BulkClient
from sinks.registry import SinkSpec

COOKIE = "inferlog_console_token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
STATIC = {"plotly.min.js": ("plotly", "package_data/plotly.min.js"), "console.js": None, "console.css": None}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Cached:
    at: float
    value: Reconciliation


class Console:
    def __init__(
        self,
        cfg: ConsoleConfig,
        search_cfg: OpenSearchSinkConfig,
        auth: Auth,
        sinks: list[tuple[SinkSpec, SinkConfig]],
    ) -> None:
        self.cfg = cfg
        self.search_cfg = search_cfg
        self.auth = auth
        self.sinks = sinks
        self.client = BulkClient(search_cfg, timeout_s=30.0)
        self._reconciled: dict[str | None, _Cached] = {}
        self._static: dict[str, bytes] = {}
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("inferlog.console", "templates"),
            autoescape=True,  # every template, whatever its name
            # a field an older document lacks renders empty (documents keep the fields of their writer's schema)
            undefined=jinja2.Undefined,
        )
        self.templates.filters["query"] = lambda params: urlencode({k: v for k, v in params.items() if v})
        # plain text (escaped by the template), unlike Jinja's tojson, which is markup for <script> blocks
        self.templates.filters["pretty"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()

    # -- plumbing --------------------------------------------------------------------------------------------
    async def search(self, dataset: str, body_: dict[str, Any]) -> dict[str, Any]:
        """``_search`` over the sink's daily indices of ``dataset`` (none yet: an empty answer)."""
        path = f"/{self.search_cfg.index_prefix}-{dataset}-*/_search?ignore_unavailable=true&allow_no_indices=true"
        result = await asyncio.to_thread(self.client.call, "POST", path, orjson.dumps(body_))
        return dict(result)

    def scope(self, request: web.Request) -> list[str] | None:
        """The namespaces the caller may read (``None``: all), or :class:`Unauthorized`."""
        if not self.auth.enabled:
            return None
        token = None
        scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
        elif request.query.get("token"):
            token = request.query["token"]
        elif request.cookies.get(COOKIE):
            token = request.cookies[COOKIE]
        namespace, _ = self.auth.identify(Credentials(token, request.headers.get("X-Forwarded-Client-Cert")))
        return None if namespace == "*" else [namespace]

    def page(self, template: str, http_status: int = 200, **context: Any) -> web.Response:
        html = self.templates.get_template(template).render(**context)
        return web.Response(text=html, status=http_status, content_type="text/html", charset="utf-8")

    # -- pages -----------------------------------------------------------------------------------------------
    async def overview(self, request: web.Request, scope: list[str] | None) -> web.StreamResponse:
        range_name, _, _ = queries.time_range(request.query.get("range"))
        result = await self.search("records", queries.overview(range_name, scope))
        buckets = result.get("aggregations", {}).get("models", {}).get("buckets", [])
        models = [_model_row(b["key"][0], b["key"][1], b) for b in buckets]
        models.sort(key=lambda m: (m["namespace"], m["isvc"]))
        return self.page("overview.html", models=models, range=range_name, ranges=list(queries.RANGES))

    async def model(self, request: web.Request, scope: list[str] | None) -> web.StreamResponse:
        namespace, isvc = request.match_info["namespace"], request.match_info["isvc"]
        if scope is not None and namespace not in scope:
            raise Forbidden(f"this token may read namespace {scope[0]!r}, not {namespace!r}")
        range_name, _, _ = queries.time_range(request.query.get("range"))
        flt = queries.RecordFilter.parse(dict(request.query))
        totals, records, failures = await asyncio.gather(
            self.search("records", queries.model(namespace, isvc, range_name)),
            self.search("records", queries.records(namespace, isvc, range_name, flt)),
            self.search("failures", queries.failures(namespace, isvc, range_name)),
        )
        row = _model_row(namespace, isvc, {**totals.get("aggregations", {}), "doc_count": _total(totals)})
        hits = [{"id": h["_id"], **h["_source"]} for h in records.get("hits", {}).get("hits", [])]
        total = _total(records)
        params = {"range": range_name, "status": flt.status, "protocol": flt.protocol, "q": flt.text}
        last_page = max(0, (total - 1) // queries.PAGE_SIZE)
        return self.page(
            "model.html",
            m=row,
            records=hits,
            total=total,
            failures=[h["_source"] for h in failures.get("hits", {}).get("hits", [])],
            flt=flt,
            params=params,
            page=flt.page,
            last_page=min(last_page, queries.MAX_PAGE),
            range=range_name,
            ranges=list(queries.RANGES),
            statuses=queries.STATUSES,
            protocols=queries.PROTOCOLS,
        )

    async def _record_doc(self, request: web.Request, scope: list[str] | None) -> tuple[str, dict[str, Any]]:
        doc_id = request.query.get("id") or ""
        if not doc_id:
            raise queries.QueryError("id is required")
        hits = (await self.search("records", queries.by_id(doc_id))).get("hits", {}).get("hits", [])
        if not hits:
            raise web.HTTPNotFound(text=f"no record {doc_id}")
        doc = dict(hits[0]["_source"])
        if scope is not None and doc.get("namespace") not in scope:
            raise Forbidden(f"this token may read namespace {scope[0]!r}")
        return doc_id, doc

    async def record(self, request: web.Request, scope: list[str] | None) -> web.StreamResponse:
        doc_id, doc = await self._record_doc(request, scope)
        return self.page(
            "record.html",
            id=doc_id,
            doc=doc,
            bodies=[body(doc, "request"), body(doc, "response")],
            replay=replay_commands(doc, self.cfg.topic_events),
            range=queries.DEFAULT_RANGE,
            ranges=list(queries.RANGES),
        )

    async def claim_checked(self, request: web.Request, scope: list[str] | None) -> web.StreamResponse:
        side = request.query.get("side")
        if side not in ("request", "response"):
            raise queries.QueryError("side must be request or response")
        _, doc = await self._record_doc(request, scope)
        ref = doc.get(f"{side}_dataref")
        if not ref:
            raise web.HTTPNotFound(text=f"the {side} body of this record was not claim-checked")
        bucket, key = core_s3.split_url(str(ref))
        client = core_s3.client(self.cfg)
        data = await asyncio.to_thread(lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
        # Shown as text whatever it holds: a browser must never render a payload as a page.
        return web.Response(
            body=data, content_type="text/plain", charset="utf-8", headers={"Content-Disposition": "inline"}
        )

    async def reconciliation(self, request: web.Request, scope: list[str] | None) -> web.StreamResponse:
        namespace = scope[0] if scope else None
        cached = self._reconciled.get(namespace)
        if cached is None or time.monotonic() - cached.at > self.cfg.console_reconcile_cache_s:
            value = await asyncio.to_thread(reconcile, self.cfg, namespace=namespace, sinks=self.sinks)
            cached = self._reconciled[namespace] = _Cached(time.monotonic(), value)
        rec = cached.value
        columns = [*COLUMNS, *((s, s) for s in rec.stages), ("unaccounted", "unaccounted")]
        rows = []
        for (ns, isvc), counts in sorted(rec.models.items()):
            values = counts.as_dict()
            balanced = counts.unaccounted == 0 and all(counts.stored.get(s, 0) == counts.records for s in rec.stages)
            rows.append({"model": f"{ns}/{isvc}", "cells": [values.get(k, 0) for k, _ in columns], "ok": balanced})
        return self.page(
            "reconciliation.html",
            columns=[title for _, title in columns],
            rows=rows,
            rec=rec,
            age=round(time.monotonic() - cached.at),
            range=queries.DEFAULT_RANGE,
            ranges=list(queries.RANGES),
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        if name not in self._static:
            where = STATIC[name]
            files = importlib.resources.files(where[0]) / where[1] if where else None
            if files is None:
                files = importlib.resources.files("inferlog.console") / "static" / name
            self._static[name] = files.read_bytes()
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(
            body=self._static[name], content_type=kind, headers={"Cache-Control": "public, max-age=3600"}
        )


def _total(result: dict[str, Any]) -> int:
    total = result.get("hits", {}).get("total", 0)
    return int(total["value"] if isinstance(total, dict) else total)


def _pct(agg: dict[str, Any] | None, q: str) -> float | None:
    value = ((agg or {}).get("values") or {}).get(q)
    return None if value is None else round(float(value), 1)


def _model_row(namespace: str, isvc: str, agg: dict[str, Any]) -> dict[str, Any]:
    """One model's figures and chart series from its aggregations."""
    count = int(agg.get("doc_count", 0))
    failed = int(agg.get("failed", {}).get("doc_count", 0))
    with_tokens = int(agg.get("with_tokens", {}).get("value", 0))
    series = agg.get("over_time", {}).get("buckets", [])
    chart = {
        "x": [b["key_as_string"] for b in series],
        "records": [b["doc_count"] for b in series],
        "failed": [b["failed"]["doc_count"] for b in series],
        "p50": [_pct(b.get("latency"), "50.0") for b in series],
        "p99": [_pct(b.get("latency"), "99.0") for b in series],
        "tokens": [b["tokens"]["value"] for b in series] if with_tokens else [],
    }
    return {
        "namespace": namespace,
        "isvc": isvc,
        "records": count,
        "failed": failed,
        "failure_pct": round(100.0 * failed / count, 2) if count else 0.0,
        "p50": _pct(agg.get("latency"), "50.0"),
        "p99": _pct(agg.get("latency"), "99.0"),
        "tokens": int(agg.get("tokens", {}).get("value", 0)) if with_tokens else None,
        "chart": chart,
    }


def replay_commands(doc: dict[str, Any], events_topic: str) -> list[tuple[str, str]]:
    """(what, command) pairs that resend this inference's events: into the pipeline, and to a model."""
    sides = [
        (int(doc[f"{s}_source_partition"]), int(doc[f"{s}_source_offset"]))
        for s in ("request", "response")
        if doc.get(f"{s}_source_offset") is not None and doc.get(f"{s}_source_partition") is not None
    ]
    if not sides:
        return []
    partition = sides[0][0]
    low, high = min(o for _, o in sides), max(o for _, o in sides)
    base = [
        "inferlog", "replay", "--partition", str(partition), "--from-offsets", f"{partition}:{low}",
        "--to-offsets", f"{partition}:{high + 1}", "--id", str(doc.get("join_key")),
    ]  # fmt: skip
    return [
        ("into the pipeline again (deduplicated by the join)", shlex.join([*base, "--to-topic", events_topic])),
        ("to a model (its request body, as shadow traffic)", shlex.join([*base, "--to-http", "http://MODEL_URL"])),
    ]


def build_app(console: Console) -> web.Application:
    app = web.Application()

    def guarded(handler: Callable[[web.Request, list[str] | None], Awaitable[web.StreamResponse]]) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                scope = console.scope(request)
                if console.auth.enabled and request.query.get("token"):
                    # keep the token out of the address bar, the history and Referer headers
                    query = {k: v for k, v in request.query.items() if k != "token"}
                    target = request.path + (f"?{urlencode(query)}" if query else "")
                    response = web.Response(status=303, headers={"Location": target})
                    response.set_cookie(COOKIE, request.query["token"], httponly=True, samesite="Strict")
                    return response
                return await handler(request, scope)
            except Unauthorized as exc:
                return console.page("error.html", 401, status=401, message=str(exc), range="", ranges=[])
            except Forbidden as exc:
                return console.page("error.html", 403, status=403, message=str(exc), range="", ranges=[])
            except queries.QueryError as exc:
                return console.page("error.html", 400, status=400, message=str(exc), range="", ranges=[])
            except InferlogError as exc:  # OpenSearch or a topic unreachable: say so, do not 500 blindly
                return console.page("error.html", 503, status=503, message=str(exc), range="", ranges=[])

        return run

    app.router.add_get("/", guarded(console.overview))
    app.router.add_get("/model/{namespace}/{isvc}", guarded(console.model))
    app.router.add_get("/record", guarded(console.record))
    app.router.add_get("/record/body", guarded(console.claim_checked))
    app.router.add_get("/reconciliation", guarded(console.reconciliation))
    app.router.add_get("/static/{name}", console.static)
    app.router.add_get("/healthz", lambda _: _healthz())

    async def headers(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"

    app.on_response_prepare.append(headers)
    return app


async def _healthz() -> web.Response:
    return web.json_response({"status": "ok"})
