"""``inferlog stack start|status|stop``: the local stack of real servers."""

from __future__ import annotations

import argparse
import json
import time

from core import config, logs
from inferlog_stack.manager import SERVER_NAMES, StackConfig, start, status, stop


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stack",
        help="start, check or stop the local real servers (Kafka, SeaweedFS S3, OpenSearch, Apicurio)",
        description="Manage the local stack on 127.0.0.1. `start` is idempotent: running servers are kept, "
        "downloads are cached (Maven ~/.m2 and deploy/local/target), each server is waited on with a deadline.",
    )
    p.add_argument("action", choices=("start", "status", "stop"))
    p.add_argument("--only", action="append", choices=SERVER_NAMES, help="limit to these servers (repeatable)")
    p.add_argument("--json", action="store_true", help="print machine-readable output")
    config.add_flags(p, StackConfig)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(StackConfig, args)
    logs.setup(cfg.log_level, "text" if not args.json else cfg.log_format)
    names = tuple(args.only) if args.only else SERVER_NAMES
    if args.action == "start":
        t0 = time.monotonic()
        seconds = start(cfg, names)
        if args.json:
            print(json.dumps({"ready_after_s": seconds, "total_s": round(time.monotonic() - t0, 1)}))
        else:
            print(f"stack ready in {time.monotonic() - t0:.1f}s")
            _print_status(cfg)
        return 0
    if args.action == "stop":
        stopped = stop(cfg, names)
        print(json.dumps({"stopped": stopped}) if args.json else f"stopped: {', '.join(stopped) or 'nothing'}")
        return 0
    rows = status(cfg)
    if args.json:
        print(json.dumps(rows))
    else:
        _print_status(cfg)
    return 0 if all(str(r["state"]).startswith("running") for r in rows) else 1


def _print_status(cfg: StackConfig) -> None:
    rows = status(cfg)
    print(f"{'server':<11} {'address':<42} {'state':<10} pid")
    for r in rows:
        print(f"{r['server']:<11} {r['address']!s:<42} {r['state']!s:<10} {r['pid'] or '-'}")
    print(f"state and logs: {cfg.dir}")
