"""Fixtures shared by the integration tests that run a whole pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import CommonConfig
from tests.support.pipeline import Pipeline, running_pipeline


@pytest.fixture
def pipeline(stack: CommonConfig, unique: str, tmp_path: Path) -> Iterator[Pipeline]:
    with running_pipeline(stack, unique, tmp_path) as p:
        yield p
