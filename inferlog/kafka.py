"""Kafka client settings shared by every producer and consumer of inferlog.

Every producer is idempotent with ``acks=all`` and uses librdkafka's ``murmur2_random`` partitioner, the
Java-compatible one, so that confluent-kafka, aiokafka/Faust and Java clients agree on where a key lives
(see :func:`inferlog.keys.partition_for`).
"""

from __future__ import annotations

from typing import Any

from inferlog.config import CommonConfig


def base_config(cfg: CommonConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"bootstrap.servers": cfg.kafka_bootstrap}
    out.update(cfg.kafka_extra())
    return out


def producer_config(cfg: CommonConfig, **overrides: Any) -> dict[str, Any]:
    """Producer settings: inferlog's defaults, then the user's ``kafka_options`` (e.g. ``compression.type=none``),
    then the caller's ``overrides``."""
    out: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka_bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 5,
    }
    out.update(cfg.kafka_extra())
    out.update(overrides)
    return out


def consumer_config(cfg: CommonConfig, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Consumer settings: inferlog's defaults, then the user's ``kafka_options``, then the caller's ``overrides``."""
    out: dict[str, Any] = {
        "bootstrap.servers": cfg.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
    }
    out.update(cfg.kafka_extra())
    out.update(overrides)
    return out
