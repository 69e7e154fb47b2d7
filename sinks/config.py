"""Settings every sink shares: the consumer group, the topics, how batches are cut, writes in flight, retries.

Each sink adds its own settings in a subclass declared in its module (``S3SinkConfig`` in :mod:`sinks.s3`, ...),
registered with the sink in :mod:`sinks.registry`."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, ConfigError, env_name, setting

__all__ = ["SinkConfig"]


@dataclass(frozen=True)
class SinkConfig(CommonConfig):
    """Settings shared by every sink. Cuts depend on records only (count, bytes, record time), never on the
    wall clock."""

    sink_group: str = setting("", "Consumer group id (empty: inferlog-sink-<sink name>)")
    sink_instance_id: str = setting(
        "", "Static group membership id (e.g. the pod name): a restarted worker takes its partitions back at once"
    )
    sink_topics: str = setting("", "Topics to consume, comma separated (empty: the records and failures topics)")
    flush_records: int = setting(10000, "Cut a batch (an object, a commit) after this many records per partition")
    flush_bytes: int = setting(64 * 1024 * 1024, "Cut a batch once its records' Kafka value bytes reach this")
    flush_span_s: float = setting(
        600.0, "Cut a batch once record time (event time, advanced by ticks) spans this many seconds"
    )
    sink_max_in_flight: int = setting(
        2, "Batches written by background threads at once while the next are consumed (0: write in the consume loop)"
    )
    sink_retry_max_s: float = setting(30.0, "Longest pause between retries of a failed write (backoff cap)")
    sink_metrics_port: int = setting(0, "Serve Prometheus /metrics on this port (0: off)")
    opensearch_aws_region: str = setting(
        "", "Sign OpenSearch requests with AWS SigV4 for this region (Amazon OpenSearch Service; empty: basic auth)"
    )
    opensearch_aws_service: str = setting(
        "es", "SigV4 service name: es (OpenSearch Service domains) or aoss (Serverless)", choices=("es", "aoss")
    )

    def validate(self) -> None:
        super().validate()
        for name in ("flush_records", "flush_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be >= 1")
        if self.flush_span_s <= 0:
            raise ConfigError(f"{env_name('flush_span_s')} must be > 0")
        if not 0 <= self.sink_max_in_flight <= 64:
            raise ConfigError(f"{env_name('sink_max_in_flight')} must be between 0 and 64")
        if self.sink_retry_max_s <= 0:
            raise ConfigError(f"{env_name('sink_retry_max_s')} must be > 0")

    def topics(self) -> list[str]:
        """The topics this sink consumes."""
        if self.sink_topics.strip():
            return [t.strip() for t in self.sink_topics.split(",") if t.strip()]
        return [self.topic_records, self.topic_failures]

    def schema_for(self, topic: str) -> str:
        """``failure_signal`` for the failures topic, ``inference_record`` for any other."""
        return "failure_signal" if topic == self.topic_failures else "inference_record"

    def group_for(self, kind: str) -> str:
        return self.sink_group or f"inferlog-sink-{kind}"
