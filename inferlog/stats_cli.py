"""``inferlog stats``: the per-model reconciliation of a running deployment."""

from __future__ import annotations

import argparse
import json

from core import config, logs
from core.config import CommonConfig
from inferlog.scan import parse_time_ms
from inferlog.stats import reconcile, render_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stats",
        help="reconcile counts per model across stages: events, paired, failed, archived, indexed, dead-lettered",
        description="Read the topics, the Parquet archive and the OpenSearch index and print, per model, how "
        "every logged event is accounted for. Exit code 0 when balanced, 1 otherwise.",
    )
    p.add_argument("--since", help="only events since: 15m, 2h, 1d, epoch ms or ISO-8601 (default: all)")
    p.add_argument("--namespace", help="only this namespace")
    p.add_argument("--archive-prefix", help="archive table prefix (default archive/<records topic>)")
    p.add_argument("--index-prefix", default="inferlog", help="OpenSearch index prefix (default inferlog)")
    p.add_argument("--json", action="store_true", help="print JSON")
    config.add_flags(p, CommonConfig)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(CommonConfig, args)
    logs.setup("warning", cfg.log_format)
    rec = reconcile(
        cfg,
        since_ms=parse_time_ms(args.since) if args.since else None,
        archive_prefix=args.archive_prefix,
        index_prefix=args.index_prefix,
        namespace=args.namespace,
    )
    print(json.dumps(rec.as_json(), indent=2) if args.json else render_table(rec))
    return 0 if rec.balanced else 1
