"""Claim check: a body over the threshold goes to object storage first; the Kafka record carries a pointer.

The object key is content-addressed (``<prefix>/<namespace>/<isvc>/<sha256>``), so a retried or replayed upload
of the same body writes the same object. The event gets ``dataref`` (``s3://bucket/key``), ``datasize``
(original byte length) and ``datasha256`` (hex digest) and an empty value, as :mod:`core.events` defines.

When object storage is away, the event is spooled with its body and claim-checked when the spool drains
(the spool holds everything behind it until then, to keep the order), so an S3 outage costs no 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from typing import Any

import core.s3
from core.events import LoggedEvent, from_kafka, to_kafka
from ingest.config import IngestConfig
from ingest.errors import ClaimCheckFailed
from ingest.spool import Record


def s3_client(cfg: IngestConfig) -> Any:
    # Short timeouts: a claim check sits in the request path of an ingest that must answer fast.
    return core.s3.client(cfg, attempts=3, connect_timeout_s=3, read_timeout_s=10, pool=32)


class ClaimCheck:
    def __init__(self, cfg: IngestConfig, client: Any = None) -> None:
        self.threshold = cfg.claimcheck_threshold_bytes
        self.bucket = cfg.s3_bucket
        self.prefix = cfg.claimcheck_prefix.strip("/")
        self._cfg = cfg
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self._cfg)
        return self._client

    def needed(self, ev: LoggedEvent) -> bool:
        return self.threshold > 0 and len(ev.data) > self.threshold

    def object_key(self, ev: LoggedEvent, digest: str) -> str:
        parts = [self.prefix, ev.namespace or "-", ev.isvc or "-", digest]
        return "/".join(p.replace("/", "_") for p in parts if p)

    async def apply(self, ev: LoggedEvent) -> LoggedEvent:
        """Upload the body when it is over the threshold and return the event with its pointer."""
        if not self.needed(ev):
            return ev
        digest = hashlib.sha256(ev.data).hexdigest()
        key = self.object_key(ev, digest)
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=key,
                Body=ev.data,
                ContentType=ev.datacontenttype or "application/octet-stream",
                Metadata={"ce-id": _ascii(ev.id), "ce-type": _ascii(ev.type), "sha256": digest},
            )
        except Exception as exc:  # botocore errors of every kind: the event cannot be made durable this way
            raise ClaimCheckFailed(f"object storage did not take the body: {exc}") from exc
        return dataclasses.replace(
            ev, data=b"", dataref=f"s3://{self.bucket}/{key}", datasize=len(ev.data), datasha256=digest
        )

    def needed_record(self, record: Record) -> bool:
        """A spooled record whose body still has to go to object storage."""
        return self.threshold > 0 and len(record.value) > self.threshold

    async def apply_record(self, record: Record) -> Record:
        """Claim-check a spooled record (same result as :meth:`apply` on the event it encodes)."""
        key, headers, value = to_kafka(await self.apply(from_kafka(list(record.headers), record.value)))
        return Record(key, tuple(headers), value)


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode()[:512]
