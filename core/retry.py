"""The one retry helper: exponential backoff with full jitter, bounded by attempts and a deadline.

Blocking callers retry through :func:`retry_sync`; what is worth retrying is decided by
:func:`core.errors.is_retriable` unless the caller passes its own predicate. (The ingest's spool drain, the
one asyncio retry, keeps its own loop: it retries without end and also wakes on new spool data.)
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from core.errors import is_retriable

T = TypeVar("T")
log = logging.getLogger("core.retry")


@dataclass(frozen=True)
class Backoff:
    """Delays grow as ``base * 2**attempt`` capped at ``cap``, with full jitter.

    ``attempts`` bounds the number of calls (``0`` = unbounded, then ``deadline_s`` must be set);
    ``deadline_s`` bounds the total time spent (``0`` = no deadline).
    """

    base_s: float = 0.1
    cap_s: float = 5.0
    attempts: int = 6
    deadline_s: float = 0.0
    jitter: bool = True

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**attempt))
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0, ceiling)

    def __post_init__(self) -> None:
        if self.attempts <= 0 and self.deadline_s <= 0:
            raise ValueError("Backoff needs attempts > 0 or deadline_s > 0 so that retries end")


def retry_sync(
    fn: Callable[[], T],
    policy: Backoff = Backoff(),
    *,
    retriable: Callable[[BaseException], bool] = is_retriable,
    what: str = "operation",
) -> T:
    """Call ``fn()`` until it succeeds, a non-retriable error is raised, or the policy gives up
    (then the last error is raised)."""
    started = time.monotonic()
    for attempt in itertools.count():
        try:
            return fn()
        except Exception as exc:
            if not retriable(exc):
                raise
            delay = policy.delay(attempt)
            out_of_attempts = policy.attempts > 0 and attempt + 1 >= policy.attempts
            out_of_time = policy.deadline_s > 0 and time.monotonic() - started + delay > policy.deadline_s
            if out_of_attempts or out_of_time:
                raise
            log.warning(
                "retrying", extra={"what": what, "attempt": attempt + 1, "delay_s": round(delay, 3), "error": str(exc)}
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def wait_until(
    predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is true or raise :class:`TimeoutError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except Exception:  # a readiness probe that raises just means "not yet"
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)
