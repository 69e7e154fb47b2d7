"""Topic bootstrap: create inferlog's topics with their partition counts and configs, idempotently."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from core.config import CommonConfig
from core.errors import InferlogError
from core.kafka import base_config

log = logging.getLogger("core.topics")


class TopicError(InferlogError):
    """A topic could not be created or has an incompatible layout."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(cfg: CommonConfig) -> list[TopicSpec]:
    """The topics of DESIGN.md. Events, records and failures are co-partitioned."""
    return [
        TopicSpec(
            cfg.topic_events,
            cfg.partitions,
            {"retention.ms": str(cfg.events_retention_ms), "max.message.bytes": "1048588"},
        ),
        TopicSpec(cfg.topic_records, cfg.partitions),
        TopicSpec(cfg.topic_failures, cfg.partitions),
        TopicSpec(cfg.topic_metadata, 1, {"cleanup.policy": "compact"}),
        TopicSpec(cfg.topic_deadletter, cfg.partitions),
    ]


def ensure_topics(
    cfg: CommonConfig, specs: list[TopicSpec] | None = None, *, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create missing topics; grow partition counts that are too small; leave the rest alone.

    Returns ``{topic: "created" | "exists" | "grown"}``. A topic with *more* partitions than asked is an
    error, because co-partitioning would silently break.
    """
    specs = topic_specs(cfg) if specs is None else specs
    admin = AdminClient(base_config(cfg))
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise TopicError(f"cannot reach Kafka at {cfg.kafka_bootstrap}: {exc}", retriable=True) from exc
    result: dict[str, str] = {}
    to_create = []
    to_grow = []
    for spec in specs:
        existing = meta.topics.get(spec.name)
        if existing is None or existing.error is not None:
            to_create.append(NewTopic(spec.name, spec.partitions, cfg.replication_factor, config=dict(spec.config)))
            continue
        have = len(existing.partitions)
        if have < spec.partitions:
            to_grow.append(NewPartitions(spec.name, spec.partitions))
            result[spec.name] = "grown"
        elif have > spec.partitions and spec.partitions > 1:
            raise TopicError(
                f"topic {spec.name} has {have} partitions, expected {spec.partitions}: "
                "set INFERLOG_PARTITIONS to match or recreate the topic"
            )
        else:
            result[spec.name] = "exists"
    if to_create:
        for name, fut in admin.create_topics(to_create, request_timeout=timeout_s).items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    result[name] = "exists"
                else:
                    raise TopicError(f"cannot create topic {name}: {exc}") from exc
    if to_grow:
        for name, fut in admin.create_partitions(to_grow, request_timeout=timeout_s).items():
            try:
                fut.result()
            except KafkaException as exc:
                raise TopicError(f"cannot add partitions to {name}: {exc}") from exc
    log.info("topics ready", extra={"topics": result})
    return result
