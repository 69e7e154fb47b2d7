"""The lag helper the end-to-end checks wait on, against the real Kafka: a group that has not consumed is
reported as lagging, by name and per partition; one that committed everything is caught up."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from core.config import CommonConfig
from core.topics import TopicSpec, ensure_topics
from tests.support.kafka_wait import GroupLagTimeout, group_lag, high_watermarks, wait_for_group_caught_up

pytestmark = pytest.mark.integration


def _topic_with(stack: CommonConfig, topic: str, per_partition: dict[int, int]) -> None:
    ensure_topics(stack, [TopicSpec(topic, 2)])
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for partition, n in per_partition.items():
        for i in range(n):
            producer.produce(topic, value=b"v%d" % i, partition=partition)
    assert producer.flush(30) == 0


def test_a_group_that_has_not_consumed_times_out_naming_the_group_and_the_lag(stack: CommonConfig, unique: str) -> None:
    topic = f"t.lag.{unique}"
    _topic_with(stack, topic, {0: 3, 1: 2})
    group = f"never-consumed-{unique}"
    with pytest.raises(GroupLagTimeout) as err:
        wait_for_group_caught_up(stack.kafka_bootstrap, group, [topic], timeout_s=1.0)
    msg = str(err.value)
    assert repr(group) in msg and "lag 5 on 2 partition(s)" in msg
    assert f"{topic}[0] committed=none high=3 lag=3" in msg and f"{topic}[1] committed=none high=2 lag=2" in msg


def test_a_group_is_caught_up_only_when_it_committed_every_partition(stack: CommonConfig, unique: str) -> None:
    topic = f"t.lag.{unique}"
    _topic_with(stack, topic, {0: 3, 1: 2})
    group = f"partial-{unique}"
    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        targets = high_watermarks(stack.kafka_bootstrap, [topic])
        assert [str(p) for p in group_lag(stack.kafka_bootstrap, group, targets) if p.lag] == [
            f"{topic}[1] committed=none high=2 lag=2"
        ]
        with pytest.raises(GroupLagTimeout, match=rf"lag 2 on 1 partition\(s\): {topic}\[1\]"):
            wait_for_group_caught_up(stack.kafka_bootstrap, group, [topic], timeout_s=0.5)
        consumer.commit(offsets=[TopicPartition(topic, 1, 1)], asynchronous=False)
        with pytest.raises(GroupLagTimeout, match=rf"{topic}\[1\] committed=1 high=2 lag=1"):
            wait_for_group_caught_up(stack.kafka_bootstrap, group, [topic], timeout_s=0.5)
        consumer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
        assert wait_for_group_caught_up(stack.kafka_bootstrap, group, [topic], timeout_s=10) < 10
    finally:
        consumer.close()
