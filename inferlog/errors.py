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
    connection and timeout errors of the standard library."""
    if isinstance(exc, InferlogError):
        return exc.retriable
    return isinstance(exc, ConnectionError | TimeoutError)
