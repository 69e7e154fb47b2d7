"""Prometheus metrics shared by every stage, so an operator can reconcile counts per model.

``inferlog_pipeline_events_total{stage, namespace, isvc}`` counts the same unit (one CloudEvent, or one
record derived from it) as it passes each stage:

=================  ===========================================================================
stage              meaning
=================  ===========================================================================
received           ingest accepted a CloudEvent (after auth, sampling, validation)
produced           ingest's event acknowledged by Kafka (directly or on spool drain)
spooled            ingest's event fsynced to the local spool because Kafka was away or slow
paired             streams emitted a complete record (request + response)
orphaned           streams emitted a request-only or response-only record after the pair timeout
corrected          streams emitted a complete record superseding an orphaned one (its partner came late)
dead_lettered      any stage routed the input to the dead-letter topic
=================  ===========================================================================

Each sink adds its own stage when it is registered (:mod:`sinks.registry`): ``archived`` (object storage),
``indexed`` (OpenSearch), ``tabled`` (Iceberg), each counting the records it wrote.

Component-specific metrics (latency histograms, spool depth, lag, ...) live in each package and use the
``inferlog_`` prefix too.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

#: stage → what it counts; the sinks register theirs with :func:`register_stage`.
STAGES: dict[str, str] = {
    "received": "ingest accepted a CloudEvent",
    "produced": "ingest's event acknowledged by Kafka",
    "spooled": "ingest's event fsynced to the local spool",
    "paired": "streams emitted a complete record",
    "corrected": "streams emitted a complete record superseding an orphaned one (its partner came late)",
    "orphaned": "streams emitted a request-only or response-only record",
    "dead_lettered": "any stage routed the input to the dead-letter topic",
}


def register_stage(stage: str, doc: str) -> None:
    """Declare a stage (idempotent for the same stage and doc)."""
    known = STAGES.get(stage)
    if known is not None and known != doc:
        raise ValueError(f"pipeline stage {stage!r} is already declared as {known!r}")
    STAGES[stage] = doc


PIPELINE = Counter(
    "inferlog_pipeline_events",
    "Events or records that passed a pipeline stage, per model",
    ["stage", "namespace", "isvc"],
)


# The labelled child per (stage, namespace, isvc): ``Counter.labels`` validates and locks on every call, which
# cost ~10 µs per pair in the streams worker; a model's children never go away, so caching them is exact.
_children: dict[tuple[str, str, str], Any] = {}


def count(stage: str, namespace: str, isvc: str, n: int = 1) -> None:
    """Count ``n`` units at ``stage`` for one model. Unknown stages are a programming error."""
    key = (stage, namespace, isvc)
    child = _children.get(key)
    if child is None:
        if stage not in STAGES:
            raise ValueError(f"unknown pipeline stage {stage!r}")
        child = _children[key] = PIPELINE.labels(stage=stage, namespace=namespace or "-", isvc=isvc or "-")
    child.inc(n)
