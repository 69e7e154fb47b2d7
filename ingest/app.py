"""The aiohttp application: ``POST`` any path → 202 once durable; ``/healthz``, ``/readyz``, ``/metrics``.

Answers: 202 (in Kafka or fsynced in the spool), 400 ``application/problem+json`` naming the attribute,
401/403 (tokens), 405 (not POST), 413 (over ``max_body_bytes``), 415 (structured format other than JSON),
503 + ``Retry-After`` only when neither Kafka nor the spool can take the event. No input yields a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import orjson
from aiohttp import web

from core import config as config_mod
from core.runtime import tune_gc
from ingest import metrics
from ingest.claimcheck import ClaimCheck
from ingest.config import IngestConfig
from ingest.errors import ClaimCheckFailed, IngestError
from ingest.parse import parse, problem
from ingest.policy import Credentials, Policy
from ingest.service import Ingest, Producer
from ingest.spool import Spool
from ingest.tls import ReloadingTLS

log = logging.getLogger("ingest")

INGEST_KEY = web.AppKey("ingest", Ingest)
PROBLEM = "application/problem+json"


def problem_response(status: int, exc: BaseException, *, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = orjson.dumps(problem(exc if isinstance(exc, Exception) else Exception(str(exc)), status))
    return web.Response(status=status, body=body, content_type=PROBLEM, headers=headers)


class Handlers:
    def __init__(self, cfg: IngestConfig, policy: Policy, claimcheck: ClaimCheck) -> None:
        self.cfg = cfg
        self.policy = policy
        self.claimcheck = claimcheck
        self._ingest: Ingest | None = None

    @property
    def ingest(self) -> Ingest:
        if self._ingest is None:
            raise RuntimeError("the ingest has not started")
        return self._ingest

    async def event(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse
        if request.method != "POST":
            response = problem_response(405, Exception(f"{request.method} is not accepted here; POST events"))
            response.headers["Allow"] = "POST"
            metrics.REJECTED.labels(reason="method").inc()
            outcome = "rejected"
        else:
            try:
                outcome, response = await self._post(request)
            except web.HTTPException as exc:  # aiohttp's own (bad body encoding, ...): a problem document
                if exc.status >= 500:
                    raise
                outcome, response = "rejected", problem_response(exc.status, Exception(exc.reason))
        metrics.observe_request(response.status, outcome, time.perf_counter() - started)
        return response

    async def _read(self, request: web.Request) -> bytes:
        """The whole body without the copies of ``request.read()`` (one chunk is returned as it is)."""
        content = request.content
        limit = self.cfg.max_body_bytes
        chunk = await content.readany()
        if content.is_eof() or not chunk:
            if len(chunk) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(chunk))
            return chunk
        chunks = [chunk]
        size = len(chunk)
        while True:
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunk = await content.readany()
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)

    async def _post(self, request: web.Request) -> tuple[str, web.StreamResponse]:
        ingest = self.ingest
        if ingest.closing:
            metrics.REJECTED.labels(reason="shutting_down").inc()
            return "rejected", problem_response(
                503, Exception("the ingest is shutting down"), retry_after=self.cfg.retry_after_s
            )
        policy = self.policy
        try:
            length = request.content_length
            if length is not None and length > self.cfg.max_body_bytes:
                raise web.HTTPRequestEntityTooLarge(max_size=self.cfg.max_body_bytes, actual_size=length)
            body = await self._read(request)
            headers = request.headers
            events = parse(headers.items(), body, headers.get("Content-Type"))
            if policy.auth.enabled:
                policy.auth.check(Credentials.of(headers, request.rel_url.raw_path, request.query), events)
            kept = events
            if policy.filtering:
                kept = []
                for ev in events:
                    if policy.sampler.keep(ev):
                        kept.append(policy.redactor.apply(ev))
                    else:
                        metrics.EVENTS.labels(outcome="sampled_out", namespace=ev.namespace, isvc=ev.isvc).inc()
            to_spool = False
            claimcheck = self.claimcheck
            if claimcheck.threshold > 0 and any([claimcheck.needed(ev) for ev in kept]):  # no generator per request
                try:
                    kept = list(await asyncio.gather(*(claimcheck.apply(ev) for ev in kept)))
                except ClaimCheckFailed as exc:  # object storage away: spool the bodies, claim-check on drain
                    log.warning("claim check failed: spooling", extra={"error": str(exc)})
                    to_spool = True
                for ev in kept:
                    if ev.dataref:
                        metrics.EVENTS.labels(outcome="claim_checked", namespace=ev.namespace, isvc=ev.isvc).inc()
            where = await ingest.accept(kept, spool=to_spool)
        except web.HTTPRequestEntityTooLarge as exc:
            metrics.REJECTED.labels(reason="too_large").inc()
            return "rejected", problem_response(
                413, Exception(f"body over {self.cfg.max_body_bytes} bytes: {exc.text}")
            )
        except IngestError as exc:
            metrics.REJECTED.labels(reason=exc.reason).inc()
            retry_after = self.cfg.retry_after_s if exc.status == 503 else None
            return "rejected", problem_response(exc.status, exc, retry_after=retry_after)
        tally = metrics.TALLY
        for ev in kept:
            tally.add("received", ev.namespace, ev.isvc)
        return where, web.Response(status=202)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.ingest.ready()
        body = {
            "ready": ready,
            "kafka": self.ingest.producer.up,
            "spool_records": self.ingest.spool.depth,
            "spool_bytes": self.ingest.spool.size_bytes,
            "spool_capacity_bytes": self.ingest.spool.max_bytes,
        }
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        self.ingest.refresh_gauges()
        body, content_type = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(
    cfg: IngestConfig,
    *,
    producer: Producer | None = None,
    spool: Spool | None = None,
    claimcheck: ClaimCheck | None = None,
) -> web.Application:
    """The application; ``producer``/``spool``/``claimcheck`` may be injected (unit tests use fakes)."""
    # No middleware: each is a coroutine layer per request; the event handler turns aiohttp's own 4xx into
    # problem documents itself.
    app = web.Application(client_max_size=cfg.max_body_bytes)
    handlers = Handlers(cfg, Policy.from_config(cfg), claimcheck or ClaimCheck(cfg))
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_route("*", "/", handlers.event)  # KServe's usual logger.url: a plain match, no regex
    app.router.add_route("*", "/{tail:.*}", handlers.event)

    async def on_startup(app: web.Application) -> None:
        nonlocal producer, spool
        if producer is None:
            from ingest.producer import EventProducer

            producer = EventProducer(cfg, cfg.topic_events)
        if spool is None:
            spool = Spool(cfg.spool_dir, max_bytes=cfg.spool_max_bytes, segment_bytes=cfg.spool_segment_bytes)
        ingest = Ingest(cfg, producer, spool, handlers.claimcheck)
        ingest.start()
        app[INGEST_KEY] = ingest
        handlers._ingest = ingest

    async def on_shutdown(app: web.Application) -> None:
        if INGEST_KEY in app:
            app[INGEST_KEY].closing = True

    async def on_cleanup(app: web.Application) -> None:
        if INGEST_KEY in app:
            await app[INGEST_KEY].stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def _watch_certificate(tls: ReloadingTLS, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)  # a polling period, not a synchronisation
        await asyncio.to_thread(tls.maybe_reload)


async def serve(
    cfg: IngestConfig, *, ready: asyncio.Event | None = None, reuse_port: bool = False, worker: int | None = None
) -> None:
    """Run until SIGTERM/SIGINT: then stop accepting, finish in-flight requests, drain a round, flush Kafka.
    ``reuse_port``: share the port with the other workers of :mod:`ingest.workers` (``worker`` is the index)."""
    app = build_app(cfg)
    tls = ReloadingTLS(cfg.tls_cert_file, cfg.tls_key_file) if cfg.tls_cert_file else None
    runner = web.AppRunner(app, shutdown_timeout=cfg.shutdown_timeout_s, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        cfg.host,
        cfg.port,
        backlog=1024,
        reuse_address=True,
        reuse_port=reuse_port or None,
        ssl_context=tls.context if tls else None,
    )
    await site.start()
    reloader = asyncio.create_task(_watch_certificate(tls, cfg.tls_reload_interval_s)) if tls else None
    extra = {
        "host": cfg.host,
        "port": cfg.port,
        "scheme": "https" if tls else "http",
        "event_loop": type(asyncio.get_running_loop()).__module__,
        **({"worker": worker} if worker is not None else {}),
    }
    log.info("ingest listening", extra={**extra, "settings": config_mod.redacted(cfg)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tune_gc()
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("shutting down: no new connections, finishing in-flight requests")
    if reloader is not None:
        reloader.cancel()
    await runner.cleanup()
    log.info("ingest stopped")
