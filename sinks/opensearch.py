"""Search sink: records and failure signals as OpenSearch documents, one index per namespace and day.

**Indices.** ``<index_prefix>-records-<namespace>-<yyyy.mm.dd>`` and
``<index_prefix>-failures-<namespace>-<yyyy.mm.dd>``, the day being the record's ``event_time`` (UTC).
Why not a data stream: a data stream only accepts ``create``, and after a rollover the same ``_id`` lands
in a new backing index, so a replay would duplicate documents. With the index chosen by record time, a
record always goes to the same index, and ``_id`` = join key makes a re-index an overwrite: exactly once
in effect. Per namespace keeps tenants apart (deletion, retention, permissions by index pattern); per day
keeps indices small and lets retention drop whole indices (ISM). Search all with ``<prefix>-records-*``.

**Mappings** are explicit, from index templates installed at start, and derived from the Avro schema's columns
(:mod:`schemas.columns`): keywords for ids, names and enums, analysed text for fields marked ``inferlog.text``,
dates, numbers, bodies as ``text`` (truncated to ``index_body_max_bytes``, flagged by ``*_body_truncated``; the
archive keeps them whole), header maps as ``flat_object``. A field added to the schema is mapped by the template
the sink installs at its next start; ``dynamic: false`` keeps a field the template does not know out of the index
(it stays in ``_source``). Field names are the Parquet column names.
Failure signals have ``_id`` = ``join_key#kind`` (one inference may fail in more than one way).

**Bulk** bodies are cut at ``bulk_bytes``. Items answered 429 or 5xx are retried alone, with backoff; other
item errors (mapping rejections, an ``_id`` over 512 bytes, …) are permanent and go to the dead-letter topic
with OpenSearch's reason. A request that fails as a whole with 429/5xx or no connection is retriable; the
framework then pauses the partition and retries.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson

from core.config import ConfigError, env_name, setting
from core.retry import Backoff, retry_sync
from schemas.columns import Column, columns
from schemas.wire import record_id
from sinks.config import SinkConfig
from sinks.errors import WriteError
from sinks.flatten import flatten_failure, flatten_record
from sinks.framework import Batch, Item, PartialWrite, Rejected, Sink
from sinks.groups import GroupCommit
from sinks.opensearch_client import BulkClient
from sinks.registry import SinkSpec

__all__ = ["SPEC", "BulkClient", "OpenSearchSink", "OpenSearchSinkConfig", "Prepared", "index_templates", "prepare"]


@dataclass(frozen=True)
class OpenSearchSinkConfig(SinkConfig):
    """Settings of the search sink (``inferlog sink opensearch``): the shared sink settings, plus the indices and
    bulk requests (the URL and credentials are the shared ``opensearch_*`` settings)."""

    index_prefix: str = setting("inferlog", "Index prefix: <prefix>-records-<namespace>-<yyyy.mm.dd>, -failures-")
    index_linger_s: float = setting(
        0.3,
        "OpenSearch sink: write a batch once it is this many wall-clock seconds old (searchable sooner; the "
        "partitions' batches waiting at once share a bulk request)",
    )
    bulk_bytes: int = setting(5 * 1024 * 1024, "Largest _bulk request body in bytes")
    index_replicas: int = setting(1, "number_of_replicas in the index template")
    index_refresh_s: float = setting(
        0.5,
        "refresh_interval in the index template: a document is searchable at most this long after its bulk "
        "request; shorter costs the index more refreshes and merges (applies to indices created after the change)",
    )
    index_shards: int = setting(1, "number_of_shards in the index template")
    index_body_max_bytes: int = setting(
        32 * 1024, "Bodies longer than this are truncated in the search document (the archive keeps them whole)"
    )

    def validate(self) -> None:
        super().validate()
        if self.bulk_bytes < 1:
            raise ConfigError(f"{env_name('bulk_bytes')} must be >= 1")
        if self.index_linger_s <= 0:
            raise ConfigError(f"{env_name('index_linger_s')} must be > 0")
        if self.index_refresh_s < 0.001:
            raise ConfigError(f"{env_name('index_refresh_s')} must be at least 0.001 (one millisecond)")
        prefix = self.index_prefix
        if not prefix or prefix != prefix.lower() or any(c in prefix for c in ' "*\\<|,>/?#:'):
            raise ConfigError(f'{env_name("index_prefix")}={prefix!r}: lowercase, no spaces or \\/*?"<>|,#:')
        if self.index_replicas < 0 or self.index_shards < 1:
            raise ConfigError(f"{env_name('index_replicas')} >= 0 and {env_name('index_shards')} >= 1 required")


_TEXT = {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 1024}}}
_BODY = {"type": "text", "norms": False, "index_options": "freqs"}
_BY_KIND: dict[str, dict[str, Any]] = {
    "string": {"type": "keyword"},
    "int": {"type": "integer"},
    "long": {"type": "long"},
    "float": {"type": "float"},
    "double": {"type": "double"},
    "boolean": {"type": "boolean"},
    "timestamp": {"type": "date"},
    "body": _BODY,
    "encoding": {"type": "keyword"},
    "str_map": {"type": "flat_object"},
    "list_map": {"type": "flat_object"},
}


def mapping_of(cols: tuple[Column, ...]) -> dict[str, Any]:
    """The index mapping of documents made of ``cols`` (see the module doc): the columns, then ``@timestamp``,
    ``doc_type`` and a ``<body>_truncated`` flag per body."""
    out: dict[str, Any] = {"@timestamp": {"type": "date"}, "doc_type": {"type": "keyword"}}
    for c in cols:
        out[c.name] = _TEXT if c.text and c.kind == "string" else _BY_KIND[c.kind]
        if c.kind == "body":
            out[f"{c.name}_truncated"] = {"type": "boolean"}
    return out


def mapping(schema_name: str) -> dict[str, Any]:
    """The index mapping of ``schema_name``'s documents, derived from its Avro schema."""
    return mapping_of(columns(schema_name))


def _dataset(schema_name: str) -> str:
    return "failures" if schema_name == "failure_signal" else "records"


def index_templates(cfg: OpenSearchSinkConfig) -> dict[str, dict[str, Any]]:
    """``{template name: body}`` for ``PUT _index_template/<name>``."""
    out = {}
    for schema_name in ("inference_record", "failure_signal"):
        dataset = _dataset(schema_name)
        out[f"{cfg.index_prefix}-{dataset}"] = {
            "index_patterns": [f"{cfg.index_prefix}-{dataset}-*"],
            "priority": 200,
            "template": {
                "settings": {
                    "number_of_shards": cfg.index_shards,
                    "number_of_replicas": cfg.index_replicas,
                    "refresh_interval": f"{round(cfg.index_refresh_s * 1000)}ms",
                },
                "mappings": {"dynamic": False, "properties": mapping(schema_name)},
            },
            "_meta": {"managed_by": "inferlog sink opensearch"},
        }
    return out


def _index_segment(value: str) -> str:
    # Index names: lowercase, none of \ / * ? " < > | space , # :
    out = "".join(c if c.isalnum() or c in "-_." else "_" for c in (value or "_").lower())
    return out.lstrip("-_.") or "_"


def index_name(cfg: OpenSearchSinkConfig, schema_name: str, rec: dict[str, Any]) -> str:
    t = rec["event_time"]
    if isinstance(t, int):
        t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=t)
    day = t.astimezone(dt.UTC).strftime("%Y.%m.%d")
    return f"{cfg.index_prefix}-{_dataset(schema_name)}-{_index_segment(rec.get('namespace') or '')}-{day}"


_DAY_US = 86_400 * 1_000_000


@lru_cache(maxsize=4096)
def _index_for_day(prefix: str, schema_name: str, namespace: str, day: int) -> str:
    t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return f"{prefix}-{_dataset(schema_name)}-{_index_segment(namespace)}-{t:%Y.%m.%d}"


def index_name_at(cfg: OpenSearchSinkConfig, schema_name: str, rec: dict[str, Any], t_us: int) -> str:
    """:func:`index_name` of ``rec`` when its record time is already known as ``t_us`` (cached per namespace
    and day)."""
    return _index_for_day(cfg.index_prefix, schema_name, rec.get("namespace") or "", t_us // _DAY_US)


def _doc_id(schema_name: str, rec: dict[str, Any], headers: list[tuple[str, bytes]] | None = None) -> str:
    """``_id`` = the record's identity (:func:`schemas.wire.record_id`): the join key, or ``<join key>#<n>`` for
    the n-th record of a reused id, so that a retried inference does not overwrite its failed attempt. A
    failure signal's ``_id`` adds its kind."""
    rid = record_id(str(rec["join_key"]), headers)
    if schema_name == "failure_signal":
        return f"{rid}#{rec.get('kind') or ''}"
    return rid


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@lru_cache(maxsize=1 << 16)
def _iso_second(s: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=s)).isoformat()[:-6]  # without "+00:00"


def _date(value: Any) -> Any:
    """A timestamp for the document: int epoch microseconds (decoded with ``timestamps_as_int``) become the
    string orjson writes for the same tz-aware UTC datetime (``…T08:00:00.010000+00:00``, no fraction when
    it is 0); datetimes and ``None`` stay as they are (orjson writes them)."""
    if type(value) is not int:
        return value
    s, us = divmod(value, 1_000_000)
    return f"{_iso_second(s)}.{us:06d}+00:00" if us else f"{_iso_second(s)}+00:00"


def record_document(rec: dict[str, Any], topic: str, partition: int, offset: int, limit: int) -> dict[str, Any]:
    """The search document of one decoded ``InferenceRecord``: the row of :func:`~sinks.flatten.flatten_record`
    (timestamps as ISO strings), then ``@timestamp``, ``doc_type`` and ``*_body_truncated``; bodies cut to
    ``limit`` characters (not bytes: cheap, and the limit only bounds the index size)."""
    doc = flatten_record(rec, topic, partition, offset, time=_date)
    doc["@timestamp"] = doc["event_time"]
    doc["doc_type"] = "record"
    for side, body_key in _BODY_KEYS:
        body = doc[body_key]
        if body is not None:
            truncated = len(body) > limit
            if truncated:
                doc[body_key] = body[:limit]
            doc[f"{side}_body_truncated"] = truncated
    return doc


def failure_document(rec: dict[str, Any], topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The search document of one decoded ``FailureSignal``: the row of :func:`~sinks.flatten.flatten_failure`
    (timestamps as ISO strings), then ``@timestamp`` and ``doc_type``."""
    doc = flatten_failure(rec, topic, partition, offset, time=_date)
    doc["@timestamp"] = doc["event_time"]
    doc["doc_type"] = "failure"
    return doc


_BODY_KEYS = (("request", "request_body"), ("response", "response_body"))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


@dataclass(frozen=True)
class Prepared:
    """One bulk item: the two NDJSON lines and the Kafka item it came from."""

    item: Item
    lines: bytes


def prepare(cfg: OpenSearchSinkConfig, batch: Batch) -> list[Prepared]:
    """The batch's records as bulk ``index`` actions (deterministic bytes). Timestamps may be datetimes or
    int epoch microseconds (the sink decodes them as ints): the documents are the same."""
    out = []
    failures = batch.schema_name == "failure_signal"
    topic, partition, limit = batch.topic, batch.partition, cfg.index_body_max_bytes
    dumps = orjson.dumps
    for item in batch.records:
        rec = item.record
        assert rec is not None
        if failures:
            doc = failure_document(rec, topic, partition, item.offset)
        else:
            doc = record_document(rec, topic, partition, item.offset, limit)
        index = (
            index_name(cfg, batch.schema_name, rec)
            if item.time_us is None
            else index_name_at(cfg, batch.schema_name, rec, item.time_us)
        )
        action = (
            b'{"index":{"_index":'
            + dumps(index)
            + b',"_id":'
            + dumps(_doc_id(batch.schema_name, rec, item.headers))
            + b"}}\n"
        )
        out.append(Prepared(item, action + dumps(doc, default=_json_default) + b"\n"))
    return out


def chunks(prepared: list[Prepared], max_bytes: int) -> Iterator[list[Prepared]]:
    """Split into bodies of at most ``max_bytes`` (a single larger item goes alone)."""
    chunk: list[Prepared] = []
    size = 0
    for p in prepared:
        if chunk and size + len(p.lines) > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(p)
        size += len(p.lines)
    if chunk:
        yield chunk


def _reason(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
    return text


class _Job:
    """One batch's bulk items in a :class:`BulkGroups`, and how they ended."""

    def __init__(self, items: list[Prepared]) -> None:
        self.items = items
        self.rejected: list[Rejected] = []
        self.again: list[Prepared] = []
        self.failure: BaseException | None = None  # the request failed as a whole

    def outcome(self) -> list[Rejected]:
        if self.failure is not None and not (isinstance(self.failure, WriteError) and self.failure.retriable):
            raise self.failure
        if self.again:
            why = f": {self.failure}" if self.failure is not None else " answered 429/5xx"
            raise PartialWrite(
                f"{len(self.again)} bulk items to retry{why}",
                retry=[p.item for p in self.again],
                rejected=self.rejected,
            ) from self.failure
        return self.rejected


class BulkGroups:
    """The partitions' batches that wait at the same time go out in one ``_bulk`` body (:mod:`sinks.groups`;
    bodies of at most ``max_bytes``). At 400 records/s over 12 partitions, a bulk per batch made bulks of a few
    dozen documents that queued behind each other. Each batch gets back its own outcome: the items refused for
    good, or a :class:`PartialWrite` naming only its items worth another try."""

    def __init__(self, bulk: Callable[[bytes], Any], max_bytes: int, senders: int) -> None:
        self._bulk, self._max_bytes = bulk, max_bytes
        self.commit = GroupCommit(self._send, senders)

    def submit(self, items: list[Prepared]) -> list[Rejected]:
        job = _Job(items)
        self.commit.run(job)
        return job.outcome()

    def _send(self, jobs: list[_Job]) -> None:
        owner = {id(p): j for j in jobs for p in j.items}
        todo = list(chunks([p for j in jobs for p in j.items], self._max_bytes))
        for n, chunk in enumerate(todo):
            try:
                res = self._bulk(b"".join(p.lines for p in chunk))
            except BaseException as exc:  # handed to every caller whose items were not sent
                for p in (p for c in todo[n:] for p in c):
                    j = owner[id(p)]
                    j.failure = exc
                    j.again.append(p)
                return
            if not res.get("errors"):
                continue
            for p, result in zip(chunk, res["items"], strict=True):
                outcome = next(iter(result.values()))
                status = int(outcome.get("status", 0))
                if status < 300:
                    continue
                if status == 429 or status >= 500:
                    owner[id(p)].again.append(p)
                else:
                    reason = f"HTTP {status} {_reason(outcome.get('error'))}"
                    owner[id(p)].rejected.append(Rejected(p.item, reason, "rejected"))


class OpenSearchSink(Sink):
    """Index records and failure signals; ``_id`` = join key.

    :param cfg: the sink settings (URL, credentials, index prefix, bulk size, template settings).
    """

    kind = "opensearch"
    stage = "indexed"
    deterministic_cuts = False  # documents do not depend on where batches are cut
    raw_timestamps = True  # documents get the ISO strings from int micros (cheaper to decode, same bytes)
    coalesced_writes = True  # the partitions' batches share bulk requests (BulkGroups)

    def __init__(self, cfg: OpenSearchSinkConfig) -> None:
        self.cfg = cfg
        self.client: BulkClient | None = None
        self.linger_s = cfg.index_linger_s
        self.groups: BulkGroups | None = None

    def setup(self) -> None:
        client = BulkClient(self.cfg)
        retry_sync(
            lambda: client.call("GET", "/"), Backoff(base_s=0.5, cap_s=5, attempts=0, deadline_s=60), what="connect"
        )
        for name, body in index_templates(self.cfg).items():
            client.call("PUT", f"/_index_template/{quote(name)}", orjson.dumps(body))
        self.attach(client)

    def attach(self, client: BulkClient) -> None:
        """Write through ``client`` (at most ``sink_max_in_flight`` bulk requests at once)."""
        self.client = client
        self.groups = BulkGroups(client.bulk, self.cfg.bulk_bytes, self.cfg.sink_max_in_flight)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def write(self, batch: Batch) -> list[Rejected]:
        """The batch's documents, sent in bulk requests with those of other partitions waiting at the same time
        (:class:`BulkGroups`). Items answered 429/5xx, and those of a request that failed as a whole, are handed
        back in a :class:`PartialWrite`: the framework's retry sends only them. Other item errors are permanent
        (returned, dead-lettered); a permanent failure of a whole request is raised."""
        assert self.groups is not None
        return self.groups.submit(prepare(self.cfg, batch))


def stored(cfg: SinkConfig, topic: str, record_at: dict[tuple[int, int], str]) -> set[str]:
    """The records of ``record_at`` found in the index, by ``_id``. Only documents of the records read are asked
    for (their topic, and per partition the offsets from the first one read), so a reconciliation ``--since``
    does not aggregate the whole index."""
    assert isinstance(cfg, OpenSearchSinkConfig)
    if not record_at:
        return set()
    first: dict[int, int] = {}
    for partition, offset in record_at:
        first[partition] = min(offset, first.get(partition, offset))
    scope = {
        "bool": {
            "filter": [{"term": {"kafka_topic": topic}}],
            "should": [
                {"bool": {"filter": [{"term": {"kafka_partition": p}}, {"range": {"kafka_offset": {"gte": lo}}}]}}
                for p, lo in sorted(first.items())
            ],
            "minimum_should_match": 1,
        }
    }
    wanted = set(record_at.values())
    found: set[str] = set()
    client = BulkClient(cfg, timeout_s=30)
    path = f"/{quote(cfg.index_prefix)}-{_dataset(cfg.schema_for(topic))}-*/_search"
    try:
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": 5000, "sources": [{"id": {"terms": {"field": "_id"}}}]}
            if after:
                composite["after"] = after
            body = {"size": 0, "query": scope, "aggs": {"k": {"composite": composite}}}
            res = client.call("POST", path + "?ignore_unavailable=true&allow_no_indices=true", orjson.dumps(body))
            agg = (res or {}).get("aggregations", {}).get("k", {})
            found.update(b["key"]["id"] for b in agg.get("buckets", []) if b["key"]["id"] in wanted)
            after = agg.get("after_key")
            if not after or not agg.get("buckets"):
                return found
    finally:
        client.close()


SPEC = SinkSpec(
    name=OpenSearchSink.kind,
    help="index into OpenSearch, _id = join key, one index per namespace/day",
    config=OpenSearchSinkConfig,
    sink=OpenSearchSink,
    stage=OpenSearchSink.stage,
    stage_doc="the search sink had the record accepted by OpenSearch",
    stored=stored,
)
