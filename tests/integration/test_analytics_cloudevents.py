"""iter_cloudevents: the raw events topic read back as CloudEvents SDK objects (cloudevents.v1.kafka)."""

from __future__ import annotations

import dataclasses

import pytest
from confluent_kafka import Producer

from core.config import CommonConfig
from core.events import LoggedEvent, to_kafka
from core.kafka import producer_config
from core.topics import TopicSpec, ensure_topics
from inferlog.analytics import iter_cloudevents

pytestmark = pytest.mark.integration


def test_events_come_back_as_sdk_cloudevents(stack: CommonConfig, unique: str) -> None:
    cfg = dataclasses.replace(stack, topic_events=f"t.events.{unique}")
    ensure_topics(cfg, [TopicSpec(cfg.topic_events, 2)])
    sent = [
        LoggedEvent(
            id=f"id-{i}",
            source="http://iris-predictor/",
            type="org.kubeflow.serving.inference.request",
            time="2024-05-01T08:00:00Z",
            datacontenttype="application/json",
            namespace="default",
            isvc="iris",
            component="predictor",
            data=b'{"instances": [[%d]]}' % i,
        )
        for i in range(3)
    ]
    producer = Producer(producer_config(cfg))
    for ev in sent:
        key, headers, value = to_kafka(ev)
        producer.produce(cfg.topic_events, value=value, key=key, headers=list(headers))
    assert producer.flush(30) == 0
    got = sorted(iter_cloudevents(cfg, idle_exit_s=3), key=lambda e: e["id"])
    assert [e["id"] for e in got] == ["id-0", "id-1", "id-2"]
    first = got[0]
    assert first["namespace"] == "default" and first["inferenceservicename"] == "iris"
    assert first["datacontenttype"] == "application/json" and first["time"] == "2024-05-01T08:00:00Z"
    assert first.data == b'{"instances": [[0]]}'
    assert first["partitionkey"] == sent[0].join_key
