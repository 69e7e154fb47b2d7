"""Lakehouse sink: records and failure signals appended to Apache Iceberg tables (pyiceberg), exactly once.

**Tables.** One per topic, ``<iceberg_namespace>.<topic with dots as _>`` (``inferlog.inferlog_records``), with
the Arrow schema of the topic's rows (:mod:`schemas.columns`), partitioned by ``namespace``, ``isvc`` and
``day(event_time)``, data files in Parquet (zstd) under the warehouse (default ``s3://<bucket>/iceberg``). A
column added to the Avro schema is added to the table (nullable) at the sink's next start.

**Catalog.** pyiceberg's SQL catalog on SQLite by default (a file: right for one sink process, as in the local
stack); for several replicas, a REST catalog (``iceberg_catalog_uri=https://…``, ``iceberg_catalog_token``) or a
shared SQL database (``postgresql+psycopg2://…``).

**Exactly once** (the approach of the Kafka Connect Iceberg sink): every append's snapshot summary carries the
consumer group and, per topic and partition, the offset after the last record the table holds
(``inferlog.offsets``, cumulative: the group's other partitions are carried forward, so the newest snapshot of
the group is enough and expiring old snapshots loses nothing). Rows and offsets land in one atomic commit, or
not at all. So:

- on assignment the runner skips to the table's offsets (:meth:`IcebergSink.stored_offsets`), ahead of Kafka's
  committed offsets after a crash between the two commits;
- :meth:`IcebergSink.write` re-reads the table's offset first and appends only the records after it (a retry of
  a batch whose commit did land, a writer that lost its partition in a rebalance: nothing twice);
- the check and the commit are tied by Iceberg's optimistic concurrency (the commit asserts the snapshot it
  read is still current). pyiceberg's own commit retry re-bases an append without re-checking the offsets, so
  it is turned off on these tables (``commit.retry.num-retries=0``): a conflict is a retriable
  :class:`~sinks.errors.WriteError`, and the framework's retry checks again.

Commits of one process are serialised (threads would only conflict with each other); each costs a catalog
round trip and a manifest write (~150-300 ms here), so batches should be large: cuts are those of the archive
(``flush_records``, ``flush_bytes``, ``flush_span_s`` of record time), and the batches of the partitions that
wait at the same time go into one commit (:mod:`sinks.groups`): one snapshot, not one per partition.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from core.config import ConfigError, env_name, setting
from schemas.columns import arrow_schema
from sinks.config import SinkConfig
from sinks.errors import WriteError
from sinks.flatten import to_table
from sinks.framework import Batch, Rejected, Sink
from sinks.groups import GroupCommit
from sinks.registry import SinkSpec

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

__all__ = ["SPEC", "IcebergSink", "IcebergSinkConfig", "load_table", "table_offsets"]

log = logging.getLogger("sinks.iceberg")

CATALOG_NAME = "inferlog"  # the SQL catalog keys tables by it: every process must use the same
OFFSETS_KEY = "inferlog.offsets"
GROUP_KEY = "inferlog.group"
TP = tuple[str, int]

TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "commit.retry.num-retries": "0",  # see the module doc: the offset check must run before every commit
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}


@dataclass(frozen=True)
class IcebergSinkConfig(SinkConfig):
    """Settings of the lakehouse sink (``inferlog sink iceberg``): the shared sink settings, plus the catalog
    and the warehouse (the object storage is the shared ``s3_*`` settings)."""

    iceberg_catalog_uri: str = setting(
        "sqlite:////var/tmp/inferlog-iceberg/catalog.db",
        "Iceberg catalog: sqlite:////path (one process), postgresql+psycopg2://... or a REST catalog https://...",
    )
    iceberg_catalog_token: str = setting("", "Bearer token of a REST catalog (empty: none)", secret=True)
    iceberg_warehouse: str = setting("", "Warehouse location (empty: s3://<s3_bucket>/iceberg)")
    iceberg_namespace: str = setting("inferlog", "Iceberg namespace of the tables (one table per topic)")

    def validate(self) -> None:
        super().validate()
        uri = self.iceberg_catalog_uri
        if "://" not in uri:
            raise ConfigError(f"{env_name('iceberg_catalog_uri')}={uri!r}: a sqlite://, postgresql:// or https:// URI")
        if not self.iceberg_namespace or "." in self.iceberg_namespace:
            raise ConfigError(f"{env_name('iceberg_namespace')} must be a non-empty name without dots")

    def catalog_type(self) -> str:
        return "rest" if self.iceberg_catalog_uri.startswith(("http://", "https://")) else "sql"

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg's catalog and FileIO properties for these settings."""
        props = {
            "type": self.catalog_type(),
            "uri": self.iceberg_catalog_uri,
            "warehouse": self.iceberg_warehouse or f"s3://{self.s3_bucket}/iceberg",
            "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
            # without a region, pyarrow asks AWS where the bucket is, even for another S3 endpoint
            "s3.region": self.s3_region,
        }
        if self.s3_endpoint:
            props["s3.endpoint"] = self.s3_endpoint
            props["s3.force-virtual-addressing"] = "false"
        if self.s3_access_key:
            props["s3.access-key-id"] = self.s3_access_key
        if self.s3_secret_key:
            props["s3.secret-access-key"] = self.s3_secret_key
        if self.iceberg_catalog_token:
            props["token"] = self.iceberg_catalog_token
        return props

    def table_name(self, topic: str) -> str:
        return f"{self.iceberg_namespace}.{''.join(c if c.isalnum() else '_' for c in topic)}"


def load_catalog(cfg: IcebergSinkConfig) -> Catalog:
    from pyiceberg.catalog import load_catalog as pyiceberg_catalog

    if cfg.iceberg_catalog_uri.startswith("sqlite:///"):
        Path(cfg.iceberg_catalog_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return pyiceberg_catalog(CATALOG_NAME, **cfg.catalog_properties())


def ensure_table(catalog: Catalog, identifier: str, schema: pa.Schema) -> Table:
    """The table, created if missing (another process may create it at the same moment) and evolved with the
    schema's new columns; pyiceberg's own commit retry off."""
    from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError, TableAlreadyExistsError
    from pyiceberg.transforms import DayTransform

    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(identifier.rsplit(".", 1)[0])
    if not catalog.table_exists(identifier):
        try:
            create = catalog.create_table_transaction(identifier, schema=schema, properties=TABLE_PROPERTIES)
            with create as txn, txn.update_spec() as spec:
                spec.add_identity("namespace")
                spec.add_identity("isvc")
                spec.add_field("event_time", DayTransform(), "event_day")
        except (TableAlreadyExistsError, CommitFailedException):  # lost the race: the other one created it
            if not catalog.table_exists(identifier):
                raise
    table = catalog.load_table(identifier)
    missing = [f.name for f in schema if f.name not in table.schema().column_names]
    if missing:
        with table.update_schema() as update:
            update.union_by_name(schema)
        log.info("iceberg table evolved", extra={"table": identifier, "added": missing})
    if table.properties.get("commit.retry.num-retries") != "0":
        with table.transaction() as tx:
            tx.set_properties({"commit.retry.num-retries": "0"})
    return table


def load_table(cfg: IcebergSinkConfig, topic: str) -> Table:
    """The table of ``topic`` (for readers: analytics, reconciliation, tests)."""
    return load_catalog(cfg).load_table(cfg.table_name(topic))


def table_offsets(table: Table, group: str) -> dict[TP, int]:
    """Per (topic, partition), the offset after the last record ``group`` appended: the offsets map of the
    newest snapshot the group wrote (maps are cumulative)."""
    from pyiceberg.table.snapshots import ancestors_of

    snap = table.current_snapshot()
    if snap is None:
        return {}
    for s in ancestors_of(snap, table.metadata):
        summary = s.summary
        if summary is not None and summary.get(GROUP_KEY) == group and (raw := summary.get(OFFSETS_KEY)):
            return {(t, int(p)): int(o) for t, parts in json.loads(raw).items() for p, o in parts.items()}
    return {}


def _summary(group: str, offsets: dict[TP, int]) -> dict[str, str]:
    by_topic: dict[str, dict[str, int]] = {}
    for (t, p), nxt in sorted(offsets.items()):
        by_topic.setdefault(t, {})[str(p)] = nxt
    return {GROUP_KEY: group, OFFSETS_KEY: json.dumps(by_topic, sort_keys=True)}


def _conform(data: pa.Table, target: pa.Schema) -> pa.Table:
    """``data`` in the table's column order and types (an evolved table has its new columns last; a column the
    records no longer have is null)."""
    n = data.num_rows
    cols = [data.column(f.name) if f.name in data.column_names else pa.nulls(n, f.type) for f in target]
    return pa.Table.from_arrays(cols, names=target.names).cast(target)


@dataclass
class _Append:
    """One batch in a group commit, and the error its commit ended with."""

    batch: Batch
    error: BaseException | None = None


class IcebergSink(Sink):
    """Append records and failure signals to Iceberg tables, with the consumed offsets in each snapshot.

    :param cfg: the sink settings (catalog, warehouse, namespace; consumer group).
    """

    kind = "iceberg"
    stage = "tabled"
    deterministic_cuts = True  # large batches, as the archive's: each commit has a fixed cost
    ordered_writes = True  # the snapshot offsets say "all before N": a later batch must not land first
    coalesced_writes = True  # the partitions' batches waiting at once share one commit (sinks.groups)
    raw_timestamps = True  # Arrow takes int microseconds for timestamp columns

    def __init__(self, cfg: IcebergSinkConfig) -> None:
        self.cfg = cfg
        self.group = cfg.group_for(self.kind)
        self.tables: dict[str, Table] = {}
        self._commit = threading.Lock()
        self._groups: GroupCommit[_Append] = GroupCommit(self._append)

    def setup(self) -> None:
        try:
            catalog = load_catalog(self.cfg)
            for topic in self.cfg.topics():
                schema = arrow_schema(self.cfg.schema_for(topic))
                self.tables[topic] = ensure_table(catalog, self.cfg.table_name(topic), schema)
        except OSError as exc:  # the object storage is away
            raise WriteError(f"iceberg warehouse not reachable: {exc}", retriable=True) from exc
        except Exception as exc:
            if isinstance(exc, WriteError):
                raise
            raise WriteError(f"iceberg catalog {self.cfg.iceberg_catalog_uri}: {exc}", retriable=False) from exc

    def stored_offsets(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        out: dict[TP, int] = {}
        with self._commit:
            for topic in {t for t, _ in partitions}:
                table = self.tables[topic]
                table.refresh()
                out.update((tp, o) for tp, o in table_offsets(table, self.group).items() if tp in partitions)
        return out

    def write(self, batch: Batch) -> list[Rejected]:
        job = _Append(batch)
        self._groups.run(job)  # with the batches of other partitions waiting at the same time: one commit
        if job.error is not None:
            raise job.error
        return []

    def _append(self, jobs: list[_Append]) -> None:
        """GroupCommit's send: one commit per table for the batches of ``jobs`` (one per partition at most)."""
        by_topic: dict[str, list[_Append]] = {}
        for job in jobs:
            by_topic.setdefault(job.batch.topic, []).append(job)
        for topic, group in by_topic.items():
            try:
                self._append_to(self.tables[topic], group)
            except BaseException as exc:  # the whole commit failed: each of its batches raises it
                for job in group:
                    job.error = exc

    def _append_to(self, table: Table, jobs: list[_Append]) -> None:
        from pyiceberg.exceptions import CommitFailedException

        with self._commit:
            table.refresh()
            held = table_offsets(table, self.group)
            parts: list[pa.Table] = []
            offsets = dict(held)
            for job in jobs:
                batch = job.batch
                tp = (batch.topic, batch.partition)
                done = held.get(tp, -1)
                if done > batch.end_offset:
                    continue  # the whole batch is in the table already (a retry after a commit that did land)
                items = [i for i in batch.records if i.offset >= done]
                recs = [i.record for i in items if i.record is not None]
                data = to_table(batch.schema_name, recs, batch.topic, batch.partition, [i.offset for i in items])
                parts.append(_conform(data, table.schema().as_arrow()))
                offsets[tp] = batch.end_offset + 1
            if not parts:
                return
            try:
                table.append(pa.concat_tables(parts), snapshot_properties=_summary(self.group, offsets))
            except CommitFailedException as exc:  # another writer committed first: check the offsets again
                raise WriteError(f"iceberg commit conflict on {table.name()}: {exc}", retriable=True) from exc
            except OSError as exc:
                raise WriteError(f"iceberg warehouse not reachable: {exc}", retriable=True) from exc

    def close(self) -> None:
        self.tables.clear()


def stored(cfg: SinkConfig, topic: str, record_at: dict[tuple[int, int], str]) -> set[str] | None:
    """The records of ``record_at`` found in the topic's table, matched by their Kafka coordinates; ``None`` when
    there is no such table (or no SQLite catalog file): the sink is not in use here."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    assert isinstance(cfg, IcebergSinkConfig)
    uri = cfg.iceberg_catalog_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None  # and do not create one by looking
    try:
        table = load_table(cfg, topic)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    rows = table.scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    coords = zip(rows.column("kafka_partition").to_pylist(), rows.column("kafka_offset").to_pylist(), strict=True)
    return {record_at[at] for at in coords if at in record_at}


SPEC = SinkSpec(
    name=IcebergSink.kind,
    help="append to Apache Iceberg tables (SQL or REST catalog), offsets in each snapshot: exactly once",
    config=IcebergSinkConfig,
    sink=IcebergSink,
    stage=IcebergSink.stage,
    stage_doc="the lakehouse sink committed the record to an Iceberg table",
    stored=stored,
)
