"""Sink connectors: ``inferlog.records`` / ``inferlog.failures`` → Parquet on S3 and OpenSearch.

Both are consumer-group workers built on :mod:`sinks.framework` (one batch per topic-partition, cuts by
record count / bytes / record time, commit after write, pause on backpressure, dead-letter on permanent
record errors). :mod:`sinks.s3` and :mod:`sinks.opensearch` only turn a closed batch into a write.
"""
