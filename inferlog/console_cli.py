"""``inferlog console``: serve the read-only web console (models, records, failures, the reconciliation)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from core import config, logs
from inferlog.console.config import ConsoleConfig
from sinks.registry import specs

log = logging.getLogger("inferlog.console")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="serve the web console: models overview, records, failures, reconciliation (read-only)",
        description="A read-only web console over OpenSearch (the OpenSearch sink's indices) and the "
        "reconciliation of every topic and store. Charts work offline (plotly.js ships in the package). When "
        "INFERLOG_AUTH_TOKENS (or INFERLOG_AUTH_XFCC_TRUST_DOMAIN) is set, as for the ingest, every page needs "
        "a token (Authorization: Bearer, or ?token= once: an HttpOnly cookie keeps it), and a namespace's token "
        "sees that namespace only.",
    )
    seen = config.add_flags(p, ConsoleConfig)
    for spec in specs():  # each store as its sink writes it (index prefix, archive prefix, catalog)
        seen |= config.add_flags(p, spec.config, skip=seen)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from inferlog.console.app import Console, build_app
    from ingest.config import IngestConfig
    from ingest.policy import Auth
    from sinks.opensearch import OpenSearchSinkConfig

    cfg = config.from_args(ConsoleConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    sinks = [(spec, config.from_args(spec.config, args)) for spec in specs()]
    search_cfg = next(c for _, c in sinks if isinstance(c, OpenSearchSinkConfig))
    auth_cfg = config.load(IngestConfig)  # the ingest's auth settings, from the environment as it reads them
    console = Console(cfg, search_cfg, Auth(auth_cfg.tokens(), auth_cfg.auth_xfcc_trust_domain), sinks)

    async def serve() -> None:
        runner = web.AppRunner(build_app(console), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, cfg.console_host, cfg.console_port).start()
        log.info(
            "console listening",
            extra={"url": f"http://{cfg.console_host}:{cfg.console_port}/", "auth": console.auth.enabled},
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    return 0
