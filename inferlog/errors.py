"""The root of inferlog's error hierarchy.

Every package (``ingest``, ``streams``, ``sinks``, ``inferlog.stack``) derives its own errors from
:class:`InferlogError`. ``retriable`` tells the shared retry helper (:mod:`inferlog.retry`) whether trying
again can help: a broker that is briefly away is retriable, a malformed event or a bad setting is not.
"""

from __future__ import annotations


class InferlogError(Exception):
    """Base error. ``retriable`` is a class default that an instance may override."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(InferlogError):
    """A setting is missing or invalid. Raised before anything connects."""


class StackError(InferlogError):
    """The local stack of real servers could not be prepared, started or stopped."""


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
    err = exc.args[0]
    check, name = getattr(err, "retriable", None), getattr(err, "name", None)
    return bool((callable(check) and check()) or (callable(name) and name() in _TRANSIENT_KAFKA_ERRORS))


# librdkafka does not flag every transient broker answer as retriable (e.g. a partition without a leader yet).
_TRANSIENT_KAFKA_ERRORS = frozenset(
    {
        "NOT_LEADER_FOR_PARTITION",
        "LEADER_NOT_AVAILABLE",
        "UNKNOWN_TOPIC_OR_PART",
        "REQUEST_TIMED_OUT",
        "COORDINATOR_NOT_AVAILABLE",
        "NOT_COORDINATOR",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "_TRANSPORT",
        "_TIMED_OUT",
        "_ALL_BROKERS_DOWN",
    }
)
