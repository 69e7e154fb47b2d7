"""Reconciliation per model across stages, from the topics and the stores themselves.

For each model (namespace/isvc) the counts must balance::

    events = duplicates + dead_lettered + 2 * paired + request_only + response_only + pending

- *events*: CloudEvents in ``inferlog.events``; *duplicates*: repeats of an already seen event (same source, id,
  type, time and body: :func:`core.events.fingerprint`, as the join deduplicates; a retry that reuses an id
  is a new event);
- *paired* / *request_only* (the failed requests: KServe logs no non-200 response) / *response_only*:
  records in ``inferlog.records`` by status;
- *pending*: events whose pair is still open (within the pair timeout), so no record yet;
- a record is counted once, by its latest revision: a one-sided record superseded by a late partner (revision 2,
  same identity) counts as one *paired* record (its two events), and also in *corrected*;
- *failures*: failure signals in force: those sent, less the ones retracted by a correction;
- *tokens* (prompt / completion): the sums of ``llm_prompt_tokens`` / ``llm_completion_tokens`` over the records
  that carry them (LLM models, :mod:`streams.llm`);
- *dead_lettered*: events routed to ``inferlog.deadletter``;
- one column per registered sink (:mod:`sinks.registry`), named by its stage: *archived* (distinct records in
  the Parquet archive), *indexed* (documents in OpenSearch), *tabled* (rows in the Iceberg tables). Each should
  equal the records once the sinks have flushed. Each sink is read with its own settings (prefixes, index
  names, catalog), from the environment as its process reads them.

``unaccounted`` is whatever the equation leaves over: it must be 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from core import config
from core.config import CommonConfig
from core.events import EventError, fingerprint, from_kafka
from core.keys import split_join_key
from inferlog.scan import ScanError, ScanRange, scan
from schemas import AvroSerde
from schemas.wire import record_id, tick_time_us
from sinks.config import SinkConfig
from sinks.registry import SinkSpec, specs

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
    corrected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duplicate_records: int = 0
    #: records found in each sink's store, by the sink's stage (``archived``, ``indexed``, ...)
    stored: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.paired + self.request_only + self.response_only

    @property
    def unaccounted(self) -> int:
        explained = self.duplicates + self.dead_lettered + 2 * self.paired + self.request_only
        return self.events - explained - self.response_only - self.pending

    def as_dict(self) -> dict[str, int]:
        plain = {k: v for k, v in asdict(self).items() if k != "stored"}
        return {**plain, **self.stored, "records": self.records, "unaccounted": self.unaccounted}


@dataclass
class Reconciliation:
    models: dict[Model, ModelCounts] = field(default_factory=dict)
    #: the stages of the sinks read (the table's sink columns, in registry order)
    stages: list[str] = field(default_factory=list)
    #: why a sink's store could not be read, by stage
    errors: dict[str, str] = field(default_factory=dict)
    #: the stages of registered sinks whose store does not exist here (not deployed): no column
    absent: list[str] = field(default_factory=list)

    def model(self, namespace: str, isvc: str) -> ModelCounts:
        return self.models.setdefault((namespace, isvc), ModelCounts())

    @property
    def balanced(self) -> bool:
        return all(
            c.unaccounted == 0
            and c.duplicate_records == 0
            and all(c.stored.get(stage, 0) == c.records for stage in self.stages)
            for c in self.models.values()
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "balanced": self.balanced,
            "models": {f"{ns}/{isvc}": c.as_dict() for (ns, isvc), c in sorted(self.models.items())},
            "sinks": self.stages,
            "errors": self.errors,
            "absent": self.absent,
        }


def _model_of_key(key: bytes | None) -> Model:
    try:
        ns, isvc, _, _ = split_join_key((key or b"").decode())
        return ns, isvc
    except ValueError:
        return "-", "-"


def sink_configs(env: Mapping[str, str] | None = None) -> list[tuple[SinkSpec, SinkConfig]]:
    """Every registered sink with its settings, read from ``env`` (default: this process's environment)."""
    return [(spec, config.load(spec.config, env=env)) for spec in specs()]


def reconcile(
    cfg: CommonConfig,
    *,
    since_ms: int | None = None,
    namespace: str | None = None,
    sinks: list[tuple[SinkSpec, SinkConfig]] | None = None,
) -> Reconciliation:
    """The reconciliation of ``cfg``'s topics since ``since_ms``, with ``sinks`` (default: every registered sink,
    with its settings from the environment) read for the records they hold."""
    sinks = sink_configs() if sinks is None else sinks
    out = Reconciliation(stages=[spec.stage for spec, _ in sinks])
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
    revisions: set[tuple[str, int]] = set()
    latest: dict[str, tuple[int, dict[str, Any]]] = {}  # record id -> (revision, record)
    joined_keys: set[str] = set()
    record_at: dict[tuple[int, int], str] = {}
    serde = AvroSerde.for_topic(
        cfg.registry_url, cfg.topic_records, "inference_record", registry_auth=cfg.registry_auth
    )
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
        revision = int(rec.get("revision") or 1)
        if (rid, revision) in revisions:
            out.model(rec["namespace"], rec["isvc"]).duplicate_records += 1
            continue
        if rec["join_key"] not in event_keys:
            continue  # outside the scanned range of events
        revisions.add((rid, revision))
        joined_keys.add(rec["join_key"])
        record_at[(msg.partition, msg.offset)] = rid
        if rid not in latest or revision > latest[rid][0]:
            latest[rid] = (revision, rec)
    for revision, rec in latest.values():
        c = out.model(rec["namespace"], rec["isvc"])
        status = rec["status"]
        if status == "complete":
            c.paired += 1
        elif status == "request_only":
            c.request_only += 1
        elif status == "response_only":
            c.response_only += 1
        c.corrected += revision > 1
        c.prompt_tokens += rec.get("llm_prompt_tokens") or 0
        c.completion_tokens += rec.get("llm_completion_tokens") or 0

    fserde = AvroSerde.for_topic(
        cfg.registry_url, cfg.topic_failures, "failure_signal", registry_auth=cfg.registry_auth
    )
    for msg in _maybe_scan(cfg, cfg.topic_failures, rng):
        if tick_time_us(msg.headers) is not None or not msg.value:
            continue
        rec = fserde.decode(msg.value)
        if not namespace or rec["namespace"] == namespace:
            out.model(rec["namespace"], rec["isvc"]).failures += -1 if rec["kind"] == "retraction" else 1

    for key, n in event_keys.items():
        if key not in joined_keys:
            ns, isvc = _model_of_key(key.encode())
            out.model(ns, isvc).pending += max(0, n - dead_keys.get(key, 0))

    for spec, sink_cfg in sinks:
        try:
            found = spec.stored(sink_cfg, cfg.topic_records, record_at) if record_at else set()
        except Exception as exc:  # no store yet, or it is down: say so, do not fail the report
            out.errors[spec.stage] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        if found is None:  # this sink's store was never created: it is not deployed here
            out.stages.remove(spec.stage)
            out.absent.append(spec.stage)
            continue
        for rid in found:
            c = out.model(*_model_of_key(rid.encode()))
            c.stored[spec.stage] = c.stored.get(spec.stage, 0) + 1
    return out


def _maybe_scan(cfg: CommonConfig, topic: str, rng: ScanRange) -> Any:
    try:
        yield from scan(cfg, topic, rng)
    except ScanError as exc:
        if "does not exist" not in str(exc):
            raise


COLUMNS = (
    ("events", "events"),
    ("duplicates", "dup"),
    ("paired", "paired"),
    ("request_only", "req-only (failed)"),
    ("response_only", "resp-only"),
    ("pending", "pending"),
    ("dead_lettered", "dead-letter"),
    ("corrected", "corrected"),
)
#: shown when some model's records carry token counts
TOKEN_COLUMNS = (("prompt_tokens", "prompt tok"), ("completion_tokens", "compl tok"))


def render_table(rec: Reconciliation) -> str:
    tokens = TOKEN_COLUMNS if any(c.prompt_tokens or c.completion_tokens for c in rec.models.values()) else ()
    columns = [*COLUMNS, *((stage, stage) for stage in rec.stages), *tokens, ("unaccounted", "unaccounted")]
    head = ["model"] + [title for _, title in columns]
    rows = []
    total = ModelCounts()
    for (ns, isvc), c in sorted(rec.models.items()):
        d = c.as_dict()
        rows.append([f"{ns}/{isvc}"] + [str(d.get(k, 0)) for k, _ in columns])
        for k in asdict(total):
            if k != "stored":
                setattr(total, k, getattr(total, k) + getattr(c, k))
        for stage, n in c.stored.items():
            total.stored[stage] = total.stored.get(stage, 0) + n
    td = total.as_dict()
    rows.append(["TOTAL"] + [str(td.get(k, 0)) for k, _ in columns])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: list[str]) -> str:
        return "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-1]] + ["  ".join("-" * w for w in widths), line(rows[-1])]
    out.append("")
    out.append(
        f"events = dup + dead-letter + 2*paired + req-only + resp-only + pending; {' and '.join(rec.stages)} "
        "should equal paired + req-only + resp-only once the sinks have flushed. A record counts once, by its "
        "latest revision: a one-sided record whose partner came late is counted as paired (and as corrected)."
    )
    for stage, error in rec.errors.items():
        out.append(f"{stage}: store not read: {error}")
    for stage in rec.absent:
        out.append(f"{stage}: that sink's store does not exist here (not deployed): left out")
    out.append("BALANCED: every event is accounted for." if rec.balanced else "NOT BALANCED yet (see columns).")
    return "\n".join(out)
