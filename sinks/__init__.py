"""Sink connectors: ``inferlog.records`` / ``inferlog.failures`` → Parquet on S3, OpenSearch, Iceberg tables.

Every sink is a consumer-group worker built on :mod:`sinks.framework` (one batch per topic-partition, cuts by
record count / bytes / record time, commit after write, one retry layer, pause on backpressure, dead-letter on
permanent record errors) and registered in :mod:`sinks.registry`. :mod:`sinks.s3`, :mod:`sinks.opensearch` and
:mod:`sinks.iceberg` each declare their settings and turn a closed batch into a write; rows, documents and
tables take their columns from :mod:`schemas.columns` through :mod:`sinks.flatten`.
"""
