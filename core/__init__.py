"""The shared kernel every stage builds on: configuration, errors, retries, logging, metrics, Kafka clients,
the event model and keys, topic bootstrap, health endpoints, the S3 client.

It imports no stage, no tool and no schema: ``core`` < ``schemas`` < ``ingest``/``streams``/``sinks`` <
``inferlog`` (tools and the command line). ``tests/unit/test_layers.py`` keeps it so.
"""
