"""``inferlog replay``: re-send a range of events or records to a topic, an HTTP endpoint or a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka import Producer
from tqdm import tqdm

from core import config, logs
from core.config import CommonConfig
from core.kafka import producer_config
from inferlog.replay import (
    HttpTarget,
    OffsetTracker,
    ReplayError,
    ReplayFilter,
    ReplayStats,
    load_checkpoint,
    save_checkpoint,
    select,
    to_file_line,
)
from inferlog.scan import Message, ScanRange, end_offsets, parse_time_ms


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="replay events or records by time/offsets to a topic, an HTTP endpoint (shadow traffic) or a file",
        description="Read inferlog.events (default) or inferlog.records, filter, and send to exactly one target. "
        "Topic targets keep key, headers, value and timestamp, so re-running into the pipeline is idempotent "
        "(the read is bounded by the end offsets taken at start, so --to-topic may be the source topic). "
        "HTTP targets receive each request event's original body and Content-Type. Resumable with --checkpoint.",
    )
    p.add_argument("--source", choices=("events", "records"), default="events", help="topic to read")
    p.add_argument("--since", help="start time: 15m, 2h, 1d, epoch ms or ISO-8601")
    p.add_argument("--until", help="end time (exclusive), same forms")
    p.add_argument("--from-offsets", help="start offsets p:o,p:o (inclusive)")
    p.add_argument("--to-offsets", help="end offsets p:o,p:o (exclusive)")
    p.add_argument("--partition", type=int, action="append", help="only this partition (repeatable)")
    p.add_argument("--namespace")
    p.add_argument("--isvc")
    p.add_argument("--status", help="records: complete|request_only|response_only; events: request|response")
    p.add_argument("--id", dest="ids", action="append", help="only this join key (repeatable)")
    p.add_argument("--ids-file", type=Path, help="file of join keys, one per line")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-topic", help="produce to this topic (same key, headers, value, timestamp)")
    target.add_argument("--to-http", help="POST each request event's original body to this URL")
    target.add_argument("--to-file", type=Path, help="write JSON lines to this file ('-' for stdout)")
    p.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight (default 8)")
    p.add_argument("--rate", type=float, default=0.0, help="HTTP requests per second (0 = unlimited)")
    p.add_argument("--checkpoint", type=Path, help="resume from and save progress to this file")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    config.add_flags(p, CommonConfig)
    p.set_defaults(handler=run)


def _offsets(text: str | None, what: str) -> dict[int, int] | None:
    if not text:
        return None
    try:
        return {int(p): int(o) for p, o in (item.split(":") for item in text.split(",") if item)}
    except ValueError:
        raise ReplayError(f"{what}: expected p:o,p:o (e.g. 0:100,3:250), got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    cfg = config.from_args(CommonConfig, args)
    logs.setup(cfg.log_level, cfg.log_format)
    records = args.source == "records"
    topic = cfg.topic_records if records else cfg.topic_events
    if args.to_http and records:
        raise ReplayError("--to-http replays request events: use --source events")
    keys = set(args.ids or [])
    if args.ids_file:
        keys.update(line.strip() for line in args.ids_file.read_text().splitlines() if line.strip())
    flt = ReplayFilter(args.namespace, args.isvc, args.status, frozenset(keys) if keys else None)
    start_offsets = _offsets(args.from_offsets, "--from-offsets") or {}
    checkpoint = load_checkpoint(args.checkpoint)
    for p, off in checkpoint.items():
        start_offsets[p] = max(off, start_offsets.get(p, 0))
    rng = ScanRange(
        start_ms=parse_time_ms(args.since) if args.since else None,
        end_ms=parse_time_ms(args.until) if args.until else None,
        partitions=args.partition,
        start_offsets=start_offsets or None,
        end_offsets=_offsets(args.to_offsets, "--to-offsets"),
    )
    ends = end_offsets(cfg, topic)
    total = sum(max(0, ends[p] - start_offsets.get(p, 0)) for p in ends if not args.partition or p in args.partition)
    bar = tqdm(total=total, unit="rec", disable=args.no_progress or not sys.stderr.isatty(), desc=f"replay {topic}")
    stats = ReplayStats()
    tracker = OffsetTracker()

    def progressed(msg: Message) -> None:
        bar.update(1)
        tracker.started(msg.partition, msg.offset)

    def finished(msg: Message) -> None:
        tracker.done(msg.partition, msg.offset)

    selected = select(cfg, topic, rng, flt, stats, records=records, on_progress=progressed, on_skip=finished)
    try:
        if args.dry_run:
            for msg in selected:
                finished(msg)
        elif args.to_topic:
            _to_topic(cfg, args.to_topic, selected, stats, finished, args.checkpoint, tracker)
        elif args.to_http:
            target = HttpTarget(cfg, args.to_http, concurrency=args.concurrency, rate=args.rate)
            asyncio.run(target.send_all(selected, stats, finished))
        else:
            out = sys.stdout if str(args.to_file) == "-" else open(args.to_file, "a")  # noqa: SIM115
            try:
                for msg in selected:
                    out.write(to_file_line(msg) + "\n")
                    stats.sent += 1
                    finished(msg)
            finally:
                if out is not sys.stdout:
                    out.close()
    finally:
        bar.close()
        if args.checkpoint and not args.dry_run:
            save_checkpoint(args.checkpoint, {**checkpoint, **tracker.committable()})
    summary = {
        "source": topic,
        "read": stats.read,
        "matched": stats.matched,
        "sent": stats.sent,
        "failed": stats.failed,
        "ticks_skipped": stats.skipped_ticks,
        "dry_run": args.dry_run,
        "errors": stats.errors[:10],
    }
    print(json.dumps(summary), file=sys.stderr if str(args.to_file) == "-" else sys.stdout)
    return 1 if stats.failed else 0


def _to_topic(
    cfg: CommonConfig,
    topic: str,
    messages: Iterable[Message],
    stats: ReplayStats,
    finished: Callable[[Message], None],
    checkpoint: Path | None,
    tracker: OffsetTracker,
) -> None:
    producer = Producer(producer_config(cfg))
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for n, msg in enumerate(messages, start=1):
        producer.produce(
            topic,
            key=msg.key,
            value=msg.value,
            headers=list[tuple[str, str | bytes | None]](msg.headers),
            timestamp=msg.timestamp_ms,
            on_delivery=delivered,
        )
        producer.poll(0)
        stats.sent += 1
        finished(msg)
        if checkpoint and n % 5000 == 0:
            producer.flush(60)
            save_checkpoint(checkpoint, tracker.committable())
    if producer.flush(120) != 0:
        raise ReplayError("replay: records still undelivered after 120 s", retriable=True)
    if errors:
        stats.failed += len(errors)
        stats.errors.extend(errors[:10])
