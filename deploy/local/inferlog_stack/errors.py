"""Errors of the local development stack."""

from __future__ import annotations

from core.errors import InferlogError

__all__ = ["StackError"]


class StackError(InferlogError):
    """The local stack of real servers could not be prepared, started or stopped."""
