"""The spool keeps what it acknowledged across restarts, cuts torn tails, drains in order, refuses when full."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.errors import SpoolFull
from ingest.spool import Record, Spool, SpoolLog


def rec(i: int, size: int = 10) -> Record:
    return Record(f"k{i}".encode(), (("ce_id", f"id-{i}".encode()), ("content-type", b"a/b")), bytes([i % 256]) * size)


def test_append_read_commit_and_reopen(tmp_path: Path) -> None:
    log = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    log.append([rec(i).frame() for i in range(5)])
    got = log.read(3)
    assert [r for _, r in got] == [rec(0), rec(1), rec(2)]
    log.commit(got[-1][0], 3)
    log.close()

    again = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    assert again.records == 2
    assert [r for _, r in again.read(10)] == [rec(3), rec(4)]


def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path) -> None:
    log = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    log.append([rec(i).frame() for i in range(3)])
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as fh:  # a crash in the middle of a write that was never acknowledged
        fh.write(rec(99).frame()[:-4])
    again = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    assert again.records == 3
    again.append([rec(3).frame()])
    assert [r for _, r in again.read(10)] == [rec(0), rec(1), rec(2), rec(3)]


def test_segments_roll_and_are_deleted_when_drained(tmp_path: Path) -> None:
    log = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for i in range(20):
        log.append([rec(i, 50).frame()])
    assert len(list(tmp_path.glob("*.seg"))) > 5
    order = []
    while log.records:
        batch = log.read(7)
        order += [r.key for _, r in batch]
        log.commit(batch[-1][0], len(batch))
    assert order == [f"k{i}".encode() for i in range(20)]
    assert log.size_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the fresh, empty active segment
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) == 0


def test_full_spool_refuses_and_writes_nothing(tmp_path: Path) -> None:
    frame = rec(0, 100).frame()
    log = SpoolLog(tmp_path, max_bytes=len(frame) * 2, segment_bytes=1 << 20)
    log.append([frame, frame])
    with pytest.raises(SpoolFull):
        log.append([frame])
    assert log.records == 2 and log.size_bytes == len(frame) * 2


async def test_async_group_commit_keeps_arrival_order(tmp_path: Path) -> None:
    import asyncio

    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    await asyncio.gather(*(spool.append([rec(i)]) for i in range(50)))
    assert spool.depth == 50 and spool.has_data.is_set()
    got = await spool.read(100)
    assert [r for _, r in got] == [rec(i) for i in range(50)]
    await spool.commit(got[-1][0], 50)
    assert spool.depth == 0 and not spool.has_data.is_set()
    await spool.close()


def test_records_survive_without_close(tmp_path: Path) -> None:
    """What append returned for is on disk even if the process dies before closing (fsync, no buffering)."""
    log = SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20)
    log.append([rec(1).frame()])
    fd_size = os.path.getsize(next(tmp_path.glob("*.seg")))
    assert fd_size == len(rec(1).frame())
    assert SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20).records == 1
