"""Avro schemas of inferlog's output topics and their Confluent-wire-format serde.

- ``InferenceRecord`` (``inference_record.avsc``) on ``inferlog.records``
- ``FailureSignal`` (``failure_signal.avsc``) on ``inferlog.failures``

Records are written with fastavro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro
body) so that any Kafka consumer with a registry client can read them. Subjects follow the TopicNameStrategy
(``<topic>-value``) with compatibility BACKWARD. The ``.avsc`` files are the one source of the record shape:
:mod:`schemas.columns` derives the flat columns every store uses from them.
"""

from schemas.serde import AvroSerde, load_schema

__all__ = ["AvroSerde", "load_schema"]
