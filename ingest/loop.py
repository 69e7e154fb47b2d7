"""The event loop the ingest runs on: uvloop when it is installed (a cheaper loop and transports under aiohttp),
else asyncio's own. Both behave the same for the ingest; uvloop only costs less CPU per request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # optional: the ingest works on asyncio's own loop
    uvloop = None

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the preferred event loop (``None``: asyncio's default)."""
    return uvloop.new_event_loop if uvloop is not None else None


def name() -> str:
    return "uvloop" if uvloop is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the preferred event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
