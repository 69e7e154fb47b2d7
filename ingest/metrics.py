"""Prometheus metrics of the ingest (the cross-stage counter is :func:`core.metrics.count`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from core import metrics as pipeline

REQUESTS = Counter("inferlog_ingest_requests", "HTTP requests answered, by status code", ["code"])
EVENTS = Counter(
    "inferlog_ingest_events",
    "CloudEvents by ingest-only outcome (sampled_out, claim_checked) per model; produced/spooled/dead_lettered/"
    "received are in inferlog_pipeline_events_total",
    ["outcome", "namespace", "isvc"],
)
REJECTED = Counter("inferlog_ingest_rejected", "Requests rejected, by reason", ["reason"])
# The ingest's own rejection reasons exist from the start, at 0, so that the first spool_full is an increase
# Prometheus can see (deploy/k8s/monitoring alerts on it); the policy's reasons appear when they first occur.
for _reason in ("method", "too_large", "shutting_down", "spool_full"):
    REJECTED.labels(reason=_reason)
LATENCY = Histogram(
    "inferlog_ingest_request_seconds",
    "Time from request received to answer, by outcome (kafka, spool, rejected)",
    ["outcome"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# With ``--workers N`` (prometheus_client's multiprocess mode, see ingest.workers) a scrape shows the workers
# combined: spool depth, bytes and capacity summed over the live workers, Kafka up only when every worker is.
# In a single process the modes change nothing.
SPOOL_RECORDS = Gauge(
    "inferlog_ingest_spool_records", "Events in the local spool waiting for Kafka", multiprocess_mode="livesum"
)
SPOOL_BYTES = Gauge(
    "inferlog_ingest_spool_bytes", "Bytes in the local spool waiting for Kafka", multiprocess_mode="livesum"
)
SPOOL_CAPACITY = Gauge("inferlog_ingest_spool_capacity_bytes", "Configured spool capacity", multiprocess_mode="livesum")
KAFKA_UP = Gauge(
    "inferlog_ingest_kafka_up",
    "1 when the ingest produces straight to Kafka, 0 while it spools",
    multiprocess_mode="livemin",
)


def exposition() -> tuple[bytes, str]:
    """The body and content type of ``/metrics``: this process's metrics, or with ``--workers N`` every
    worker's combined (each worker's files in the multiprocess directory)."""
    import os

    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_request_children: dict[str, Any] = {}
_latency_children: dict[str, Any] = {}


def observe_request(code: int, outcome: str, seconds: float) -> None:
    """Count one answered request and its latency (label children cached: this is the hot path)."""
    key = str(code)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(code=key)
    child.inc()
    lat = _latency_children.get(outcome)
    if lat is None:
        lat = _latency_children[outcome] = LATENCY.labels(outcome=outcome)
    lat.observe(seconds)


class Tally:
    """Per-model stage counts gathered on the hot path and handed to :func:`core.metrics.count` in bulk
    (on every scrape, every second, and at shutdown), so a request costs a dict update, not a label lookup."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}

    def add(self, stage: str, namespace: str, isvc: str, n: int = 1) -> None:
        key = (stage, namespace, isvc)
        self._counts[key] = self._counts.get(key, 0) + n

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for (stage, namespace, isvc), n in counts.items():
            pipeline.count(stage, namespace, isvc, n)


TALLY = Tally()
