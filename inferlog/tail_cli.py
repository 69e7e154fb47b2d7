"""``inferlog tail``: follow ``inferlog.records`` or ``inferlog.failures``, decoded from Avro."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import datetime
from typing import Any

from core import config, logs
from core.config import CommonConfig
from inferlog.analytics import iter_records


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tail",
        help="follow joined records (or failure signals) as a table or JSON lines",
        description="Read inferlog.records (or inferlog.failures with --failures), decode the Avro values and "
        "print them. By default starts 15 minutes back and follows; --no-follow stops at the end and then prints "
        "only the latest revision of each record (a request_only record whose response came after the pair "
        "timeout is superseded by a complete one, revision 2). While following, each revision is printed as it "
        "comes; a revision 2 is marked 'r2'.",
    )
    p.add_argument("--failures", action="store_true", help="read inferlog.failures instead of inferlog.records")
    p.add_argument("--since", default="15m", help="start time: 15m, 2h, 1d, epoch ms or ISO-8601 (default 15m)")
    p.add_argument("--until", help="stop at this time (same forms as --since)")
    p.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True, help="keep reading new records")
    p.add_argument("--namespace", help="only this namespace")
    p.add_argument("--isvc", help="only this InferenceService")
    p.add_argument("--status", help="only this status (complete, request_only, response_only) or failure kind")
    p.add_argument("--id", dest="ids", action="append", help="only this join key (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON lines (bodies as text when UTF-8)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many records (0 = no limit)")
    p.add_argument(
        "--all-revisions",
        action="store_true",
        help="with --no-follow: print every revision, not only the latest of each record",
    )
    config.add_flags(p, CommonConfig)
    p.set_defaults(handler=run)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def format_row(rec: dict[str, Any], failures: bool) -> str:
    when = rec["event_time"].strftime("%H:%M:%S.%f")[:-3] if isinstance(rec.get("event_time"), datetime) else "-"
    model = f"{rec['namespace']}/{rec['isvc']}"
    if failures:
        return f"{when}  {rec['kind']:<17} {model:<32} {rec['reason'][:60]:<60} {rec['join_key']}"
    latency = f"{rec['latency_ms']:.1f}ms" if rec.get("latency_ms") is not None else "-"
    req = rec.get("request") or {}
    resp = rec.get("response") or {}
    sizes = f"{req.get('size', '-')}/{resp.get('size', '-')}B"
    return (
        f"{when}  {_status(rec):<16} {model:<32} {rec['protocol']:<7} {latency:>10} {sizes:>14}  "
        f"{rec.get('model_name') or '-'}  {rec['ce_id']}"
    )


def _status(rec: dict[str, Any]) -> str:
    revision = rec.get("revision") or 1
    return str(rec["status"]) if revision == 1 else f"{rec['status']} r{revision}"


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(CommonConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    records = iter_records(
        cfg,
        failures=args.failures,
        since=args.since,
        until=args.until,
        follow=args.follow,
        namespace=args.namespace,
        isvc=args.isvc,
        status=args.status,
        keys=args.ids,
        latest=not args.follow and not args.failures and not args.all_revisions,
    )
    for n, rec in enumerate(records, start=1):
        if args.json:
            print(json.dumps(_jsonable(rec), sort_keys=True))
        else:
            print(format_row(rec, args.failures))
        sys.stdout.flush()
        if args.limit and n >= args.limit:
            break
    return 0
