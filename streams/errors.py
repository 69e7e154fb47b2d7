"""Errors of the streams package."""

from __future__ import annotations

from core.errors import InferlogError


class StreamsError(InferlogError):
    """Base error of the streams app. ``retriable`` says whether trying again can help."""


class StateError(StreamsError):
    """A join-state entry in the table could not be decoded (corrupt or written by an unknown version)."""


class OutputError(StreamsError):
    """An output record was not delivered: the worker must not write state or commit offsets after it."""

    retriable = True
