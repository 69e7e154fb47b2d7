"""inferlog: a durable pipeline for KServe inference payload logs.

The shared module: configuration, errors, retries, logging, metrics, Kafka helpers, topic bootstrap,
the local stack of real servers and the ``inferlog`` command line. The pipeline stages live in the
top-level packages ``ingest``, ``streams`` and ``sinks``; the Avro schemas in ``schemas``.
"""

__version__ = "0.1.0"
