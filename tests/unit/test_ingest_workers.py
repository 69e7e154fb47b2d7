"""The layout of ``inferlog ingest --workers N``: each worker's spool directory and budget, and which spools
of another layout it refuses to leave behind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.errors import ConfigError
from ingest.config import IngestConfig
from ingest.spool import Record, SpoolLog
from ingest.workers import orphaned_spools, refuse_orphaned_spools, spool_dir, worker_config


def config(tmp_path: Path, workers: int) -> IngestConfig:
    return dataclasses.replace(IngestConfig(), spool_dir=str(tmp_path), workers=workers, spool_max_bytes=1000)


def spool_with(directory: Path, records: int) -> None:
    log = SpoolLog(directory, max_bytes=1 << 20, segment_bytes=1 << 20)
    log.append([Record(b"k", (("ce_id", b"1"),), b"v").frame() for _ in range(records)])
    log.close()


def test_each_worker_has_its_own_directory_and_a_share_of_the_budget(tmp_path: Path) -> None:
    cfg = config(tmp_path, 4)
    dirs = {spool_dir(cfg, i) for i in range(4)}
    assert dirs == {tmp_path / f"worker-{i}" for i in range(4)}
    assert worker_config(cfg, 2).spool_dir == str(tmp_path / "worker-2")
    assert worker_config(cfg, 2).spool_max_bytes == 250
    assert spool_dir(config(tmp_path, 1), 0) == tmp_path  # one process: the directory as before


def test_spools_no_worker_of_the_layout_drains_are_refused_by_name(tmp_path: Path) -> None:
    spool_with(tmp_path / "worker-3", 2)
    spool_with(tmp_path / "worker-1", 1)
    assert orphaned_spools(config(tmp_path, 2)) == [tmp_path / "worker-3"]
    assert orphaned_spools(config(tmp_path, 4)) == []
    with pytest.raises(ConfigError, match=r"worker-1.*worker-3"):
        refuse_orphaned_spools(config(tmp_path, 1))


def test_a_drained_or_empty_spool_is_no_obstacle(tmp_path: Path) -> None:
    SpoolLog(tmp_path, max_bytes=1 << 20, segment_bytes=1 << 20).close()  # an empty segment of --workers 1
    (tmp_path / "worker-5").mkdir()
    assert orphaned_spools(config(tmp_path, 2)) == []
    spool_with(tmp_path, 1)
    assert orphaned_spools(config(tmp_path, 2)) == [tmp_path]


def test_workers_must_be_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WORKERS"):
        config(tmp_path, 0).validate()
