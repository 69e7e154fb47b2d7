"""``inferlog stats``: the per-model reconciliation of a running deployment."""

from __future__ import annotations

import argparse
import json

from core import config, logs
from core.config import CommonConfig
from inferlog.scan import parse_time_ms
from inferlog.stats import reconcile, render_table
from sinks.registry import specs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats",
        help="reconcile counts per model across stages: events, paired, failed, dead-lettered, each sink's store",
        description="Read the topics and every sink's store (archive, index, tables) and print, per model, how "
        "every logged event is accounted for. Exit code 0 when balanced, 1 otherwise.",
    )
    p.add_argument("--since", help="only events since: 15m, 2h, 1d, epoch ms or ISO-8601 (default: all)")
    p.add_argument("--namespace", help="only this namespace")
    p.add_argument("--json", action="store_true", help="print JSON")
    # every sink's own settings too (its prefix, index names, catalog): each store is read as its sink writes it
    seen = config.add_flags(p, CommonConfig)
    for spec in specs():
        seen |= config.add_flags(p, spec.config, skip=seen)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(CommonConfig, args)
    logs.setup("warning", cfg.log_format)
    sinks = [(spec, config.from_args(spec.config, args)) for spec in specs()]
    rec = reconcile(
        cfg, since_ms=parse_time_ms(args.since) if args.since else None, namespace=args.namespace, sinks=sinks
    )
    print(json.dumps(rec.as_json(), indent=2) if args.json else render_table(rec))
    return 0 if rec.balanced else 1
