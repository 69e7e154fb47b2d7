"""The ingest: a KServe-compatible CloudEvents receiver that acknowledges only what is durable.

``POST`` any path → parse (binary, structured, batch, legacy 0.2) → policy (auth, sampling, redaction) →
claim check of large bodies → Kafka ``inferlog.events`` (202 after the broker's delivery report) or, when
Kafka is away or slow, the fsynced local spool (202 after fsync), drained in order when Kafka returns.
"""
