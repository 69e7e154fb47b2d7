"""Reconciliation per model across stages, from the topics and the stores themselves.

For each model (namespace/isvc) the counts must balance::

    events = duplicates + dead_lettered + 2 * paired + request_only + response_only + pending

- *events*: CloudEvents in ``inferlog.events``; *duplicates*: repeats of an already seen event (same source, id,
  type, time and body: :func:`core.events.fingerprint`, as the join deduplicates; a retry that reuses an id
  is a new event);
- *paired* / *request_only* (the failed requests: KServe logs no non-200 response) / *response_only*:
  records in ``inferlog.records`` by status;
- *pending*: events whose pair is still open (within the pair timeout), so no record yet;
- *dead_lettered*: events routed to ``inferlog.deadletter``;
- *archived*: distinct records in the Parquet archive; *indexed*: documents in OpenSearch. Both should equal
  the records once the sinks have flushed.

``unaccounted`` is whatever the equation leaves over: it must be 0.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from core.config import CommonConfig
from core.events import EventError, fingerprint, from_kafka
from core.keys import split_join_key
from inferlog.scan import ScanError, ScanRange, scan
from schemas import AvroSerde
from schemas.wire import record_id, tick_time_us

Model = tuple[str, str]

CLOCK_MARGIN_MS = 10 * 60 * 1000  # how far the clocks of the ingest and the streams hosts may disagree


@dataclass
class ModelCounts:
    events: int = 0
    requests: int = 0
    responses: int = 0
    duplicates: int = 0
    paired: int = 0
    request_only: int = 0
    response_only: int = 0
    pending: int = 0
    dead_lettered: int = 0
    failures: int = 0
    archived: int = 0
    indexed: int = 0
    duplicate_records: int = 0

    @property
    def records(self) -> int:
        return self.paired + self.request_only + self.response_only

    @property
    def unaccounted(self) -> int:
        explained = self.duplicates + self.dead_lettered + 2 * self.paired + self.request_only
        return self.events - explained - self.response_only - self.pending

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "records": self.records, "unaccounted": self.unaccounted}


@dataclass
class Reconciliation:
    models: dict[Model, ModelCounts] = field(default_factory=dict)
    archive_error: str | None = None
    index_error: str | None = None

    def model(self, namespace: str, isvc: str) -> ModelCounts:
        return self.models.setdefault((namespace, isvc), ModelCounts())

    @property
    def balanced(self) -> bool:
        return all(
            c.unaccounted == 0 and c.duplicate_records == 0 and c.archived == c.records and c.indexed == c.records
            for c in self.models.values()
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "models": {f"{ns}/{isvc}": c.as_dict() for (ns, isvc), c in sorted(self.models.items())},
            "archive_error": self.archive_error,
            "index_error": self.index_error,
        }


def _model_of_key(key: bytes | None) -> Model:
    try:
        ns, isvc, _, _ = split_join_key((key or b"").decode())
        return ns, isvc
    except ValueError:
        return "-", "-"


def reconcile(
    cfg: CommonConfig,
    *,
    since_ms: int | None = None,
    archive_prefix: str | None = None,
    index_prefix: str = "inferlog",
    namespace: str | None = None,
) -> Reconciliation:
    out = Reconciliation()
    rng = ScanRange(start_ms=since_ms)
    event_keys: dict[str, int] = Counter()
    seen: set[tuple[str, str]] = set()
    dup_keys: Counter[str] = Counter()
    for msg in scan(cfg, cfg.topic_events, rng):
        key = (msg.key or b"").decode(errors="replace")
        try:
            ev = from_kafka(msg.headers, msg.value)
        except EventError:
            continue  # counted when it reaches the dead-letter topic
        if namespace and ev.namespace != namespace:
            continue
        c = out.model(ev.namespace, ev.isvc)
        c.events += 1
        c.requests += ev.is_request
        c.responses += ev.is_response
        ident = (key, fingerprint(ev, msg.timestamp_ms * 1000))  # as the join deduplicates
        if ident in seen:
            c.duplicates += 1
            dup_keys[key] += 1
        else:
            seen.add(ident)
            event_keys[key] += 1

    dead_keys: Counter[str] = Counter()
    for msg in _maybe_scan(cfg, cfg.topic_deadletter, rng):
        ns, isvc = _model_of_key(msg.key)
        if namespace and ns != namespace:
            continue
        out.model(ns, isvc).dead_lettered += 1
        dead_keys[(msg.key or b"").decode(errors="replace")] += 1

    # A record's identity (schemas.wire.record_id): the join key, or ``<join key>#<n>`` for the n-th record of
    # a reused id; the archive is matched by the records' Kafka coordinates.
    record_ids: set[str] = set()
    joined_keys: set[str] = set()
    record_at: dict[tuple[int, int], str] = {}
    serde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_records, "inference_record")
    # Records are produced after their events reached Kafka, so with ``since`` the records topic is read from
    # the same time (less a margin for clocks that differ between hosts), not from its beginning.
    records_from = None if since_ms is None else since_ms - CLOCK_MARGIN_MS
    for msg in _maybe_scan(cfg, cfg.topic_records, ScanRange(start_ms=records_from)):
        if tick_time_us(msg.headers) is not None or not msg.value:
            continue
        rec = serde.decode(msg.value)
        if namespace and rec["namespace"] != namespace:
            continue
        rid = record_id(rec["join_key"], msg.headers)
        if rid in record_ids:
            out.model(rec["namespace"], rec["isvc"]).duplicate_records += 1
            continue
        if rec["join_key"] not in event_keys:
            continue  # outside the scanned range of events
        record_ids.add(rid)
        joined_keys.add(rec["join_key"])
        record_at[(msg.partition, msg.offset)] = rid
        c = out.model(rec["namespace"], rec["isvc"])
        status = rec["status"]
        if status == "complete":
            c.paired += 1
        elif status == "request_only":
            c.request_only += 1
        elif status == "response_only":
            c.response_only += 1

    fserde = AvroSerde.for_topic(cfg.registry_url, cfg.topic_failures, "failure_signal")
    for msg in _maybe_scan(cfg, cfg.topic_failures, rng):
        if tick_time_us(msg.headers) is not None or not msg.value:
            continue
        rec = fserde.decode(msg.value)
        if not namespace or rec["namespace"] == namespace:
            out.model(rec["namespace"], rec["isvc"]).failures += 1

    for key, n in event_keys.items():
        if key not in joined_keys:
            ns, isvc = _model_of_key(key.encode())
            out.model(ns, isvc).pending += max(0, n - dead_keys.get(key, 0))

    _count_archive(cfg, out, record_at, archive_prefix)
    _count_index(cfg, out, record_at, index_prefix, cfg.topic_records)
    return out


def _maybe_scan(cfg: CommonConfig, topic: str, rng: ScanRange) -> Any:
    try:
        yield from scan(cfg, topic, rng)
    except ScanError as exc:
        if "does not exist" not in str(exc):
            raise


def _count_archive(
    cfg: CommonConfig, out: Reconciliation, record_at: dict[tuple[int, int], str], prefix: str | None
) -> None:
    """Distinct records of the records topic (by their Kafka partition and offset) found in the archive."""
    from inferlog.analytics import read_archive

    try:
        table = read_archive(cfg, prefix=prefix, columns=["kafka_partition", "kafka_offset"])
    except Exception as exc:  # no archive yet, or the store is down: say so, do not fail the report
        out.archive_error = str(exc)[:300]
        return
    found = {
        record_at[at]
        for at in zip(
            table.column("kafka_partition").to_pylist(), table.column("kafka_offset").to_pylist(), strict=True
        )
        if at in record_at
    }
    for rid in found:
        out.model(*_model_of_key(rid.encode())).archived += 1


def _count_index(
    cfg: CommonConfig, out: Reconciliation, record_at: dict[tuple[int, int], str], prefix: str, topic: str
) -> None:
    """Distinct records found in the index, by ``_id``. Only documents of the records read are asked for (their
    topic, and per partition the offsets from the first one read): ``--since`` does not aggregate the whole
    index."""
    if not record_at:
        return
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
    try:
        after: dict[str, Any] | None = None
        while True:
            body: dict[str, Any] = {
                "size": 0,
                "query": scope,
                "aggs": {"k": {"composite": {"size": 5000, "sources": [{"id": {"terms": {"field": "_id"}}}]}}},
            }
            if after:
                body["aggs"]["k"]["composite"]["after"] = after
            res = _search(cfg, f"{prefix}-records-*", body)
            agg = res.get("aggregations", {}).get("k", {})
            for bucket in agg.get("buckets", []):
                if bucket["key"]["id"] in wanted:
                    found.add(bucket["key"]["id"])
            after = agg.get("after_key")
            if not after or not agg.get("buckets"):
                break
    except Exception as exc:
        out.index_error = str(exc)[:300]
        return
    for rid in found:
        out.model(*_model_of_key(rid.encode())).indexed += 1


def _search(cfg: CommonConfig, index: str, body: dict[str, Any]) -> dict[str, Any]:
    import base64

    req = urllib.request.Request(
        f"{cfg.opensearch_url.rstrip('/')}/{index}/_search?ignore_unavailable=true&allow_no_indices=true",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if cfg.opensearch_user:
        token = base64.b64encode(f"{cfg.opensearch_user}:{cfg.opensearch_password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


COLUMNS = (
    ("events", "events"),
    ("duplicates", "dup"),
    ("paired", "paired"),
    ("request_only", "req-only (failed)"),
    ("response_only", "resp-only"),
    ("pending", "pending"),
    ("dead_lettered", "dead-letter"),
    ("archived", "archived"),
    ("indexed", "indexed"),
    ("unaccounted", "unaccounted"),
)


def render_table(rec: Reconciliation) -> str:
    head = ["model"] + [title for _, title in COLUMNS]
    rows = []
    total = ModelCounts()
    for (ns, isvc), c in sorted(rec.models.items()):
        d = c.as_dict()
        rows.append([f"{ns}/{isvc}"] + [str(d[k]) for k, _ in COLUMNS])
        for k in asdict(total):
            setattr(total, k, getattr(total, k) + getattr(c, k))
    td = total.as_dict()
    rows.append(["TOTAL"] + [str(td[k]) for k, _ in COLUMNS])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
    out.append("")
    out.append(
        "events = dup + dead-letter + 2*paired + req-only + resp-only + pending; archived and indexed should equal "
        "paired + req-only + resp-only once the sinks have flushed."
    )
    if rec.archive_error:
        out.append(f"archive not read: {rec.archive_error}")
    if rec.index_error:
        out.append(f"index not read: {rec.index_error}")
    out.append("BALANCED: every event is accounted for." if rec.balanced else "NOT BALANCED yet (see columns).")
    return "\n".join(out)
