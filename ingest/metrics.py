"""Prometheus metrics of the ingest (the cross-stage counter is :func:`inferlog.metrics.count`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("inferlog_ingest_requests", "HTTP requests answered, by status code", ["code"])
EVENTS = Counter(
    "inferlog_ingest_events",
    "CloudEvents by outcome (produced, spooled, sampled_out, claim_checked, drained, dead_lettered) per model",
    ["outcome", "namespace", "isvc"],
)
REJECTED = Counter("inferlog_ingest_rejected", "Requests rejected, by reason", ["reason"])
LATENCY = Histogram(
    "inferlog_ingest_request_seconds",
    "Time from request received to answer, by outcome (kafka, spool, rejected)",
    ["outcome"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SPOOL_RECORDS = Gauge("inferlog_ingest_spool_records", "Events in the local spool waiting for Kafka")
SPOOL_BYTES = Gauge("inferlog_ingest_spool_bytes", "Bytes in the local spool waiting for Kafka")
SPOOL_CAPACITY = Gauge("inferlog_ingest_spool_capacity_bytes", "Configured spool capacity")
KAFKA_UP = Gauge("inferlog_ingest_kafka_up", "1 when the ingest produces straight to Kafka, 0 while it spools")
