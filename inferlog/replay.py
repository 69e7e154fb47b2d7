"""Replay: read ``inferlog.events`` (or ``inferlog.records``) by time range and/or offsets, filter, and send
to another topic, to an HTTP endpoint as the original requests (shadow traffic), or to a local file.

- **Topic**: each record is re-produced with its key, headers, value and original timestamp, so replaying
  events into the pipeline meets the streams app's dedupe on (source, id, type) and changes nothing
  downstream (same keys, same object names, same ``_id``s).
- **HTTP**: for each *request* event, ``POST`` the original body bytes with the original Content-Type
  (claim-checked bodies are fetched from object storage first), with bounded concurrency and rate.
- **File**: JSON lines, one record each, with key, headers and base64 value (loss-free).

Resumable: with a checkpoint file, the next offset of each partition is saved (atomically) as the replay
goes, and a re-run starts there. ``dry_run`` counts what would be sent and sends nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import CommonConfig
from core.errors import InferlogError
from core.events import EventError, from_kafka
from inferlog.scan import Message, ScanRange, scan
from schemas.wire import tick_time_us


class ReplayError(InferlogError):
    """The replay cannot run as asked."""


@dataclass(frozen=True)
class ReplayFilter:
    namespace: str | None = None
    isvc: str | None = None
    status: str | None = None  # records: complete|request_only|response_only; events: request|response
    keys: frozenset[str] | None = None


@dataclass
class ReplayStats:
    read: int = 0
    matched: int = 0
    sent: int = 0
    failed: int = 0
    skipped_ticks: int = 0
    errors: list[str] = field(default_factory=list)


def load_checkpoint(path: Path | None) -> dict[int, int]:
    if path is None or not path.exists():
        return {}
    return {int(k): int(v) for k, v in json.loads(path.read_text()).items()}


def save_checkpoint(path: Path, offsets: dict[int, int]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({str(k): v for k, v in sorted(offsets.items())}))
    os.replace(tmp, path)


def _event_fields(msg: Message) -> tuple[str, str, str]:
    """(namespace, isvc, kind) of an events-topic record; kind is request|response|other."""
    ev = from_kafka(msg.headers, msg.value)
    kind = "request" if ev.is_request else "response" if ev.is_response else "other"
    return ev.namespace, ev.isvc, kind


def matches(msg: Message, flt: ReplayFilter, decode_record: Callable[[bytes], dict[str, Any]] | None) -> bool:
    key = (msg.key or b"").decode(errors="replace")
    if flt.keys is not None and key not in flt.keys:
        return False
    if decode_record is None:
        try:
            namespace, isvc, kind = _event_fields(msg)
        except EventError:
            return flt.namespace is None and flt.isvc is None and flt.status is None
        status = kind
    else:
        rec = decode_record(msg.value or b"")
        namespace, isvc, status = rec["namespace"], rec["isvc"], rec["status"]
    return (
        (flt.namespace is None or namespace == flt.namespace)
        and (flt.isvc is None or isvc == flt.isvc)
        and (flt.status is None or status == flt.status)
    )


def select(
    cfg: CommonConfig,
    topic: str,
    rng: ScanRange,
    flt: ReplayFilter,
    stats: ReplayStats,
    *,
    records: bool,
    on_progress: Callable[[Message], None] | None = None,
    on_skip: Callable[[Message], None] | None = None,
) -> Iterable[Message]:
    decode = None
    if records:
        from schemas import AvroSerde

        decode = AvroSerde.for_topic(
            cfg.registry_url, topic, "inference_record", registry_auth=cfg.registry_auth
        ).decode
    for msg in scan(cfg, topic, rng):
        stats.read += 1
        if on_progress:
            on_progress(msg)
        if tick_time_us(msg.headers) is not None:
            stats.skipped_ticks += 1
        elif matches(msg, flt, decode):
            stats.matched += 1
            yield msg
            continue
        if on_skip:
            on_skip(msg)


def to_file_line(msg: Message) -> str:
    return json.dumps(
        {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "timestamp_ms": msg.timestamp_ms,
            "key": None if msg.key is None else msg.key.decode(errors="replace"),
            "headers": [[k, None if v is None else v.decode(errors="replace")] for k, v in msg.headers],
            "value_b64": base64.b64encode(msg.value or b"").decode(),
        },
        sort_keys=True,
    )


class HttpTarget:
    """POST original request bodies to ``url`` with bounded concurrency and an optional rate limit."""

    def __init__(self, cfg: CommonConfig, url: str, *, concurrency: int = 8, rate: float = 0.0) -> None:
        self.cfg, self.url, self.concurrency, self.rate = cfg, url, max(1, concurrency), rate
        self._s3: Any = None

    def _fetch_dataref(self, dataref: str) -> bytes:
        from core import s3

        if self._s3 is None:
            self._s3 = s3.client(self.cfg)
        bucket, key = s3.split_url(dataref)
        body: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def request_of(self, msg: Message) -> tuple[bytes, str | None] | None:
        ev = from_kafka(msg.headers, msg.value)
        if not ev.is_request:
            return None
        body = self._fetch_dataref(ev.dataref) if ev.dataref else ev.data
        return body, ev.datacontenttype

    async def send_all(
        self, messages: Iterable[Message], stats: ReplayStats, on_sent: Callable[[Message], None]
    ) -> None:
        import aiohttp

        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()

        async def worker(session: aiohttp.ClientSession) -> None:
            while (msg := await queue.get()) is not None:
                req = self.request_of(msg)
                if req is None:
                    on_sent(msg)
                    continue
                body, ctype = req
                headers = {"Content-Type": ctype} if ctype else {}
                headers["X-Inferlog-Replay-Of"] = (msg.key or b"").decode(errors="replace")
                try:
                    async with session.post(self.url, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status >= 400:
                            stats.failed += 1
                            stats.errors.append(f"{msg.partition}:{msg.offset} HTTP {resp.status}")
                        else:
                            stats.sent += 1
                except aiohttp.ClientError as exc:
                    stats.failed += 1
                    stats.errors.append(f"{msg.partition}:{msg.offset} {exc}")
                on_sent(msg)

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            workers = [asyncio.create_task(worker(session)) for _ in range(self.concurrency)]
            source = iter(messages)
            while (msg := await asyncio.to_thread(next, source, None)) is not None:  # Kafka polls block
                if interval:
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)  # rate limiting, not synchronisation
                await queue.put(msg)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)


class OffsetTracker:
    """Per partition, the next offset before which every selected record is done (for checkpoints)."""

    def __init__(self) -> None:
        self._inflight: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}

    def started(self, p: int, offset: int) -> None:
        self._inflight.setdefault(p, set()).add(offset)

    def done(self, p: int, offset: int) -> None:
        self._inflight.get(p, set()).discard(offset)
        self._next[p] = max(self._next.get(p, 0), offset + 1)

    def committable(self) -> dict[int, int]:
        out = {}
        for p, nxt in self._next.items():
            pending = self._inflight.get(p)
            out[p] = min(min(pending), nxt) if pending else nxt
        return out
