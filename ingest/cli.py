"""``inferlog ingest`` (run the receiver) and ``inferlog demo`` (send KServe-shaped traffic to it)."""

from __future__ import annotations

import argparse
import asyncio
import json

from core import config, logs
from core.topics import ensure_topics, topic_specs
from ingest.config import IngestConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ingest",
        help="run the KServe-compatible CloudEvents ingest (point logger.url at it)",
        description="Receive KServe payload-logger CloudEvents and make them durable in Kafka (or the local spool).",
    )
    p.add_argument("--no-create-topics", action="store_true", help="do not create the events topic at start-up")
    config.add_flags(p, IngestConfig)
    p.set_defaults(handler=run_ingest)

    d = sub.add_parser(
        "demo",
        help="send realistic KServe-shaped logger traffic to an ingest",
        description="v1 and v2 payloads, responses before requests, missing responses, retried requests (same "
        "Ce-Id), metadata headers and annotations, slow streamed LLM calls, at a chosen rate, with a progress bar.",
    )
    d.add_argument("--url", default="http://127.0.0.1:8080/", help="the ingest's URL (default %(default)s)")
    d.add_argument("--count", type=int, default=1000, help="inferences to simulate (default %(default)s)")
    d.add_argument("--rate", type=float, default=200.0, help="events per second (default %(default)s)")
    d.add_argument("--namespace", default="demo", help="namespace of the simulated models (default %(default)s)")
    d.add_argument("--missing-response", type=float, default=0.05, help="share of inferences without a response")
    d.add_argument("--response-first", type=float, default=0.2, help="share sent response before request")
    d.add_argument(
        "--retried",
        type=float,
        default=0.03,
        help="share whose first attempt failed and was retried with the same Ce-Id",
    )
    d.add_argument(
        "--slow",
        type=int,
        default=6,
        help="slow streamed LLM calls, half annotated inferlog.io/pair-timeout=2m (default %(default)s)",
    )
    d.add_argument("--slow-latency-s", type=float, default=8.0, help="how long a slow call's answer takes")
    d.add_argument("--token", default="", help="bearer token, when the ingest requires one")
    d.add_argument("--seed", type=int, default=None, help="random seed for reproducible traffic")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(handler=run_demo)


def run_ingest(args: argparse.Namespace) -> int:
    from ingest import loop
    from ingest.app import serve

    cfg = config.from_args(IngestConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    if not args.no_create_topics:
        try:
            wanted = (cfg.topic_events, cfg.topic_deadletter)
            ensure_topics(cfg, [s for s in topic_specs(cfg) if s.name in wanted], timeout_s=5)
        except Exception as exc:  # Kafka away at start-up: the spool takes the events until it returns
            import logging

            logging.getLogger("ingest").warning("could not ensure topics; starting anyway", extra={"error": str(exc)})
    from ingest import workers

    workers.refuse_orphaned_spools(cfg)
    if cfg.workers > 1:
        return workers.supervise(cfg)
    loop.run(serve(cfg))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ingest.demo import send_demo

    summary = asyncio.run(
        send_demo(
            args.url,
            args.count,
            args.rate,
            namespace=args.namespace,
            missing_response=args.missing_response,
            response_first=args.response_first,
            retried=args.retried,
            slow=args.slow,
            slow_latency_s=args.slow_latency_s,
            token=args.token or None,
            seed=args.seed,
            progress=not args.no_progress,
        )
    )
    print(json.dumps(summary.as_dict(), indent=2))
    return 0 if summary.failed == 0 else 1
