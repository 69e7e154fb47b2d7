"""Errors of the sinks package. ``retriable`` tells the framework whether to pause and try again later
(a store briefly away, 429, 5xx) or to stop (a setting is wrong) — see :mod:`sinks.framework`."""

from __future__ import annotations

from core.errors import InferlogError

__all__ = ["RecordError", "SinkError", "WriteError"]


class SinkError(InferlogError):
    """Base error of the sinks package."""


class WriteError(SinkError):
    """A batch could not be written. Retriable ones pause the partition; permanent ones stop the sink,
    because they are not the fault of one record (missing bucket, access denied, malformed request)."""


class RecordError(SinkError):
    """One record can never be written (undecodable, rejected by the mapping): it goes to the dead-letter
    topic with this message as ``error.reason`` and the rest of the batch passes."""

    def __init__(self, message: str, *, kind: str = "record") -> None:
        super().__init__(message, retriable=False)
        self.kind = kind
