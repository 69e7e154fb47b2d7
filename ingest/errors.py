"""Errors of the ingest. Each maps to one HTTP status so that no input can produce a 5xx."""

from __future__ import annotations

from core.errors import InferlogError


class IngestError(InferlogError):
    """Base of the ingest's errors; ``status`` is the HTTP answer and ``reason`` the metric label."""

    status: int = 400
    reason: str = "invalid"

    def __init__(self, message: str, *, attribute: str | None = None, retriable: bool | None = None) -> None:
        super().__init__(message, retriable=retriable)
        self.attribute = attribute


class BadEvent(IngestError):
    """The request is not a valid CloudEvent; ``attribute`` names the missing or invalid attribute."""

    status = 400
    reason = "invalid"

    def __init__(self, attribute: str, message: str, *, index: int | None = None) -> None:
        super().__init__(message, attribute=attribute)
        self.index = index


class UnsupportedFormat(IngestError):
    """A structured-mode event format other than JSON (e.g. ``application/cloudevents+avro``)."""

    status = 415
    reason = "unsupported_media_type"


class Unauthorized(IngestError):
    """No bearer token, or an unknown one, while tokens are configured."""

    status = 401
    reason = "unauthorized"


class Forbidden(IngestError):
    """The token is valid but not for the namespace the event claims."""

    status = 403
    reason = "forbidden"


class SpoolFull(IngestError):
    """The local spool has no room: the only case the ingest answers 503 (with ``Retry-After``)."""

    status = 503
    reason = "spool_full"
    retriable = True


class ProduceFailed(IngestError):
    """Kafka did not acknowledge a record within the bound (or refused it); ``fatal`` when retrying cannot help."""

    status = 503
    reason = "kafka"
    retriable = True

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message, retriable=not fatal)
        self.fatal = fatal


class ClaimCheckFailed(IngestError):
    """Object storage did not take a large body."""

    status = 503
    reason = "object_storage"
    retriable = True
