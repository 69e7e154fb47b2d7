"""The root of inferlog's error hierarchy.

Every package (``ingest``, ``streams``, ``sinks``, ``inferlog_stack``) derives its own errors from
:class:`InferlogError`. ``retriable`` tells the shared retry helper (:mod:`core.retry`) whether trying
again can help: a broker that is briefly away is retriable, a malformed event or a bad setting is not.
"""

from __future__ import annotations

from typing import Any


class InferlogError(Exception):
    """Base error. ``retriable`` is a class default that an instance may override."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(InferlogError):
    """A setting is missing or invalid. Raised before anything connects."""


class TransientError(InferlogError):
    """A dependency is briefly unavailable (timeout, 5xx, 429, broker down): try again."""

    retriable = True


def is_retriable(exc: BaseException) -> bool:
    """True when ``exc`` is worth retrying: an :class:`InferlogError` says so, and so do plain
    connection and timeout errors of the standard library, and a confluent-kafka ``KafkaException`` for a
    transient broker answer (e.g. "not leader for partition" right after a topic was created)."""
    if isinstance(exc, InferlogError):
        return exc.retriable
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if type(exc).__name__ != "KafkaException" or not exc.args:
        return False
    return kafka_error_is_transient(exc.args[0])


def kafka_error_is_transient(err: Any) -> bool:
    """True for a confluent-kafka ``KafkaError`` after which trying again later can succeed: librdkafka flags it
    retriable, or it is one of :data:`TRANSIENT_KAFKA_ERRORS`."""
    check, name = getattr(err, "retriable", None), getattr(err, "name", None)
    return bool((callable(check) and check()) or (callable(name) and name() in TRANSIENT_KAFKA_ERRORS))


#: librdkafka does not flag every transient answer as retriable (e.g. a partition without a leader yet, a
#: record that timed out in the producer's queue): by ``KafkaError.name()``, so that this module needs no client.
TRANSIENT_KAFKA_ERRORS = frozenset(
    {
        "_MSG_TIMED_OUT",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "_TIMED_OUT",
        "_QUEUE_FULL",
        "_UNKNOWN_TOPIC",
        "_PURGE_QUEUE",
        "_PURGE_INFLIGHT",
        "REQUEST_TIMED_OUT",
        "NOT_ENOUGH_REPLICAS",
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "UNKNOWN_TOPIC_OR_PART",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_COORDINATOR",
        "COORDINATOR_LOAD_IN_PROGRESS",
    }
)
