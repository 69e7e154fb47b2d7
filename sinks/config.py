"""Settings of the sink connectors (``inferlog sink s3`` and ``inferlog sink opensearch``)."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CommonConfig, ConfigError, env_name, setting

__all__ = ["SinkConfig"]


@dataclass(frozen=True)
class SinkConfig(CommonConfig):
    """Settings shared by both sinks; ``s3_*`` apply to the object-storage sink, ``index_*``/``bulk_*``
    to the search sink. Cuts depend on records only (count, bytes, record time), never on the wall clock."""

    sink_group: str = setting("", "Consumer group id (empty: inferlog-sink-s3 / inferlog-sink-opensearch)")
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
    s3_prefix: str = setting("archive", "Key prefix of archived objects; each topic is a table under it")
    s3_format: str = setting("parquet", "Object format", choices=("parquet", "avro", "jsonl"))
    s3_parquet_compression: str = setting("zstd", "Parquet compression", choices=("zstd", "snappy", "gzip", "none"))
    s3_multipart_bytes: int = setting(16 * 1024 * 1024, "Objects larger than this are uploaded in parts this size")
    index_prefix: str = setting("inferlog", "Index prefix: <prefix>-records-<namespace>-<yyyy.mm.dd>, -failures-")
    index_linger_s: float = setting(
        1.0, "OpenSearch sink: write a batch once it is this many wall-clock seconds old (searchable sooner)"
    )
    bulk_bytes: int = setting(5 * 1024 * 1024, "Largest _bulk request body in bytes")
    index_replicas: int = setting(1, "number_of_replicas in the index template")
    index_shards: int = setting(1, "number_of_shards in the index template")
    index_body_max_bytes: int = setting(
        32 * 1024, "Bodies longer than this are truncated in the search document (the archive keeps them whole)"
    )
    opensearch_aws_region: str = setting(
        "", "Sign OpenSearch requests with AWS SigV4 for this region (Amazon OpenSearch Service; empty: basic auth)"
    )
    opensearch_aws_service: str = setting(
        "es", "SigV4 service name: es (OpenSearch Service domains) or aoss (Serverless)", choices=("es", "aoss")
    )

    def validate(self) -> None:
        super().validate()
        for name in ("flush_records", "flush_bytes", "s3_multipart_bytes", "bulk_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be >= 1")
        if self.flush_span_s <= 0:
            raise ConfigError(f"{env_name('flush_span_s')} must be > 0")
        if self.index_linger_s <= 0:
            raise ConfigError(f"{env_name('index_linger_s')} must be > 0")
        if self.s3_multipart_bytes < 5 * 1024 * 1024:
            raise ConfigError(f"{env_name('s3_multipart_bytes')} must be >= 5 MiB (the S3 minimum part size)")
        if not 0 <= self.sink_max_in_flight <= 64:
            raise ConfigError(f"{env_name('sink_max_in_flight')} must be between 0 and 64")
        if self.sink_retry_max_s <= 0:
            raise ConfigError(f"{env_name('sink_retry_max_s')} must be > 0")
        prefix = self.index_prefix
        if not prefix or prefix != prefix.lower() or any(c in prefix for c in ' "*\\<|,>/?#:'):
            raise ConfigError(f'{env_name("index_prefix")}={prefix!r}: lowercase, no spaces or \\/*?"<>|,#:')
        if self.index_replicas < 0 or self.index_shards < 1:
            raise ConfigError(f"{env_name('index_replicas')} >= 0 and {env_name('index_shards')} >= 1 required")

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
