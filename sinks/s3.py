"""Object-storage sink: each closed batch becomes one object per Hive partition it touches.

Keys are ``<s3_prefix>/<topic>/namespace=…/isvc=…/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.<ext>``
(the first offset zero-padded to 20 digits so that listings sort by offset). Each topic is its own table
under the prefix because a Hive table has one schema. The name and the bytes are a function of the batch
alone and batches are cut deterministically (:mod:`sinks.framework`), so a crash between upload and commit
rewrites the same object with the same bytes: never a second object holding the same records.
Objects larger than ``s3_multipart_bytes`` are uploaded in parts by boto3's transfer manager; an interrupted
multipart upload leaves no visible object (add a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` to
reclaim its parts).
"""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

import core.s3
from core.config import CommonConfig, ConfigError, env_name, setting
from schemas import load_schema
from sinks.config import SinkConfig
from sinks.errors import WriteError
from sinks.flatten import flatten, hive_path, hive_path_at, to_table
from sinks.framework import Batch, Item, Rejected, Sink
from sinks.registry import SinkSpec

__all__ = ["SPEC", "S3Object", "S3Sink", "S3SinkConfig", "classify_s3_error", "encode_objects", "make_client"]

_EXT = {"parquet": "parquet", "avro": "avro", "jsonl": "jsonl"}
_CONTENT_TYPE = {"parquet": "application/vnd.apache.parquet", "avro": "avro/binary", "jsonl": "application/x-ndjson"}
#: Records per Arrow part of an open batch (:attr:`Sink.convert_every`): about one ``consume()``, small enough
#: that the dicts are freed soon, large enough that Arrow's per-array overhead stays negligible.
CONVERT_EVERY = 1000
_RETRIABLE_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "503"}


@dataclass(frozen=True)
class S3SinkConfig(SinkConfig):
    """Settings of the object-storage sink (``inferlog sink s3``): the shared sink settings, plus where and how
    objects are written (the bucket and the S3 endpoint are the shared ``s3_*`` settings)."""

    s3_prefix: str = setting("archive", "Key prefix of archived objects; each topic is a table under it")
    s3_format: str = setting("parquet", "Object format", choices=("parquet", "avro", "jsonl"))
    s3_parquet_compression: str = setting("zstd", "Parquet compression", choices=("zstd", "snappy", "gzip", "none"))
    s3_multipart_bytes: int = setting(16 * 1024 * 1024, "Objects larger than this are uploaded in parts this size")

    def validate(self) -> None:
        super().validate()
        if self.s3_multipart_bytes < 5 * 1024 * 1024:
            raise ConfigError(f"{env_name('s3_multipart_bytes')} must be >= 5 MiB (the S3 minimum part size)")


@dataclass(frozen=True)
class S3Object:
    """One object to upload: key, bytes, and the records it holds."""

    key: str
    data: bytes
    count: int
    first_offset: int
    last_offset: int


def make_client(cfg: S3SinkConfig) -> Any:
    # Few botocore retries: the sink framework's retry helper owns backoff and pausing.
    return core.s3.client(cfg, attempts=2)


def classify_s3_error(exc: BaseException) -> bool:
    """True when an S3 failure is worth retrying: network trouble, 5xx, 429 and throttling codes."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return status >= 500 or status == 429 or code in _RETRIABLE_CODES
    return isinstance(exc, ConnectionError | HTTPClientError | OSError)


def _name(cfg: S3SinkConfig, topic: str, partition: int, hive: str, first_offset: int) -> str:
    prefix = cfg.s3_prefix.strip("/")
    base = f"{topic}/{hive}/{topic}+{partition}+{first_offset:020d}.{_EXT[cfg.s3_format]}"
    return f"{prefix}/{base}" if prefix else base


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def encode_objects(cfg: S3SinkConfig, batch: Batch) -> tuple[list[S3Object], list[Rejected]]:
    """Group the batch's records by Hive partition (first appearance order) and serialize each group.
    Pure: the same batch always gives the same keys and bytes, whether or not :meth:`S3Sink.convert` made
    parts of its table while it was open."""
    groups: dict[str, list[Item]] = {}
    rejected: list[Rejected] = []
    for item in batch.records:
        assert item.record is not None
        try:
            hive = hive_path(item.record) if item.time_us is None else hive_path_at(item.record, item.time_us)
        except (KeyError, TypeError, ValueError) as exc:
            rejected.append(Rejected(item, f"no partition path: {exc}", "unpartitionable"))
            continue
        groups.setdefault(hive, []).append(item)
    out: list[S3Object] = []
    table = _table(batch) if cfg.s3_format == "parquet" and groups else None
    rows: dict[int, int] = {}
    if table is not None and (len(groups) > 1 or table.num_rows != len(next(iter(groups.values())))):
        rows = {i.offset: n for n, i in enumerate(i for i in batch.items if i.record is not None)}
    for hive, items in groups.items():
        key = _name(cfg, batch.topic, batch.partition, hive, items[0].offset)
        if table is None:
            data = _serialize(cfg, batch, items, key)
        else:
            part = table.take(pa.array([rows[i.offset] for i in items], type=pa.int64())) if rows else table
            data = _parquet(cfg, part)
        out.append(S3Object(key, data, len(items), items[0].offset, items[-1].offset))
    return out, rejected


def _table(batch: Batch) -> pa.Table:
    """The Arrow table of every decodable item of ``batch``, in offset order: the parts made while it was open
    and the rest, as one chunk (the Parquet bytes then do not depend on where the parts were cut)."""
    tail = [i for i in batch.items[batch.converted :] if i.record is not None]
    parts = [*batch.chunks, _to_table(batch, tail)] if tail or not batch.chunks else batch.chunks
    return parts[0] if len(parts) == 1 else pa.concat_tables(parts).combine_chunks()


def _to_table(batch: Batch, items: list[Item]) -> pa.Table:
    live = [i for i in items if i.record is not None]
    recs = [i.record for i in live if i.record is not None]
    return to_table(batch.schema_name, recs, batch.topic, batch.partition, [i.offset for i in live])


def _parquet(cfg: S3SinkConfig, table: pa.Table) -> bytes:
    buf = io.BytesIO()
    compression = None if cfg.s3_parquet_compression == "none" else cfg.s3_parquet_compression
    pq.write_table(table, buf, compression=compression, row_group_size=128 * 1024)
    return buf.getvalue()


def _serialize(cfg: S3SinkConfig, batch: Batch, items: list[Item], key: str) -> bytes:
    fmt = cfg.s3_format
    if fmt == "avro":
        schema = fastavro.parse_schema(json.loads(load_schema(batch.schema_name)))
        buf = io.BytesIO()
        fastavro.writer(
            buf,
            schema,
            [i.record for i in items if i.record is not None],
            codec="deflate",
            sync_marker=hashlib.sha256(key.encode()).digest()[:16],  # deterministic bytes
        )
        return buf.getvalue()
    rows = (flatten(batch.schema_name, i.record, batch.topic, batch.partition, i.offset) for i in items if i.record)
    return b"".join(orjson.dumps(r, default=_json_default) + b"\n" for r in rows)


class S3Sink(Sink):
    """Parquet (or Avro / JSON Lines) objects on any S3 API.

    :param cfg: the sink settings (bucket, prefix, format, multipart size).
    :param client: a boto3 S3 client; made from ``cfg`` in :meth:`setup` when omitted.
    """

    kind = "s3"
    stage = "archived"
    deterministic_cuts = True

    def __init__(self, cfg: S3SinkConfig, client: Any = None) -> None:
        self.cfg = cfg
        self.client = client
        self._pool: ThreadPoolExecutor | None = None
        # Parquet and Avro store timestamps as int microseconds: no need for datetimes in between (JSON Lines
        # writes ISO strings, made from datetimes).
        self.raw_timestamps = cfg.s3_format != "jsonl"
        # Parquet is written from Arrow: the records become Arrow columns while the batch fills (Avro and JSON
        # Lines are written from the records themselves)
        self.convert_every = CONVERT_EVERY if cfg.s3_format == "parquet" else 0

    def setup(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.client is None:
            self.client = make_client(self.cfg)
        try:
            self.client.head_bucket(Bucket=self.cfg.s3_bucket)
        except (ClientError, BotoCoreError) as exc:
            raise WriteError(
                f"bucket {self.cfg.s3_bucket!r} at {self.cfg.s3_endpoint or 'AWS'} is not usable: {exc}",
                retriable=classify_s3_error(exc),
            ) from exc
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="s3-put")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def convert(self, batch: Batch, items: list[Item]) -> pa.Table:
        return _to_table(batch, items)

    def write(self, batch: Batch) -> list[Rejected]:
        objects, rejected = encode_objects(self.cfg, batch)
        if len(objects) == 1 or self._pool is None:
            for obj in objects:
                self.upload(obj)
        else:
            for fut in [self._pool.submit(self.upload, obj) for obj in objects]:
                fut.result()
        return rejected

    def upload(self, obj: S3Object) -> None:
        """Put one object; above ``s3_multipart_bytes``, boto3's transfer manager uploads it in parts of that size
        (concurrently; a failed upload is aborted). S3 errors become :class:`WriteError`."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        meta = {"first-offset": str(obj.first_offset), "last-offset": str(obj.last_offset), "records": str(obj.count)}
        ctype = _CONTENT_TYPE[self.cfg.s3_format]
        bucket, size = self.cfg.s3_bucket, self.cfg.s3_multipart_bytes
        try:
            if len(obj.data) <= size:  # one request, without the transfer manager's threads
                self.client.put_object(Bucket=bucket, Key=obj.key, Body=obj.data, ContentType=ctype, Metadata=meta)
            else:
                self.client.upload_fileobj(
                    io.BytesIO(obj.data),
                    bucket,
                    obj.key,
                    ExtraArgs={"ContentType": ctype, "Metadata": meta},
                    Config=TransferConfig(multipart_threshold=size, multipart_chunksize=size, max_concurrency=4),
                )
        except (ClientError, BotoCoreError) as exc:
            raise WriteError(f"upload s3://{bucket}/{obj.key}: {exc}", retriable=classify_s3_error(exc)) from exc


def archive_dataset(cfg: CommonConfig, prefix: str) -> Any:
    """The Parquet objects under ``s3://<bucket>/<prefix>/`` as a ``pyarrow.dataset`` with Hive partitions (the
    columns ``namespace``, ``isvc``, ``date``, ``hour``)."""
    import pyarrow.dataset as ds

    return ds.dataset(
        f"{cfg.s3_bucket}/{prefix.strip('/')}",
        filesystem=core.s3.arrow_filesystem(cfg),
        format="parquet",
        partitioning="hive",
        exclude_invalid_files=True,
    )


def archive_prefix(cfg: S3SinkConfig, topic: str) -> str:
    """Where the table of ``topic`` lives in the bucket: ``<s3_prefix>/<topic>``."""
    return f"{cfg.s3_prefix.strip('/')}/{topic}"


def stored(cfg: SinkConfig, topic: str, record_at: dict[tuple[int, int], str]) -> set[str]:
    """The records of ``record_at`` found in the archive, matched by their Kafka coordinates."""
    assert isinstance(cfg, S3SinkConfig)
    table = archive_dataset(cfg, archive_prefix(cfg, topic)).to_table(columns=["kafka_partition", "kafka_offset"])
    coords = zip(table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(), strict=True)
    return {record_at[at] for at in coords if at in record_at}


SPEC = SinkSpec(
    name=S3Sink.kind,
    help="archive to object storage as Parquet/Avro/JSON Lines, Hive-partitioned, exactly once in effect",
    config=S3SinkConfig,
    sink=S3Sink,
    stage=S3Sink.stage,
    stage_doc="the object-storage sink wrote the record into an uploaded object",
    stored=stored,
)
