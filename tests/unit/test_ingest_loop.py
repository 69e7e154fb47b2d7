"""The ingest's event loop: uvloop when installed, asyncio's own otherwise (same behaviour)."""

from __future__ import annotations

import asyncio

import pytest

from ingest import loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert loop.name() == "uvloop"
    assert loop.run(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "uvloop", None)
    assert loop.name() == "asyncio"
    assert loop.run(_loop_module()).startswith("asyncio")
