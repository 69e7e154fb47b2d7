"""Shared fixtures. Integration tests use the project's local stack of real servers (started by the
test command, ``make test``; a test session started by hand starts it too) and isolate themselves with
unique topic, bucket and index names."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from core.config import CommonConfig, load


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that stop the shared Kafka run last, so that no other test meets a broker that is still recovering.
    items.sort(key=lambda item: item.get_closest_marker("restarts_kafka") is not None)
    # CI must never pass with the integration suite silently missing.
    required = os.environ.get("INFERLOG_REQUIRE_INTEGRATION") == "1"
    if required and not any(item.get_closest_marker("integration") for item in items):
        raise pytest.UsageError("INFERLOG_REQUIRE_INTEGRATION=1 but no integration test was collected")


@pytest.fixture(scope="session")
def stack() -> Iterator[CommonConfig]:
    """The running local stack (started if needed; left running for the main job and the next run)."""
    from inferlog_stack.manager import StackConfig, start

    cfg = load(StackConfig)
    start(cfg)
    yield cfg


@pytest.fixture
def unique() -> str:
    """A short unique suffix for per-test topics, buckets, indices and consumer groups."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever is still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
